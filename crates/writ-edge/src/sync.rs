//! The edge's sync decisions as pure functions, with no I/O: when a batch sync
//! window is due, which fields the partial local copy keeps, how a master
//! record refreshes or differs from the local copy, and what a conflict policy
//! does with a `CONFLICT`. The relay, the status consumer, the resolver and
//! reconcile all decide through here, so the rules are tested once.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a local record stands against the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    /// The latest local write has not been answered by the master yet.
    Pending,
    /// The latest local write is applied (or the copy was refreshed from the master).
    Synced,
    /// The master refused the latest write for good (or it was dead-lettered).
    Rejected,
    /// The latest write hit a version conflict that waits for a resolution.
    Conflict,
}

impl SyncState {
    /// Every state, in declaration order.
    pub const ALL: [SyncState; 4] = [Self::Pending, Self::Synced, Self::Rejected, Self::Conflict];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Synced => "SYNCED",
            Self::Rejected => "REJECTED",
            Self::Conflict => "CONFLICT",
        }
    }

    /// Parses a wire name (case-insensitive, as query strings are typed by people).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A collection's batch sync window: publish every `interval`, or as soon as
/// `max_pending` changes wait, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncWindow {
    /// Longest a change waits; zero publishes immediately.
    pub interval: Duration,
    /// Pending changes that close the window early; 0 disables the count trigger.
    pub max_pending: u64,
}

impl SyncWindow {
    /// Publishes every change at once (the default).
    pub const IMMEDIATE: SyncWindow = SyncWindow {
        interval: Duration::ZERO,
        max_pending: 0,
    };

    /// Whether the pending changes should be published now: `pending` changes
    /// wait, the oldest of them for `oldest_age`.
    ///
    /// The window opens with the first pending change rather than on a fixed
    /// clock, so a change never waits longer than `interval`, and an idle edge
    /// does not publish a lone change the instant it arrives either.
    pub fn is_due(&self, pending: u64, oldest_age: Duration) -> bool {
        if pending == 0 {
            return false;
        }
        if self.interval.is_zero() {
            return true;
        }
        (self.max_pending > 0 && pending >= self.max_pending) || oldest_age >= self.interval
    }
}

/// What a collection keeps locally: all fields, or the listed dot paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// None keeps everything.
    fields: Option<Vec<Vec<String>>>,
}

impl Projection {
    /// A projection of `fields` (dot paths); an empty list keeps everything.
    pub fn new(fields: &[String]) -> Self {
        if fields.is_empty() {
            return Self { fields: None };
        }
        Self {
            fields: Some(
                fields
                    .iter()
                    .map(|f| f.split('.').map(str::to_owned).collect())
                    .collect(),
            ),
        }
    }

    /// Keeps every field.
    pub fn all() -> Self {
        Self { fields: None }
    }

    /// Whether every field is kept.
    pub fn is_all(&self) -> bool {
        self.fields.is_none()
    }

    /// Whether the field at dot path `path` is kept (a kept parent keeps its children).
    pub fn keeps(&self, path: &str) -> bool {
        let Some(fields) = &self.fields else {
            return true;
        };
        let parts: Vec<&str> = path.split('.').collect();
        fields
            .iter()
            .any(|f| f.len() <= parts.len() && f.iter().zip(&parts).all(|(a, b)| a == b))
    }

    /// The local copy of a full record: only the kept fields that are present.
    pub fn apply(&self, full: &Value) -> Value {
        let Some(fields) = &self.fields else {
            return full.clone();
        };
        let mut out = Map::new();
        for path in fields {
            if let Some(v) = get_path(full, path) {
                set_path(&mut out, path, v.clone());
            }
        }
        Value::Object(out)
    }

