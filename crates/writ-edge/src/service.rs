//! The edge service: connects the local store, Kafka and the schema codec,
//! then supervises the HTTP API, the outbox relay, the status consumer and
//! the conflict resolver. One failing task stops the service with an error;
//! `shutdown` stops all of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;
use writ_codec::{CodecError, PayloadCodec, RegistrySettings, SchemaCatalog};
use writ_core::{TopicLayout, TopicNameError};
use writ_http::{ApiKeys, AuthError};
use writ_kafka::{BatchConsumer, KafkaClientError, RecordProducer};

use crate::api::{router, ApiState};
use crate::config::{CollectionConfig, EdgeConfig};
use crate::relay::Relay;
use crate::resolver::{MasterHandle, Resolver};
use crate::status::StatusConsumer;
use crate::store::{LocalStore, StoreError};

/// Why the edge could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The domain cannot form topic names.
    #[error(transparent)]
    Topic(#[from] TopicNameError),
    /// The schemas could not be loaded, or a collection's command type is unknown.
    #[error("schemas: {0}")]
    Codec(#[from] CodecError),
    /// A collection names a command type without a schema.
    #[error("collection {collection:?}: no schema for command type {command_type:?}")]
    UnknownType {
        /// The collection.
        collection: String,
        /// Its command type.
        command_type: String,
    },
    /// The auth configuration is invalid.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The local store failed.
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    /// A Kafka client failed.
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    /// The HTTP listener failed.
    #[error("http listener on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A task panicked or stopped when it should not have.
    #[error("{0}")]
    Task(String),
}

/// Loads the schemas and checks that every collection's command type has
/// one (`--check` runs this too, so a typo fails before deployment).
pub fn catalog(config: &EdgeConfig) -> Result<SchemaCatalog, EdgeError> {
    let catalog = match &config.schemas_dir {
        Some(dir) => SchemaCatalog::load_dir(dir)?,
        None => SchemaCatalog::builtin(),
    };
    for (name, c) in &config.collections {
        if catalog.get(&c.command_type).is_none() {
            return Err(EdgeError::UnknownType {
                collection: name.clone(),
                command_type: c.command_type.clone(),
            });
        }
    }
    Ok(catalog)
}

/// A connected edge, ready to run.
pub struct Edge {
    config: EdgeConfig,
    store: LocalStore,
    codec: Arc<PayloadCodec>,
    producer: RecordProducer,
    consumer: BatchConsumer,
    listener: tokio::net::TcpListener,
    master: Arc<MasterHandle>,
    keys: Arc<ApiKeys>,
}

impl Edge {
    /// Connects the local store (creating its schema), the Kafka clients and
    /// the listener. The broker and the master need not be reachable: writes
    /// are accepted locally and published when Kafka comes back.
    pub async fn connect(config: EdgeConfig) -> Result<Self, EdgeError> {
        TopicLayout::new(&config.domain)?;
        let catalog = catalog(&config)?;
        let codec = PayloadCodec::new(
            catalog,
            config.registry_url.as_deref().map(RegistrySettings::new),
        )?;
        let keys = Arc::new(ApiKeys::from_config(&config.auth)?);
        let store = LocalStore::connect(&config.store).await?;
        let producer = RecordProducer::new(&config.kafka)?;
        let layout = TopicLayout::new(&config.domain)?;
        let consumer = BatchConsumer::new(
            &config.kafka,
            &config.status_group_id(),
            &[&layout.status()],
        )?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| EdgeError::Listen {
                addr: config.listen,
                source,
            })?;
        let master = Arc::new(MasterHandle::new(config.master.clone()));
        info!(domain = %config.domain, listen = %config.listen,
              collections = config.collections.len(), "edge connected");
        Ok(Self {
            config,
            store,
            codec: Arc::new(codec),
            producer,
            consumer,
            listener,
            master,
            keys,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The local store (for tests and embedding).
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// Runs until `shutdown` or until a task fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EdgeError> {
        let Self {
            config,
            store,
            codec,
            producer,
            consumer,
            listener,
            master,
            keys,
        } = self;
        let collections: Arc<BTreeMap<String, CollectionConfig>> =
            Arc::new(config.collections.clone());
        let relay_wake = Arc::new(Notify::new());
        let conflict_wake = Arc::new(Notify::new());
        let layout = TopicLayout::new(&config.domain)?;
        let tasks = shutdown.child_token();
        let mut set = tokio::task::JoinSet::new();

        let resolver = Arc::new(Resolver::new(
            store.clone(),
            master.clone(),
            collections.clone(),
            conflict_wake.clone(),
        ));
        let app = router(
            ApiState {
                store: store.clone(),
                codec: codec.clone(),
                collections: collections.clone(),
                relay_wake: relay_wake.clone(),
                resolver,
            },
            keys,
            crate::metrics::install_recorder(),
            config.max_body_bytes,
        );
        {
            let stop = tasks.clone();
            set.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                    .map_err(|e| EdgeError::Task(format!("http server: {e}")))
            });
        }
        {
            let relay = Relay::new(
                store.clone(),
                producer,
                codec.clone(),
                layout,
                collections.clone(),
                config.relay.clone(),
                config.command_format,
                relay_wake,
                Duration::from_millis(config.store.outbox_retention_ms),
            )
            .with_rebuild(config.kafka.clone());
            let stop = tasks.clone();
            set.spawn(async move {
                relay.run(stop).await;
                Ok(())
            });
        }
        {
            let status = StatusConsumer::new(
                consumer,
                codec,
                store.clone(),
                collections.clone(),
                conflict_wake.clone(),
            );
            let stop = tasks.clone();
            set.spawn(async move { status.run(stop).await.map_err(EdgeError::from) });
        }
        {
            let resolver = Resolver::new(store, master, collections, conflict_wake);
            let stop = tasks.clone();
            let retry = Duration::from_millis(config.relay.conflict_retry_ms);
            set.spawn(async move {
                resolver.run(retry, stop).await;
                Ok(())
            });
        }
        info!("edge running");
        let mut result = Ok(());
        tokio::select! {
            _ = shutdown.cancelled() => {}
            first = set.join_next() => {
                result = match first {
                    Some(Ok(Ok(()))) if shutdown.is_cancelled() => Ok(()),
                    Some(Ok(Ok(()))) => Err(EdgeError::Task("an edge task stopped unexpectedly".into())),
                    Some(Ok(Err(e))) => Err(e),
                    Some(Err(e)) => Err(EdgeError::Task(format!("an edge task panicked: {e}"))),
                    None => Ok(()),
                };
            }
        }
        tasks.cancel();
        while let Some(done) = set.join_next().await {
            if let (Ok(()), Ok(Err(e))) = (&result, done) {
                result = Err(e);
            }
        }
        info!("edge stopped");
        result
    }
}
