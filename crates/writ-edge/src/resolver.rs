//! Conflict resolution: the one place that turns a decision (`master-wins`,
//! `local-wins`, or a person's `take`) into reads of the master and changes
//! of the local store. Automatic policies are applied by a background loop
//! that retries while the master is unreachable; `manual` conflicts wait for
//! `POST /v1/conflicts/{id}/resolve`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use writ_core::{Classified, ErrorDomain, Retryability};
use writ_store::{Master, MasterConfig, MasterError};

use crate::config::CollectionConfig;
use crate::metrics;
use crate::store::{Conflict, LocalStore, Resolved, StoreError};
use crate::sync::{resolution_action, ConflictAction, ConflictPolicy, Take};

/// The master, connected on first use: the edge must start and serve while
/// the master is down, and only conflicts and reconcile need it.
pub struct MasterHandle {
    config: Option<MasterConfig>,
    master: OnceCell<Arc<dyn Master>>,
}

impl MasterHandle {
    /// A handle for `config` (`None`: no master configured).
    pub fn new(config: Option<MasterConfig>) -> Self {
        Self {
            config,
            master: OnceCell::new(),
        }
    }

    /// A handle over an already connected master.
    pub fn connected(master: Arc<dyn Master>) -> Self {
        Self {
            config: None,
            master: OnceCell::new_with(Some(master)),
        }
    }

    /// The master, connecting it on first use.
    pub async fn get(&self) -> Result<Arc<dyn Master>, ResolveError> {
        if let Some(m) = self.master.get() {
            return Ok(m.clone());
        }
        let Some(config) = &self.config else {
            return Err(ResolveError::NoMaster);
        };
        self.master
            .get_or_try_init(|| writ_store::connect(config))
            .await
            .cloned()
            .map_err(ResolveError::Master)
    }
}

/// Why a conflict could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Taking the master's side needs a `[master]` section.
    #[error("resolving for the master reads the master, and no [master] is configured")]
    NoMaster,
    /// The master could not be read.
    #[error("reading the master failed: {0}")]
    Master(#[source] MasterError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The conflict's collection is no longer configured.
    #[error("collection {0:?} is not configured")]
    UnknownCollection(String),
    /// Taking the local side needs the master's current version, and the master has none.
    #[error(
        "the master reports no version for {key:?}; the local write cannot be resent against it"
    )]
    NoMasterVersion {
        /// The entity key.
        key: String,
    },
}

impl Classified for ResolveError {
    fn domain(&self) -> ErrorDomain {
        match self {
            Self::Master(_) | Self::NoMasterVersion { .. } => ErrorDomain::Master,
            Self::Store(e) => e.domain(),
            Self::NoMaster | Self::UnknownCollection(_) => ErrorDomain::Internal,
        }
    }
    fn retryability(&self) -> Retryability {
        match self {
            Self::Master(e) => e.retryability(),
            Self::Store(e) => e.retryability(),
            _ => Retryability::Permanent,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            Self::NoMaster => "NO_MASTER",
            Self::Master(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::UnknownCollection(_) => "UNKNOWN_COLLECTION",
            Self::NoMasterVersion { .. } => "NO_MASTER_VERSION",
        }
    }
}

/// Resolves conflicts.
pub struct Resolver {
    store: LocalStore,
    master: Arc<MasterHandle>,
    collections: Arc<BTreeMap<String, CollectionConfig>>,
    wake: Arc<Notify>,
}

impl Resolver {
    /// A resolver over `store`; `wake` is notified when a conflict is recorded.
    pub fn new(
        store: LocalStore,
        master: Arc<MasterHandle>,
        collections: Arc<BTreeMap<String, CollectionConfig>>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            master,
            collections,
            wake,
        }
    }

    /// Takes `side` of an open conflict.
    pub async fn resolve(&self, conflict: &Conflict, side: Take) -> Result<Resolved, ResolveError> {
        let collection = self
            .collections
            .get(&conflict.collection)
            .ok_or_else(|| ResolveError::UnknownCollection(conflict.collection.clone()))?;
        let resolved = match resolution_action(side, conflict.master_version) {
            ConflictAction::RefreshFromMaster => {
                let master = self.master.get().await?;
                let current = master
                    .read(&collection.command_type, &conflict.key)
                    .await
                    .map_err(ResolveError::Master)?;
                self.store
                    .take_master(conflict, current, &collection.projection())
                    .await?
            }
            ConflictAction::Resend { expected_version } => {
                self.store.take_local(conflict, expected_version).await?
            }
            ConflictAction::ReadVersionThenResend => {
                let master = self.master.get().await?;
                let version = master
                    .read(&collection.command_type, &conflict.key)
                    .await
                    .map_err(ResolveError::Master)?
                    .and_then(|(_, v)| v)
                    .ok_or_else(|| ResolveError::NoMasterVersion {
                        key: conflict.key.clone(),
                    })?;
                self.store.take_local(conflict, version).await?
            }
            ConflictAction::Park => unreachable!("taking a side never parks"),
        };
        if matches!(resolved, Resolved::Record(_)) {
            metrics::resolution(match side {
                Take::Local => "local",
                Take::Master => "master",
            });
            info!(conflict = %conflict.id, collection = %conflict.collection, key = %conflict.key,
                  take = ?side, "conflict resolved");
        }
        Ok(resolved)
    }

    /// Applies the automatic policies to open conflicts until `shutdown`:
    /// when woken by a new conflict, and every `retry` while some remain
    /// (the master was unreachable).
    pub async fn run(self, retry: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(retry) => {}
            }
            let open = match self.store.open_automatic_conflicts(100).await {
                Ok(open) => open,
                Err(e) => {
                    warn!(error = %e, "listing open conflicts failed; will retry");
                    continue;
                }
            };
            for conflict in open {
                let side = match conflict.policy {
                    ConflictPolicy::MasterWins => Take::Master,
                    ConflictPolicy::LocalWins => Take::Local,
                    ConflictPolicy::Manual => continue,
                };
                match self.resolve(&conflict, side).await {
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => {
                        metrics::resolution_failed();
                        warn!(error = %e, conflict = %conflict.id, policy = conflict.policy.as_str(),
                              "automatic conflict resolution failed; will retry");
                    }
                    Err(e) => {
                        metrics::resolution_failed();
                        warn!(error = %e, conflict = %conflict.id, policy = conflict.policy.as_str(),
                              "automatic conflict resolution cannot succeed; parked for manual resolution");
                        if let Err(e) = self.store.park_conflict(&conflict.id).await {
                            warn!(error = %e, conflict = %conflict.id, "parking the conflict failed; will retry");
                        }
                    }
                }
            }
        }
    }
}