    /// The local copy after the master won: `local` with every kept field the
    /// master record has replaced by the master's value. Fields the master
    /// does not hold (unmapped columns) keep their local value.
    pub fn refresh(&self, local: &Value, master: &Value) -> Value {
        let mut out = match local {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        for (path, value) in leaves(master) {
            if self.keeps(&path.join(".")) {
                set_path(&mut out, &path, value.clone());
            }
        }
        Value::Object(out)
    }

    /// Kept fields whose local value differs from the master's, as dot paths.
    /// Only fields the master record holds are compared; an absent local field
    /// equals a null master field.
    pub fn differences(&self, local: &Value, master: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for (path, master_value) in leaves(master) {
            let dotted = path.join(".");
            if !self.keeps(&dotted) {
                continue;
            }
            let local_value = get_path(local, &path).unwrap_or(&Value::Null);
            if local_value != master_value {
                out.push(dotted);
            }
        }
        out
    }
}

/// The value at a dot path (`address.city`), if present.
pub fn lookup<'a>(value: &'a Value, dot_path: &str) -> Option<&'a Value> {
    let parts: Vec<String> = dot_path.split('.').map(str::to_owned).collect();
    get_path(value, &parts)
}

fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, p| v.get(p.as_str()))
}

fn set_path(out: &mut Map<String, Value>, path: &[String], value: Value) {
    let (last, parents) = path.split_last().expect("paths are never empty");
    let mut cur = out;
    for p in parents {
        let slot = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        cur = slot.as_object_mut().expect("just made an object");
    }
    cur.insert(last.clone(), value);
}

/// Every non-object value of a JSON document with its path (arrays are leaves).
fn leaves(value: &Value) -> Vec<(Vec<String>, &Value)> {
    fn walk<'a>(v: &'a Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, &'a Value)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            other if !path.is_empty() => out.push((path.clone(), other)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// A collection's answer to a version conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Drop the local write and refresh the local copy from the master.
    MasterWins,
    /// Resend the local write with the master's current version as expected version.
    LocalWins,
    /// Park the conflict until someone resolves it through the API.
    #[default]
    Manual,
}

impl ConflictPolicy {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MasterWins => "master-wins",
            Self::LocalWins => "local-wins",
            Self::Manual => "manual",
        }
    }

    /// Parses a configuration name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::MasterWins, Self::LocalWins, Self::Manual]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// Which side a conflict resolution takes (automatic policy or `POST .../resolve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Take {
    /// The local write wins: resend it against the master's current version.
    Local,
    /// The master wins: refresh the local copy, drop the local write.
    Master,
}

/// What to do with a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictAction {
    /// Read the master's record and refresh the local copy from it.
    RefreshFromMaster,
    /// Resend the write expecting this master version.
    Resend {
        /// The master's current version.
        expected_version: i64,
    },
    /// Read the master's current version first (the conflict did not carry it), then resend.
    ReadVersionThenResend,
    /// Keep the conflict open for a person.
    Park,
}

/// The action for a conflict under `policy`; `current_version` is the master
/// version the `CONFLICT` status reported, when it did.
pub fn conflict_action(policy: ConflictPolicy, current_version: Option<i64>) -> ConflictAction {
    match policy {
        ConflictPolicy::Manual => ConflictAction::Park,
        ConflictPolicy::MasterWins => resolution_action(Take::Master, current_version),
        ConflictPolicy::LocalWins => resolution_action(Take::Local, current_version),
    }
}

/// The action that takes `side` of a conflict.
pub fn resolution_action(side: Take, current_version: Option<i64>) -> ConflictAction {
    match (side, current_version) {
        (Take::Master, _) => ConflictAction::RefreshFromMaster,
        (Take::Local, Some(v)) => ConflictAction::Resend {
            expected_version: v,
        },
        (Take::Local, None) => ConflictAction::ReadVersionThenResend,
    }
}

/// What a queued write expects of the master's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// The master version the edge knows for the record when the write is
    /// published (none for a record the master has not applied yet).
    KnownVersion,
    /// Exactly this version (a `local-wins` resend: the master's current one).
    Version(i64),
    /// No expectation (reconcile re-creating a record the master lost).
    Nothing,
}

