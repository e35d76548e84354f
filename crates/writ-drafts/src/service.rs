//! The draft life cycle, independent of HTTP: save and replace (validated as
//! far as the record goes), submit once (validated in full, one command per
//! draft version), settle from status events (APPLIED deletes the draft,
//! REJECTED / CONFLICT / DEAD_LETTERED keep it with the error), purge after
//! the TTL.
//!
//! A submitted version is identified by the idempotency key
//! `draft:<id>:<incarnation>:v<version>`. The random incarnation (new on every
//! creation) is what keeps a draft deleted and re-created under the same id
//! from reusing its predecessor's key — which the host would answer with the
//! old submission's outcome instead of producing the new command.
//!
//! The submission is recorded on the draft *before* the host is called, so a
//! status event that overtakes the host's answer still finds its draft.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use writ_codec::{json_to_avro, validate_partial, SchemaCatalog};
use writ_core::{StatusEvent, SubmissionState};
use writ_http::{FieldProblem, Principal};

use crate::config::{DraftsConfig, DraftsConfigError};
use crate::error::{field_problems, pointer_token, DraftError};
use crate::precondition::{etag, Preconditions};
use crate::store::{millis, DraftKey, DraftRecord, DraftStore, Revision, Settlement, StoreError};
use crate::submitter::{DraftSubmission, SubmissionAnswer, Submitter};

/// Longest accepted draft id.
pub const MAX_DRAFT_ID_LEN: usize = 128;

/// The wall clock drafts are stamped with; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// What a status event (or a late answer) did to a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// APPLIED and the draft was not edited since: deleted.
    Deleted,
    /// The outcome is now recorded on the draft.
    Recorded,
    /// The draft already shows this outcome.
    Unchanged,
    /// Not applicable: a transition the state machine forbids, or an event
    /// whose tenant or draft id does not match the draft (logged).
    Ignored,
    /// No draft's last submission has this id (deleted, purged, re-submitted
    /// as a newer version, or not a draft at all).
    Unknown,
}

/// The answer to a submit, with what happened to the draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The host's answer.
    pub answer: SubmissionAnswer,
    /// The submitted draft version.
    pub version: i64,
    /// Whether the draft is gone because the command was applied.
    pub deleted: bool,
}

/// Why a drafts service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The `[drafts]` section is invalid.
    #[error(transparent)]
    Config(#[from] DraftsConfigError),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Inner {
    store: DraftStore,
    catalog: Arc<SchemaCatalog>,
    submitter: Arc<dyn Submitter>,
    config: DraftsConfig,
}

/// Drafts: the store, the schemas they are validated against, and the host's submitter.
#[derive(Clone)]
pub struct DraftService {
    inner: Arc<Inner>,
    clock: Clock,
}

impl std::fmt::Debug for DraftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftService")
            .field("store", &self.inner.store.backend())
            .field("ttl_ms", &self.inner.config.ttl_ms)
            .finish_non_exhaustive()
    }
}

/// Whether `id` can name a draft: URL-safe without encoding, and never a
/// dot-segment a client or proxy would normalise away.
pub fn valid_draft_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DRAFT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        && !id.bytes().all(|b| b == b'.')
}

/// The idempotency key (`ce_id`) of one draft version.
pub fn idempotency_key(id: &str, revision: &Revision) -> String {
    format!("draft:{id}:{}:v{}", revision.incarnation, revision.version)
}

fn settlement(answer: &SubmissionAnswer) -> Settlement {
    Settlement {
        state: answer.state,
        canonical_id: answer.canonical_id.clone(),
        error: answer.error.clone(),
    }
}

fn new_incarnation() -> String {
    // 64 random bits: only drafts under one tenant, owner and id must differ.
    Uuid::new_v4().simple().to_string()[..16].to_owned()
}

impl DraftService {
    /// Validates `config`, opens and migrates its store.
    pub async fn connect(
        config: DraftsConfig,
        catalog: Arc<SchemaCatalog>,
        submitter: Arc<dyn Submitter>,
    ) -> Result<Self, SetupError> {
        config.validate()?;
        let store = DraftStore::connect(
            &config.store_url,
            config.pool_size,
            config.acquire_timeout(),
        )
        .await?;
        Ok(Self::new(store, catalog, submitter, config))
    }

