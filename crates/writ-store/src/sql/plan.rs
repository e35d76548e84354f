//! Pure batch planning: which commands are fresh, which entity each one
//! touches, the "waves" that keep per-entity order in set-based statements,
//! and how a write's result turns into an [`Outcome`].

use std::collections::HashMap;

use super::config::{Mapping, WriteMode};
use super::values::key_text;
use crate::Outcome;

/// One set-based statement's worth of commands: the `wave`-th command of
/// each entity, of one command type. A group touches each entity at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// 0 = each entity's first command in the batch, 1 = its second, ...
    pub wave: usize,
    /// The command type all members share.
    pub command_type: String,
    /// Batch indexes, in slice order.
    pub members: Vec<usize>,
}

/// Groups `(batch index, entity, command type)` into waves, in slice order.
/// Executing the groups in the returned order applies every entity's
/// commands in slice order.
pub fn plan_waves<'a>(items: impl IntoIterator<Item = (usize, &'a str, &'a str)>) -> Vec<Group> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut index: HashMap<(usize, &str), usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (idx, entity, command_type) in items {
        let n = seen.entry(entity).or_insert(0);
        let wave = *n;
        *n += 1;
        let g = *index.entry((wave, command_type)).or_insert_with(|| {
            groups.push(Group {
                wave,
                command_type: command_type.to_owned(),
                members: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].members.push(idx);
    }
    // Stable: within a wave, groups keep first-appearance order.
    groups.sort_by_key(|g| g.wave);
    groups
}

/// The entity a command touches: table plus key values as text, or the name
/// of the first key path that is missing/null.
pub fn entity_of(mapping: &Mapping, payload: &serde_json::Value) -> Result<String, String> {
    let mut entity = mapping.table.to_string();
    for k in &mapping.keys {
        match key_text(k.path.get(payload)) {
            Some(t) => {
                entity.push('\u{1f}');
                entity.push_str(&t);
            }
            None => return Err(k.path.to_string()),
        }
    }
    Ok(entity)
}

/// An outcome decided before touching the table (the command is still recorded).
pub fn rejected(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Rejected {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Checks a command against the row's state before (or instead of) writing:
/// `Some(outcome)` when it must not apply — version mismatch first, then the
/// mode's rule (insert on an existing key, update/delete of a missing row).
///
/// A row whose version column is NULL counts as version 0; a missing row
/// passes only `expected_version = 0`.
pub fn precheck(
    mode: WriteMode,
    expected: Option<i64>,
    existed: bool,
    current: Option<i64>,
) -> Option<Outcome> {
    if let Some(v) = expected {
        let ok = if existed {
            current.unwrap_or(0) == v
        } else {
            v == 0
        };
        if !ok {
            let current_version = existed.then(|| current.unwrap_or(0));
            return Some(Outcome::Conflict {
                message: match current_version {
                    Some(c) => format!("expected version {v}, master has version {c}"),
                    None => format!("expected version {v}, master has no such entity"),
                },
                current_version,
            });
        }
    }
    match (mode, existed) {
        (WriteMode::Insert, true) => Some(rejected(
            "DUPLICATE_KEY",
            "an entity with this key already exists",
        )),
        (WriteMode::Update | WriteMode::Delete, false) => {
            Some(rejected("NOT_FOUND", "no entity with this key"))
        }
        _ => None,
    }
}

/// What a set-based write reported for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    /// `Some((version, canonical id))` when the row was written.
    pub written: Option<(Option<i64>, Option<String>)>,
    /// Whether the row existed before the statement.
    pub existed: bool,
    /// Its version before the statement.
    pub current: Option<i64>,
}

/// The outcome of a command from its write result.
pub fn decide(mode: WriteMode, expected: Option<i64>, r: WriteResult) -> Outcome {
    match r.written {
        Some((version, canonical_id)) => Outcome::Applied {
            canonical_id,
            version,
        },
        None => precheck(mode, expected, r.existed, r.current).unwrap_or_else(|| {
            // Only reachable when a concurrent writer outside writ changed the
            // row between the statement's snapshot and its write.
            Outcome::Conflict {
                message: "the entity changed concurrently".into(),
                current_version: None,
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_keep_per_entity_order_and_touch_each_entity_once() {
        let items = [
            (0, "a", "up"),
            (1, "b", "up"),
            (2, "a", "up"),
            (3, "c", "del"),
            (4, "a", "del"),
            (5, "b", "up"),
        ];
        let g = plan_waves(items);
        let got: Vec<(usize, &str, Vec<usize>)> = g
            .iter()
            .map(|g| (g.wave, g.command_type.as_str(), g.members.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "up", vec![0, 1]),
                (0, "del", vec![3]),
                (1, "up", vec![2, 5]),
                (2, "del", vec![4]),
            ]
        );
    }

    #[test]
    fn distinct_entities_form_one_wave() {
        let keys: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let g = plan_waves(keys.iter().enumerate().map(|(i, k)| (i, k.as_str(), "t")));
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].members.len(), 100);
    }

    #[test]
    fn version_checks_come_before_mode_rules() {
        use WriteMode::*;
        assert_eq!(precheck(Upsert, None, false, None), None);
        assert_eq!(precheck(Upsert, Some(0), false, None), None);
        assert_eq!(precheck(Upsert, Some(3), true, Some(3)), None);
        assert_eq!(precheck(Update, Some(0), true, None), None);
        assert!(matches!(
            precheck(Upsert, Some(2), true, Some(3)),
            Some(Outcome::Conflict {
                current_version: Some(3),
                ..
            })
        ));
        assert!(matches!(
            precheck(Update, Some(1), false, None),
            Some(Outcome::Conflict {
                current_version: None,
                ..
            })
        ));
        assert!(matches!(
            precheck(Insert, Some(0), true, Some(1)),
            Some(Outcome::Conflict { .. })
        ));
        assert!(
            matches!(precheck(Insert, None, true, Some(1)), Some(Outcome::Rejected { code, .. }) if code == "DUPLICATE_KEY")
        );
        assert!(
            matches!(precheck(Delete, None, false, None), Some(Outcome::Rejected { code, .. }) if code == "NOT_FOUND")
        );
        assert!(
            matches!(precheck(Update, Some(0), false, None), Some(Outcome::Rejected { code, .. }) if code == "NOT_FOUND")
        );
    }

    #[test]
    fn written_rows_are_applied() {
        let o = decide(
            WriteMode::Upsert,
            Some(1),
            WriteResult {
                written: Some((Some(2), Some("c1".into()))),
                existed: true,
                current: Some(1),
            },
        );
        assert_eq!(
            o,
            Outcome::Applied {
                canonical_id: Some("c1".into()),
                version: Some(2)
            }
        );
    }
}
