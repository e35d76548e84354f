//! Reconciliation: compares the local copy of a collection with the master,
//! read through the master adapter ([`writ_store::Master::read`]), and
//! reports what drifted; with `repair`, fixes it.
//!
//! Only `SYNCED` records are compared — a pending, rejected or conflicting
//! record is expected to differ and is already on its way. For each:
//! - **missing**: the master has no such entity. Repair re-enqueues the
//!   record's latest full write (without an expected version).
//! - **stale**: the master's version moved past the one the copy is based on.
//! - **diverged**: same version (or an unversioned collection), but a kept
//!   field differs — someone changed the master without bumping its version.
//!
//! Repair of stale and diverged records follows the collection's policy:
//! `local-wins` re-enqueues the local write against the master's current
//! version; `master-wins` and `manual` refresh the local copy from the master
//! (reconcile is an operator's explicit act, so `manual` takes the master's
//! side rather than parking every drift).

use serde::Serialize;
use writ_store::{Master, MasterError};

use crate::config::{CollectionConfig, EdgeConfig};
use crate::resolver::MasterHandle;
use crate::store::{LocalStore, Record, StoreError};
use crate::sync::{ConflictPolicy, Expectation, SyncState};

/// One record that drifted from the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The local record's id.
    pub record_id: String,
    /// The entity key.
    pub key: String,
    /// The master version the local copy is based on.
    pub local_master_version: Option<i64>,
    /// The master's current version (none when missing or unversioned).
    pub master_version: Option<i64>,
    /// Kept fields whose values differ.
    pub fields: Vec<String>,
}

/// What a reconciliation found (and repaired).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// The collection.
    pub collection: String,
    /// Synced records compared with the master.
    pub checked: u64,
    /// Records not compared because they are not synced.
    pub skipped: u64,
    /// Synced locally, absent from the master.
    pub missing: Vec<Finding>,
    /// The master's version moved on.
    pub stale: Vec<Finding>,
    /// Same version, different values.
    pub diverged: Vec<Finding>,
    /// Records repaired (re-enqueued or refreshed).
    pub repaired: u64,
    /// Findings that could not be repaired now (the record changed meanwhile,
    /// or its latest write was pruned from the outbox); run again.
    pub unrepaired: u64,
}

impl ReconcileReport {
    /// Whether the local copy matches the master.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.stale.is_empty() && self.diverged.is_empty()
    }
}

impl std::fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "collection {}: {} checked, {} skipped (not synced)",
            self.collection, self.checked, self.skipped
        )?;
        for (label, findings) in [
            ("missing", &self.missing),
            ("stale", &self.stale),
            ("diverged", &self.diverged),
        ] {
            writeln!(f, "  {label}: {}", findings.len())?;
            for x in findings.iter() {
                writeln!(
                    f,
                    "    {} key={} local_version={} master_version={} fields=[{}]",
                    x.record_id,
                    x.key,
                    x.local_master_version.map_or("-".into(), |v| v.to_string()),
                    x.master_version.map_or("-".into(), |v| v.to_string()),
                    x.fields.join(",")
                )?;
            }
        }
        write!(
            f,
            "  repaired: {}, not repaired: {}",
            self.repaired, self.unrepaired
        )
    }
}

/// Why reconciliation stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The collection is not configured.
    #[error("collection {0:?} is not configured")]
    UnknownCollection(String),
    /// Reconcile reads the master, and none is configured.
    #[error("reconcile reads the master: add a [master] section to the edge configuration")]
    NoMaster,
    /// The master failed.
    #[error("master: {0}")]
    Master(#[from] MasterError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Compares the synced records of `name` with the master; repairs when asked.
pub async fn run(
    store: &LocalStore,
    master: &dyn Master,
    name: &str,
    collection: &CollectionConfig,
    repair: bool,
) -> Result<ReconcileReport, ReconcileError> {
    let projection = collection.projection();
    let mut report = ReconcileReport {
        collection: name.to_owned(),
        skipped: store.count_not_in_state(name, SyncState::Synced).await?,
        ..Default::default()
    };
    for record in store.records_in_state(name, SyncState::Synced).await? {
        report.checked += 1;
        let current = master.read(&collection.command_type, &record.key).await?;
        let finding = |master_version: Option<i64>, fields: Vec<String>| Finding {
            record_id: record.id.clone(),
            key: record.key.clone(),
            local_master_version: record.master_version,
            master_version,
            fields,
        };
        let Some((payload, version)) = current else {
            report.missing.push(finding(None, Vec::new()));
            if repair {
                tally(
                    &mut report,
                    store.reenqueue(&record, Expectation::Nothing).await?,
                );
            }
            continue;
        };
        let fields = projection.differences(&record.data, &payload);
        let stale = collection.versioned
            && version.is_some()
            && match (version, record.master_version) {
                (Some(m), Some(l)) => m > l,
                (Some(_), None) => true,
                _ => false,
            };
        if stale {
            report.stale.push(finding(version, fields));
        } else if !fields.is_empty() {
            report.diverged.push(finding(version, fields));
        } else {
            continue;
        }
        if repair {
            let repaired = repair_drift(store, collection, &record, &payload, version).await?;
            tally(&mut report, repaired);
        }
    }
    Ok(report)
}

fn tally(report: &mut ReconcileReport, repaired: bool) {
    if repaired {
        report.repaired += 1;
    } else {
        report.unrepaired += 1;
    }
}

async fn repair_drift(
    store: &LocalStore,
    collection: &CollectionConfig,
    record: &Record,
    master_payload: &serde_json::Value,
    master_version: Option<i64>,
) -> Result<bool, StoreError> {
    match collection.conflict {
        ConflictPolicy::LocalWins => {
            let expectation = match (collection.versioned, master_version) {
                (true, Some(v)) => Expectation::Version(v),
                _ => Expectation::Nothing,
            };
            store.reenqueue(record, expectation).await
        }
        ConflictPolicy::MasterWins | ConflictPolicy::Manual => {
            let data = collection
                .projection()
                .refresh(&record.data, master_payload);
            store
                .refresh_from_master(record, &data, master_version)
                .await
        }
    }
}

/// Connects the configured store and master and reconciles one collection
/// (what `writ reconcile` and `writ-edge reconcile` call).
pub async fn run_with_config(
    config: &EdgeConfig,
    collection: &str,
    repair: bool,
) -> Result<ReconcileReport, ReconcileError> {
    let c = config
        .collection(collection)
        .ok_or_else(|| ReconcileError::UnknownCollection(collection.to_owned()))?;
    if config.master.is_none() {
        return Err(ReconcileError::NoMaster);
    }
    let store = LocalStore::connect(&config.store).await?;
    let master = MasterHandle::new(config.master.clone())
        .get()
        .await
        .map_err(|e| match e {
            crate::resolver::ResolveError::Master(m) => ReconcileError::Master(m),
            _ => ReconcileError::NoMaster,
        })?;
    run(&store, master.as_ref(), collection, c, repair).await
}