    /// A service over an opened store.
    pub fn new(
        store: DraftStore,
        catalog: Arc<SchemaCatalog>,
        submitter: Arc<dyn Submitter>,
        config: DraftsConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                catalog,
                submitter,
                config,
            }),
            clock: Arc::new(OffsetDateTime::now_utc),
        }
    }

    /// The same service reading time from `clock` (tests: drafts made "days ago").
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The store.
    pub fn store(&self) -> &DraftStore {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &DraftsConfig {
        &self.inner.config
    }

    /// The schemas drafts are validated against.
    pub fn catalog(&self) -> &SchemaCatalog {
        &self.inner.catalog
    }

    /// Now, at the millisecond precision every store keeps.
    pub fn now(&self) -> OffsetDateTime {
        let t = (self.clock)();
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis(t)) * 1_000_000).unwrap_or(t)
    }

    fn key(principal: &Principal, id: &str) -> Result<DraftKey, DraftError> {
        if !valid_draft_id(id) {
            return Err(DraftError::InvalidId);
        }
        Ok(DraftKey {
            tenant: principal.tenant.clone(),
            owner: principal.owner.clone().unwrap_or_default(),
            id: id.to_owned(),
        })
    }

    /// Checks a `PUT` document (`{"type": ..., "data": {...}}`) as far as it
    /// goes: every problem, as pointers into the document.
    fn check_document(
        &self,
        principal: &Principal,
        doc: &Json,
    ) -> Result<(String, Json), DraftError> {
        let Json::Object(map) = doc else {
            return Err(DraftError::Invalid(vec![FieldProblem {
                path: "/".into(),
                message: "expected an object with `type` and `data`".into(),
            }]));
        };
        let mut problems = Vec::new();
        for k in map
            .keys()
            .filter(|k| !matches!(k.as_str(), "type" | "data"))
        {
            problems.push(FieldProblem {
                path: format!("/{}", pointer_token(k)),
                message: "unknown field (expected `type` and `data`)".into(),
            });
        }
        let command_type = match map.get("type") {
            Some(Json::String(t)) => Some(t.as_str()),
            Some(_) => {
                problems.push(FieldProblem {
                    path: "/type".into(),
                    message: "expected a string".into(),
                });
                None
            }
            None => {
                problems.push(FieldProblem {
                    path: "/type".into(),
                    message: "missing required field".into(),
                });
                None
            }
        };
        let data = map.get("data");
        if data.is_none() {
            problems.push(FieldProblem {
                path: "/data".into(),
                message: "missing required field".into(),
            });
        }
        if let Some(t) = command_type {
            match self.inner.catalog.get(t) {
                None => problems.push(FieldProblem {
                    path: "/type".into(),
                    message: format!("unknown command type {t:?}"),
                }),
                Some(_) if !principal.may_use(t) => {
                    return Err(DraftError::TypeNotAllowed(t.to_owned()))
                }
                Some(schema) => {
                    if let Some(Err(e)) = data.map(|d| validate_partial(schema.schema(), d)) {
                        problems.extend(field_problems("/data", &e));
                    }
                }
            }
        }
        match (command_type, data) {
            (Some(t), Some(d)) if problems.is_empty() => Ok((t.to_owned(), d.clone())),
            _ => Err(DraftError::Invalid(problems)),
        }
    }

    /// Creates (`true`) or replaces (`false`) the draft `id`.
    ///
    /// Creating needs no precondition (`If-None-Match: *` makes it create-only);
    /// replacing needs `If-Match` with the current ETag or `*`.
    pub async fn put(
        &self,
        principal: &Principal,
        id: &str,
        document: &Json,
        pre: &Preconditions,
    ) -> Result<(DraftRecord, bool), DraftError> {
        let key = Self::key(principal, id)?;
        let (command_type, data) = self.check_document(principal, document)?;
        let store = &self.inner.store;
        let now = self.now();
        match store.get(&key).await? {
            None => {
                if pre.if_match.is_some() {
                    return Err(DraftError::PreconditionFailed(
                        "If-Match was given but the draft does not exist",
                    ));
                }
                let record = DraftRecord {
                    key,
                    revision: Revision {
                        incarnation: new_incarnation(),
                        version: 1,
                    },
                    command_type,
                    data,
                    created_at: now,
                    updated_at: now,
                    submission: None,
                };
                if store.insert(&record).await? {
                    return Ok((record, true));
                }
                // Another request created it between our read and insert.
                Err(if pre.if_none_match.is_some() {
                    DraftError::PreconditionFailed("If-None-Match: the draft exists")
                } else {
                    DraftError::PreconditionRequired
                })
            }
            Some(current) => {
                let tag = etag(&current.revision);
                if pre
                    .if_none_match
                    .as_ref()
                    .is_some_and(|l| l.matches_weak(&tag))
                {
                    return Err(DraftError::PreconditionFailed(
                        "If-None-Match: the draft exists",
                    ));
                }
                match &pre.if_match {
                    None => return Err(DraftError::PreconditionRequired),
                    Some(l) if !l.matches_strong(&tag) => {
                        return Err(DraftError::PreconditionFailed(
                            "If-Match does not match the draft's current ETag",
                        ))
                    }
                    Some(_) => {}
                }
                if !store
                    .replace(&key, &current.revision, &command_type, &data, now)
                    .await?
                {
                    // Changed or deleted since we read it: our If-Match no longer holds.
                    return Err(DraftError::PreconditionFailed(
                        "the draft changed while it was being replaced",
                    ));
                }
                let record = DraftRecord {
                    revision: Revision {
                        incarnation: current.revision.incarnation.clone(),
                        version: current.revision.version + 1,
                    },
                    command_type,
                    data,
                    updated_at: now,
                    ..current
                };
                Ok((record, false))
            }
        }
    }

    /// The draft `id`. A submission still `ACCEPTED` is first settled from the
    /// host's status view, so a draft whose submit timed out and has since been
    /// applied answers [`DraftError::Applied`] (and is deleted).
    pub async fn get(&self, principal: &Principal, id: &str) -> Result<DraftRecord, DraftError> {
        let key = Self::key(principal, id)?;
        let store = &self.inner.store;
        let record = store.get(&key).await?.ok_or(DraftError::NotFound)?;
        let Some(sub) = record
            .submission
            .as_ref()
            .filter(|s| s.state == SubmissionState::Accepted)
        else {
            return Ok(record);
        };
        let submission_id = sub.id;
        match self.inner.submitter.status(principal, submission_id).await {
            Ok(Some(answer)) if answer.state != SubmissionState::Accepted => {
                let settled = self
                    .settle(record, submission_id, &settlement(&answer))
                    .await?;
                if settled == Settled::Deleted {
                    return Err(DraftError::Applied {
                        submission_id,
                        canonical_id: answer.canonical_id,
                    });
                }
                store.get(&key).await?.ok_or(DraftError::NotFound)
            }
            Ok(_) => Ok(record),
            Err(problem) => {
                // The stored draft is still a correct answer; settling can wait.
                tracing::warn!(%submission_id, "drafts: status lookup failed: {problem}");
                Ok(record)
            }
        }
    }

    /// Deletes the draft `id` (only at the `If-Match` ETag, when given).
    pub async fn delete(
        &self,
        principal: &Principal,
        id: &str,
        pre: &Preconditions,
    ) -> Result<(), DraftError> {
        let key = Self::key(principal, id)?;
        let store = &self.inner.store;
        let expected = match &pre.if_match {
            None => None,
            Some(list) => {
                let current = store.get(&key).await?.ok_or(DraftError::NotFound)?;
                if !list.matches_strong(&etag(&current.revision)) {
                    return Err(DraftError::PreconditionFailed(
                        "If-Match does not match the draft's current ETag",
                    ));
                }
                Some(current.revision)
            }
        };
        if store.delete(&key, expected.as_ref()).await? {
            return Ok(());
        }
        Err(match (expected, store.get(&key).await?) {
            (Some(_), Some(_)) => {
                DraftError::PreconditionFailed("the draft changed while it was being deleted")
            }
            _ => DraftError::NotFound,
        })
    }

    /// Submits the draft `id`: validates the full record, records the
    /// submission on the draft, hands the command to the host and settles the
    /// draft from the answer (deleted when applied).
    ///
    /// Every submit of one draft version calls the host with the same
    /// idempotency key and payload; the host's idempotency makes it one command.
    pub async fn submit(
        &self,
        principal: &Principal,
        id: &str,
        pre: &Preconditions,
        wait: Option<Duration>,
    ) -> Result<Submitted, DraftError> {
        let key = Self::key(principal, id)?;
        let store = &self.inner.store;
        let record = store.get(&key).await?.ok_or(DraftError::NotFound)?;
        if let Some(list) = &pre.if_match {
            if !list.matches_strong(&etag(&record.revision)) {
                return Err(DraftError::PreconditionFailed(
                    "If-Match does not match the draft's current ETag",
                ));
            }
        }
        if !principal.may_use(&record.command_type) {
            return Err(DraftError::TypeNotAllowed(record.command_type));
        }
        // The schemas may have changed since the draft was saved.
        let schema = self
            .inner
            .catalog
            .get(&record.command_type)
            .ok_or_else(|| {
                DraftError::Incomplete(vec![FieldProblem {
                    path: "/type".into(),
                    message: format!("unknown command type {:?}", record.command_type),
                }])
            })?;
        if let Err(e) = json_to_avro(schema.schema(), &record.data) {
            return Err(DraftError::Incomplete(field_problems("/data", &e)));
        }
        let idem = idempotency_key(&key.id, &record.revision);
        let submission_id = writ_core::submission_id(&principal.source(), &idem);
        let already = record.submission.as_ref().map(|s| s.id) == Some(submission_id);
        if !already
            && !store
                .record_submission(&key, &record.revision, submission_id, self.now())
                .await?
        {
            return Err(match store.get(&key).await? {
                Some(_) => DraftError::Changed,
                None => DraftError::NotFound,
            });
        }
        let submission = DraftSubmission {
            command_type: record.command_type.clone(),
            payload: record.data.clone(),
            idempotency_key: idem,
            draft_id: key.id.clone(),
            wait,
        };
        // On an error the submission stays recorded as ACCEPTED: the command
        // may have been produced (a timeout), and if so its status event will
        // settle the draft; a retried submit uses the same key either way.
        let answer = match self.inner.submitter.submit(principal, submission).await {
            Ok(answer) => answer,
            Err(problem) => {
                metrics::counter!("writ_drafts_submits_total", "outcome" => "error").increment(1);
                return Err(DraftError::Submitter(Box::new(problem)));
            }
        };
        metrics::counter!("writ_drafts_submits_total", "outcome" => outcome_label(answer.state))
            .increment(1);
        if answer.submission_id != submission_id {
            // A host that breaks the Submitter contract: status events will not
            // find this draft. Loud, because only a code change fixes it.
            tracing::error!(
                expected = %submission_id,
                got = %answer.submission_id,
                "drafts: the host answered a different submission id than source+key give"
            );
        }
        let mut deleted = false;
        if answer.state != SubmissionState::Accepted {
            let settled = match store.get(&key).await? {
                Some(current) => {
                    self.settle(current, submission_id, &settlement(&answer))
                        .await?
                }
                None => Settled::Unknown,
            };
            deleted = answer.state == SubmissionState::Applied
                && matches!(settled, Settled::Deleted | Settled::Unknown);
        }
        Ok(Submitted {
            answer,
            version: record.revision.version,
            deleted,
        })
    }

    /// Settles the draft whose last submission the event answers: the host
    /// calls this for every status event carrying a `draft_id`.
    pub async fn apply_status(&self, event: &StatusEvent) -> Result<Settled, StoreError> {
        let Some(record) = self
            .inner
            .store
            .find_by_submission(event.submission_id)
            .await?
        else {
            return Ok(Settled::Unknown);
        };
        // Submission ids are derived from the tenant's source, so a mismatch
        // means a forged or misrouted event: never let it touch the draft.
        if !Principal::tenant(record.key.tenant.clone()).owns_source(&event.source)
            || event
                .draft_id
                .as_deref()
                .is_some_and(|d| d != record.key.id)
        {
            tracing::warn!(
                submission_id = %event.submission_id,
                "drafts: status event does not match its draft's tenant or id; ignored"
            );
            return Ok(Settled::Ignored);
        }
        let to = Settlement {
            state: event.state,
            canonical_id: event.canonical_id.clone(),
            error: event.error.clone(),
        };
        self.settle(record, event.submission_id, &to).await
    }

    /// Moves the draft's submission `submission_id` to `to`, following the
    /// submission state machine; APPLIED deletes a draft not edited since.
    async fn settle(
        &self,
        mut record: DraftRecord,
        submission_id: Uuid,
        to: &Settlement,
    ) -> Result<Settled, StoreError> {
        let store = &self.inner.store;
        // Each lap is one conditional write; losing it to a concurrent edit or
        // settle means re-reading and deciding again. Three laps cover any
        // realistic interleaving; a fourth would be answered from the next event.
        for _ in 0..3 {
            let Some(sub) = record.submission.as_ref().filter(|s| s.id == submission_id) else {
                return Ok(Settled::Unknown);
            };
            let from = sub.state;
            if from == to.state {
                return Ok(Settled::Unchanged);
            }
            if from.transition(to.state).is_err() {
                tracing::debug!(%submission_id, %from, to = %to.state, "drafts: transition ignored");
                return Ok(Settled::Ignored);
            }
            let done =
                if to.state == SubmissionState::Applied && record.revision.version == sub.version {
                    if store.delete_submitted(&record.key, submission_id).await? {
                        return Ok(Settled::Deleted);
                    }
                    false
                } else {
                    store.settle(&record.key, submission_id, from, to).await?
                };
            if done {
                return Ok(Settled::Recorded);
            }
            match store.get(&record.key).await? {
                Some(current) => record = current,
                None => return Ok(Settled::Unknown),
            }
        }
        Ok(Settled::Ignored)
    }

    /// Deletes every draft not changed since `cutoff`; returns how many.
    pub async fn purge_older_than(&self, cutoff: OffsetDateTime) -> Result<u64, StoreError> {
        let n = self.inner.store.purge_older_than(cutoff).await?;
        metrics::counter!("writ_drafts_purged_total").increment(n);
        Ok(n)
    }

    /// Deletes every draft older than the configured TTL (by the service clock).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.purge_older_than(self.now() - self.inner.config.ttl())
            .await
    }

    /// Runs [`Self::purge_expired`] now and every configured interval until
    /// `shutdown` is cancelled. A failed run is logged and retried at the next tick.
    pub fn spawn_purge(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let service = self.clone();
        let interval = service.inner.config.purge_interval();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                match service.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "drafts: expired drafts purged"),
                    Err(e) => {
                        tracing::warn!(error = %e, "drafts: purge failed; retrying next interval")
                    }
                }
            }
        })
    }

    /// When a draft last changed at `updated_at` will be purged.
    pub fn expires_at(&self, updated_at: OffsetDateTime) -> OffsetDateTime {
        updated_at + self.inner.config.ttl()
    }

    /// The problems that stand between a draft's data and a submit (empty: complete).
    pub fn completeness(&self, record: &DraftRecord) -> Vec<FieldProblem> {
        match self.inner.catalog.get(&record.command_type) {
            None => vec![FieldProblem {
                path: "/type".into(),
                message: format!("unknown command type {:?}", record.command_type),
            }],
            Some(schema) => match json_to_avro(schema.schema(), &record.data) {
                Ok(_) => Vec::new(),
                Err(e) => field_problems("/data", &e),
            },
        }
    }
}