impl Expectation {
    /// The storage form: (`known` | `explicit` | `none`, explicit version).
    pub fn to_parts(self) -> (&'static str, Option<i64>) {
        match self {
            Self::KnownVersion => ("known", None),
            Self::Version(v) => ("explicit", Some(v)),
            Self::Nothing => ("none", None),
        }
    }

    /// Reads the storage form back; unknown modes are treated as `known`, the
    /// safe choice (a stale expectation conflicts instead of overwriting).
    pub fn from_parts(mode: &str, version: Option<i64>) -> Self {
        match (mode, version) {
            ("explicit", Some(v)) => Self::Version(v),
            ("none", _) => Self::Nothing,
            _ => Self::KnownVersion,
        }
    }
}

/// The `ce_expectedversion` of a write: only for versioned collections, and
/// only when the write is based on a master version the edge knows.
pub fn expected_version(
    versioned: bool,
    expectation: Expectation,
    known_master_version: Option<i64>,
) -> Option<i64> {
    if !versioned {
        return None;
    }
    match expectation {
        Expectation::KnownVersion => known_master_version,
        Expectation::Version(v) => Some(v),
        Expectation::Nothing => None,
    }
}

/// Converts a codec field path (`$.address.city`, `$.lines[2].sku`) to the
/// JSON-pointer-like form of problem+json (`/address/city`, `/lines/2/sku`).
pub fn pointer_path(codec_path: &str) -> String {
    let rest = codec_path.strip_prefix('$').unwrap_or(codec_path);
    let mut out = String::new();
    for part in rest.split('.').filter(|p| !p.is_empty()) {
        let mut segments = part.split('[');
        if let Some(name) = segments.next() {
            if !name.is_empty() {
                out.push('/');
                out.push_str(name);
            }
        }
        for index in segments {
            out.push('/');
            out.push_str(index.trim_end_matches(']'));
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_immediate_window_publishes_anything_pending() {
        let w = SyncWindow::IMMEDIATE;
        assert!(!w.is_due(0, Duration::from_secs(100)));
        assert!(w.is_due(1, Duration::ZERO));
    }

    #[test]
    fn a_window_closes_on_time_or_count_whichever_first() {
        let w = SyncWindow {
            interval: Duration::from_secs(10),
            max_pending: 3,
        };
        assert!(!w.is_due(0, Duration::from_secs(60)), "nothing to publish");
        assert!(!w.is_due(2, Duration::from_secs(9)), "neither trigger yet");
        assert!(w.is_due(3, Duration::ZERO), "count trigger");
        assert!(w.is_due(1, Duration::from_secs(10)), "time trigger");
        let time_only = SyncWindow {
            max_pending: 0,
            ..w
        };
        assert!(!time_only.is_due(10_000, Duration::from_secs(1)));
        assert!(time_only.is_due(1, Duration::from_secs(11)));
    }

    #[test]
    fn a_projection_keeps_only_the_configured_fields() {
        let full = json!({"customer_id": "c1", "name": "Ada", "email": "a@x",
                          "address": {"city": "Paris", "street": "Rue 1"}});
        let p = Projection::new(&["customer_id".into(), "address.city".into()]);
        assert_eq!(
            p.apply(&full),
            json!({"customer_id": "c1", "address": {"city": "Paris"}})
        );
        assert!(p.keeps("customer_id"));
        assert!(p.keeps("address.city"));
        assert!(!p.keeps("address"), "a kept child does not keep its parent");
        assert!(!p.keeps("email"));
        let parent = Projection::new(&["address".into()]);
        assert!(parent.keeps("address.street"));
        assert!(Projection::all().keeps("anything"));
        assert_eq!(Projection::all().apply(&full), full);
        // Absent fields stay absent rather than becoming null.
        assert_eq!(Projection::new(&["phone".into()]).apply(&full), json!({}));
    }

    #[test]
    fn a_master_refresh_overlays_kept_master_fields_only() {
        let p = Projection::new(&["customer_id".into(), "name".into(), "phone".into()]);
        let local = json!({"customer_id": "c1", "name": "Local", "phone": "+33"});
        let master = json!({"customer_id": "c1", "name": "Master", "email": "m@x"});
        assert_eq!(
            p.refresh(&local, &master),
            json!({"customer_id": "c1", "name": "Master", "phone": "+33"}),
            "email is not kept locally; phone is not held by the master"
        );
    }

    #[test]
    fn differences_compare_kept_fields_the_master_holds() {
        let p = Projection::new(&["customer_id".into(), "name".into(), "seq".into()]);
        let local = json!({"customer_id": "c1", "name": "Ada"});
        assert!(p
            .differences(
                &local,
                &json!({"customer_id": "c1", "name": "Ada", "seq": null, "email": "other"})
            )
            .is_empty());
        assert_eq!(
            p.differences(
                &local,
                &json!({"customer_id": "c1", "name": "Bob", "seq": 4})
            ),
            vec!["name".to_owned(), "seq".to_owned()]
        );
        let nested = Projection::all();
        assert_eq!(
            nested.differences(
                &json!({"a": {"b": 1, "c": 2}}),
                &json!({"a": {"b": 1, "c": 3}})
            ),
            vec!["a.c".to_owned()]
        );
    }

    #[test]
    fn conflict_policies_decide_without_io() {
        assert_eq!(
            conflict_action(ConflictPolicy::Manual, Some(4)),
            ConflictAction::Park
        );
        assert_eq!(
            conflict_action(ConflictPolicy::MasterWins, Some(4)),
            ConflictAction::RefreshFromMaster
        );
        assert_eq!(
            conflict_action(ConflictPolicy::LocalWins, Some(4)),
            ConflictAction::Resend {
                expected_version: 4
            }
        );
        assert_eq!(
            conflict_action(ConflictPolicy::LocalWins, None),
            ConflictAction::ReadVersionThenResend
        );
        assert_eq!(
            resolution_action(Take::Master, None),
            ConflictAction::RefreshFromMaster
        );
        for p in [
            ConflictPolicy::MasterWins,
            ConflictPolicy::LocalWins,
            ConflictPolicy::Manual,
        ] {
            assert_eq!(ConflictPolicy::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn expected_versions_follow_the_known_master_version() {
        use Expectation::*;
        assert_eq!(expected_version(true, KnownVersion, None), None, "a create");
        assert_eq!(expected_version(true, KnownVersion, Some(3)), Some(3));
        assert_eq!(
            expected_version(true, Version(7), Some(3)),
            Some(7),
            "resend"
        );
        assert_eq!(expected_version(true, Nothing, Some(3)), None, "re-create");
        assert_eq!(expected_version(false, Version(7), Some(3)), None);
        for e in [KnownVersion, Version(7), Nothing] {
            let (mode, v) = e.to_parts();
            assert_eq!(Expectation::from_parts(mode, v), e);
        }
        assert_eq!(Expectation::from_parts("garbage", Some(1)), KnownVersion);
    }

    #[test]
    fn codec_paths_become_pointers() {
        assert_eq!(pointer_path("$.email"), "/email");
        assert_eq!(pointer_path("$.address.city"), "/address/city");
        assert_eq!(pointer_path("$.lines[2].sku"), "/lines/2/sku");
        assert_eq!(pointer_path("$"), "/");
    }

    #[test]
    fn sync_states_round_trip() {
        for s in SyncState::ALL {
            assert_eq!(SyncState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(SyncState::parse("pending"), Some(SyncState::Pending));
        assert_eq!(SyncState::parse("DONE"), None);
    }
}
