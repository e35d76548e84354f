//! Creates and describes a domain's topic layout. Creation is idempotent:
//! an existing topic is reported, not treated as an error, so
//! `writ topics init` can run on every deploy.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use writ_core::topics::TopicSpec;

use crate::error::KafkaClientError;
use crate::settings::KafkaSettings;

/// Configs the topic layout sets; always shown, whatever their source.
const MANAGED_CONFIGS: &[&str] = &["cleanup.policy", "retention.ms", "min.insync.replicas"];

/// What `ensure_topics` did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// The topic was created.
    Created(String),
    /// The topic already existed; nothing was changed.
    AlreadyExists(String),
}

impl TopicOutcome {
    /// The topic name.
    pub fn name(&self) -> &str {
        match self {
            Self::Created(n) | Self::AlreadyExists(n) => n,
        }
    }
}

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition id.
    pub id: i32,
    /// Leader broker id.
    pub leader: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
}

/// A topic as the cluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Whether the topic exists.
    pub exists: bool,
    /// Its partitions.
    pub partitions: Vec<PartitionDescription>,
    /// Overridden configs and those writ manages, when the broker can describe them.
    pub configs: Option<Vec<(String, String)>>,
}

/// An admin client bound to one cluster.
pub struct TopicAdmin {
    admin: AdminClient<DefaultClientContext>,
    timeout: Duration,
}

impl TopicAdmin {
    /// Connects an admin client.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaClientError> {
        let admin = settings
            .admin_config()?
            .create()
            .map_err(|e| KafkaClientError::kafka("create admin client", e))?;
        Ok(Self {
            admin,
            timeout: Duration::from_secs(30),
        })
    }

    /// Sets the timeout of each admin call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates the topics that do not exist yet.
    pub async fn ensure_topics(
        &self,
        specs: &[TopicSpec],
    ) -> Result<Vec<TopicOutcome>, KafkaClientError> {
        let new_topics: Vec<NewTopic<'_>> = specs
            .iter()
            .map(|s| {
                let mut t = NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication_factor),
                );
                for (k, v) in &s.configs {
                    t = t.set(k, v);
                }
                t
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = self
            .admin
            .create_topics(new_topics.iter(), &opts)
            .await
            .map_err(|e| KafkaClientError::kafka("create topics", e))?;
        results
            .into_iter()
            .map(|r| match r {
                Ok(name) => Ok(TopicOutcome::Created(name)),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    Ok(TopicOutcome::AlreadyExists(name))
                }
                Err((name, code)) => Err(KafkaClientError::Item {
                    operation: "create topic",
                    item: name,
                    code,
                }),
            })
            .collect()
    }

    /// Describes topics: partitions from metadata, configs from DescribeConfigs.
    pub async fn describe(
        &self,
        names: &[String],
    ) -> Result<Vec<TopicDescription>, KafkaClientError> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let metadata = self
                .admin
                .inner()
                .fetch_metadata(Some(name), self.timeout)
                .map_err(|e| KafkaClientError::kafka("fetch metadata", e))?;
            let topic = metadata.topics().iter().find(|t| t.name() == name);
            let exists = topic.is_some_and(|t| t.error().is_none() && !t.partitions().is_empty());
            let partitions = topic
                .filter(|_| exists)
                .map(|t| {
                    let mut parts: Vec<PartitionDescription> = t
                        .partitions()
                        .iter()
                        .map(|p| PartitionDescription {
                            id: p.id(),
                            leader: p.leader(),
                            replicas: p.replicas().to_vec(),
                            isr: p.isr().to_vec(),
                        })
                        .collect();
                    parts.sort_by_key(|p| p.id);
                    parts
                })
                .unwrap_or_default();
            let configs = if exists {
                self.describe_configs(name).await
            } else {
                None
            };
            out.push(TopicDescription {
                name: name.clone(),
                exists,
                partitions,
                configs,
            });
        }
        Ok(out)
    }

    /// Overridden topic configs plus the ones writ's layout manages, or None where the broker does not support DescribeConfigs.
    async fn describe_configs(&self, name: &str) -> Option<Vec<(String, String)>> {
        let opts = AdminOptions::new().request_timeout(Some(self.timeout));
        let spec = ResourceSpecifier::Topic(name);
        let results = self.admin.describe_configs([&spec], &opts).await.ok()?;
        let resource = results.into_iter().next()?.ok()?;
        let mut configs: Vec<(String, String)> = resource
            .entries
            .into_iter()
            .filter(|e| {
                !e.is_sensitive && (!e.is_default || MANAGED_CONFIGS.contains(&e.name.as_str()))
            })
            .filter_map(|e| e.value.map(|v| (e.name, v)))
            .collect();
        configs.sort();
        Some(configs)
    }
}