fn outcome_label(state: SubmissionState) -> &'static str {
    match state {
        SubmissionState::Accepted => "accepted",
        SubmissionState::Applied => "applied",
        SubmissionState::Rejected => "rejected",
        SubmissionState::Conflict => "conflict",
        SubmissionState::DeadLettered => "dead_lettered",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_ids_are_url_safe_and_bounded() {
        for ok in ["cart-1", "a", "A.b_c~d-9", &"x".repeat(MAX_DRAFT_ID_LEN)] {
            assert!(valid_draft_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a:b",
            "é",
            &"x".repeat(MAX_DRAFT_ID_LEN + 1),
        ] {
            assert!(!valid_draft_id(bad), "{bad}");
        }
    }

    #[test]
    fn keys_differ_per_version_and_incarnation() {
        let r = |inc: &str, v| Revision {
            incarnation: inc.into(),
            version: v,
        };
        let k = idempotency_key("cart-1", &r("00ff", 3));
        assert_eq!(k, "draft:cart-1:00ff:v3");
        assert_ne!(k, idempotency_key("cart-1", &r("00ff", 4)));
        assert_ne!(k, idempotency_key("cart-1", &r("0100", 3)));
        // The longest id still fits in a ce_id.
        let long = idempotency_key(
            &"x".repeat(MAX_DRAFT_ID_LEN),
            &r(&new_incarnation(), i64::MAX),
        );
        assert!(long.len() <= 255, "{}", long.len());
        assert_eq!(new_incarnation().len(), 16);
    }
}
