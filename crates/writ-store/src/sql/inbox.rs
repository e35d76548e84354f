//! The inbox (dedupe) table: its DDL per dialect and how an [`Outcome`] is
//! stored in, and read back from, an inbox row.

use super::config::Dialect;
use super::ident::TableName;
use crate::Outcome;

/// Inbox `state` values (smallint in PostgreSQL, integer in SQLite).
pub mod state {
    /// Claimed by a transaction that has not recorded its outcome yet (never visible after commit).
    pub const CLAIMED: i16 = 0;
    /// Applied.
    pub const APPLIED: i16 = 1;
    /// Rejected.
    pub const REJECTED: i16 = 2;
    /// Version conflict.
    pub const CONFLICT: i16 = 3;
}

/// The inbox DDL for a dialect: `CREATE ... IF NOT EXISTS`, safe to run on every start.
pub fn ddl(dialect: Dialect, table: &TableName) -> Vec<String> {
    let bare = table.name().as_str();
    match dialect {
        Dialect::Postgres => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
                 submission_id uuid PRIMARY KEY, \
                 state smallint NOT NULL, \
                 canonical_id text, \
                 version bigint, \
                 error_code text, \
                 error_message text, \
                 fingerprint text NOT NULL, \
                 recorded_at timestamptz NOT NULL DEFAULT now())"
            ),
            // Rows arrive in recorded_at order: a BRIN index is tiny and enough for expiry.
            format!(
                "CREATE INDEX IF NOT EXISTS \"{bare}_recorded_at_brin\" ON {table} \
                 USING brin (recorded_at)"
            ),
        ],
        Dialect::Sqlite => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
                 submission_id BLOB PRIMARY KEY NOT NULL, \
                 state INTEGER NOT NULL, \
                 canonical_id TEXT, \
                 version INTEGER, \
                 error_code TEXT, \
                 error_message TEXT, \
                 fingerprint TEXT NOT NULL, \
                 recorded_at INTEGER NOT NULL) WITHOUT ROWID"
            ),
            format!("CREATE INDEX IF NOT EXISTS \"{bare}_recorded_at\" ON {table} (recorded_at)"),
        ],
    }
}

/// An outcome as stored in an inbox row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    /// One of [`state`].
    pub state: i16,
    /// Applied: the canonical id.
    pub canonical_id: Option<String>,
    /// Applied: the new version; Conflict: the master's current version.
    pub version: Option<i64>,
    /// Rejected: its code; Conflict: `VERSION_MISMATCH`.
    pub error_code: Option<String>,
    /// Rejected / Conflict: the message.
    pub error_message: Option<String>,
}

impl Recorded {
    /// Encodes an outcome.
    pub fn from_outcome(o: &Outcome) -> Self {
        match o {
            Outcome::Applied {
                canonical_id,
                version,
            } => Self {
                state: state::APPLIED,
                canonical_id: canonical_id.clone(),
                version: *version,
                ..Self::default()
            },
            Outcome::Rejected { code, message } => Self {
                state: state::REJECTED,
                error_code: Some(code.clone()),
                error_message: Some(message.clone()),
                ..Self::default()
            },
            Outcome::Conflict {
                message,
                current_version,
            } => Self {
                state: state::CONFLICT,
                version: *current_version,
                error_code: Some("VERSION_MISMATCH".into()),
                error_message: Some(message.clone()),
                ..Self::default()
            },
        }
    }

    /// Decodes the stored outcome; `None` for a row still in `CLAIMED` or an unknown state.
    pub fn into_outcome(self) -> Option<Outcome> {
        match self.state {
            state::APPLIED => Some(Outcome::Applied {
                canonical_id: self.canonical_id,
                version: self.version,
            }),
            state::REJECTED => Some(Outcome::Rejected {
                code: self.error_code.unwrap_or_default(),
                message: self.error_message.unwrap_or_default(),
            }),
            state::CONFLICT => Some(Outcome::Conflict {
                message: self.error_message.unwrap_or_default(),
                current_version: self.version,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_inbox_rows() {
        for o in [
            Outcome::Applied {
                canonical_id: Some("c".into()),
                version: Some(3),
            },
            Outcome::Applied {
                canonical_id: None,
                version: None,
            },
            Outcome::Rejected {
                code: "NOT_FOUND".into(),
                message: "m".into(),
            },
            Outcome::Conflict {
                message: "m".into(),
                current_version: Some(2),
            },
            Outcome::Conflict {
                message: "m".into(),
                current_version: None,
            },
        ] {
            assert_eq!(Recorded::from_outcome(&o).into_outcome(), Some(o));
        }
        assert_eq!(Recorded::default().into_outcome(), None);
    }
}
