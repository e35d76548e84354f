//! The workload of a chaos run, generated up front from a seed so a failing
//! run can be repeated exactly: which entity goes through which channel (raw
//! Kafka producer, ingress CP-2, ingress CP-3 bulk), every command's sequence
//! number, and where the duplicates, poison records and flaky rows go.
//!
//! One entity uses one channel only: commands of one entity sent over two
//! channels have no order between them, so per-entity order could not be
//! checked.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::master::FLAKY_PREFIX;

/// The command type every command of the run uses.
pub const COMMAND_TYPE: &str = "customer.upsert.v1";
/// `ce_source` of the raw producers.
pub const RAW_SOURCE: &str = "/tenants/chaos/raw";
/// Name prefix of raw key-reuse duplicates (a different payload under a used key).
pub const REUSED_PREFIX: &str = "reused";
/// Name prefix of ingress duplicates with a different payload.
pub const CHANGED_PREFIX: &str = "changed";

/// Sizes and mix of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    /// Unique valid commands (duplicates and poison come on top).
    pub commands: usize,
    /// Entities they are spread over.
    pub entities: usize,
    /// Duplicates as a share of `commands` (half same payload, half another payload).
    pub duplicate_ratio: f64,
    /// Poison records as a share of `commands`.
    pub poison_ratio: f64,
    /// Commands the master keeps failing until it is fixed.
    pub flaky: usize,
    /// Share of entities written over the ingress CP-2 API.
    pub ingress_share: f64,
    /// Share of entities written as CP-3 bulk jobs.
    pub bulk_share: f64,
    /// Bulk jobs the bulk entities' commands are split into.
    pub bulk_jobs: usize,
    /// Concurrent raw producers.
    pub raw_shards: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl PlanConfig {
    /// The CI-size run.
    pub fn ci() -> Self {
        Self {
            commands: 10_000,
            entities: 200,
            duplicate_ratio: 0.10,
            poison_ratio: 0.01,
            flaky: 2,
            ingress_share: 0.25,
            bulk_share: 0.15,
            bulk_jobs: 4,
            raw_shards: 4,
            seed: 7,
        }
    }

    /// The full-size run: 100k commands over 1k entities.
    pub fn full() -> Self {
        Self {
            commands: 100_000,
            entities: 1_000,
            flaky: 5,
            bulk_jobs: 10,
            ..Self::ci()
        }
    }

    /// Checks that the sizes make a run.
    pub fn check(&self) -> Result<(), String> {
        if self.entities < 10 {
            return Err("--entities must be at least 10".into());
        }
        if self.commands < self.entities {
            return Err("--commands must be at least --entities".into());
        }
        let shares = self.ingress_share + self.bulk_share;
        if !(0.0..=0.8).contains(&shares) || self.ingress_share < 0.0 || self.bulk_share < 0.0 {
            return Err(
                "ingress and bulk shares must be >= 0 and leave >= 20% for raw producers".into(),
            );
        }
        if !(0.0..=0.5).contains(&self.duplicate_ratio) || !(0.0..=0.2).contains(&self.poison_ratio)
        {
            return Err("duplicate ratio must be in 0..=0.5 and poison ratio in 0..=0.2".into());
        }
        if self.bulk_jobs == 0 || self.raw_shards == 0 {
            return Err("bulk jobs and raw shards must be positive".into());
        }
        Ok(())
    }
}

/// Which way a command reaches Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Produced straight to `<domain>.commands` with CloudEvents headers.
    Raw,
    /// `POST /v1/commands/{type}` (CP-2).
    Ingress,
    /// A line of a `POST /v1/jobs` upload (CP-3).
    Bulk,
}

/// One unique valid command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Entity key (`customer_id`, `ce_subject`).
    pub entity: String,
    /// Position in the entity's sequence, from 1.
    pub seq: i64,
    /// The `name` written (flaky rows are named so the master fails them).
    pub name: String,
    /// How it is sent.
    pub channel: Channel,
}

impl Command {
    /// The JSON payload.
    pub fn payload(&self) -> Value {
        payload(&self.entity, self.seq, &self.name)
    }

    /// The idempotency key (`ce_id` / `Idempotency-Key`) of raw and ingress commands.
    pub fn key(&self) -> String {
        let prefix = match self.channel {
            Channel::Raw => "raw",
            Channel::Ingress => "ing",
            Channel::Bulk => "bulk",
        };
        format!("{prefix}-{}-{}", self.entity, self.seq)
    }
}

/// The payload of a customer upsert.
pub fn payload(entity: &str, seq: i64, name: &str) -> Value {
    json!({
        "customer_id": entity,
        "name": name,
        "email": format!("{entity}@example.com"),
        "seq": seq,
    })
}

/// How a poison record is broken, and the DLQ reason it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoisonKind {
    /// `application/json` that is not JSON: `POISON`.
    InvalidJson,
    /// A type no worker handles: `UNKNOWN_TYPE`.
    UnknownType,
    /// No `ce_id` header: `POISON`, and no status (no identity).
    MissingId,
}

impl PoisonKind {
    /// The `writ.dlq.reason` expected.
    pub fn expected_reason(self) -> &'static str {
        match self {
            Self::InvalidJson | Self::MissingId => "POISON",
            Self::UnknownType => "UNKNOWN_TYPE",
        }
    }

    /// Whether the record has an identity, hence a `DEAD_LETTERED` status.
    pub fn has_identity(self) -> bool {
        !matches!(self, Self::MissingId)
    }
}

/// One poison record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// Unique tag, sent as `x-chaos-id` (and as `ce_id` when there is one).
    pub tag: String,
    /// The entity key it is sent under (shares a partition with real commands).
    pub entity: String,
    /// How it is broken.
    pub kind: PoisonKind,
}

/// One step of a raw producer, in produce order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawItem {
    /// A command (index into [`Plan::commands`]).
    Command(usize),
    /// The same command again, same payload (a producer retry).
    Duplicate(usize),
    /// A poison record (index into [`Plan::poison`]).
    Poison(usize),
}

/// One step of an ingress client (one entity, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressItem {
    /// Submit a command.
    Submit(usize),
    /// The same key and payload again: must be answered, not applied twice.
    SamePayload(usize),
    /// The same key with another payload: must be refused with `422`.
    OtherPayload(usize),
}

/// One bulk upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkJob {
    /// Lines, as indexes into [`Plan::commands`], in upload order.
    pub lines: Vec<usize>,
    /// Whether the upload is sent twice with the same Idempotency-Key.
    pub resend: bool,
}

/// The whole workload.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every unique valid command.
    pub commands: Vec<Command>,
    /// Every poison record.
    pub poison: Vec<Poison>,
    /// Raw producers: rounds of items (one round = one seq of each of its entities).
    pub raw: Vec<Vec<Vec<RawItem>>>,
    /// Ingress clients, one per entity.
    pub ingress: Vec<Vec<IngressItem>>,
    /// Bulk uploads, sent one after another.
    pub bulk: Vec<BulkJob>,
    /// How many raw commands get a key-reuse duplicate once applied.
    pub raw_reuse: usize,
    /// Raw commands eligible for key reuse (not flaky: those are dead-lettered first).
    pub reuse_candidates: Vec<usize>,
}

impl Plan {
    /// Generates the workload.
    pub fn generate(c: &PlanConfig) -> Plan {
        let mut rng = StdRng::seed_from_u64(c.seed);
        let per_entity = (c.commands / c.entities).max(1) as i64;
        let n_ingress = ((c.entities as f64) * c.ingress_share).round() as usize;
        let n_bulk = ((c.entities as f64) * c.bulk_share).round() as usize;
        let n_raw = c.entities - n_ingress - n_bulk;
        let half_dup = c.duplicate_ratio / 2.0;
        let mut commands = Vec::new();
        let mut poison = Vec::new();

        // Raw entities: rounds of seqs, entities split over shards.
        let raw_entities: Vec<String> = (0..n_raw).map(|e| format!("r{e:05}")).collect();
        let shards = c.raw_shards.min(n_raw.max(1));
        let mut raw = vec![Vec::new(); shards];
        let raw_total = n_raw * per_entity as usize;
        let flaky_every = raw_total
            .checked_div(c.flaky)
            .map_or(usize::MAX, |n| n.max(1));
        let mut raw_reuse_pool = Vec::new();
        let poison_total = ((c.commands as f64) * c.poison_ratio).round() as usize;
        let poison_every = raw_total
            .checked_div(poison_total)
            .map_or(usize::MAX, |n| n.max(1));
        let mut raw_count = 0usize;
        for seq in 1..=per_entity {
            let mut rounds: Vec<Vec<RawItem>> = vec![Vec::new(); shards];
            for (e, entity) in raw_entities.iter().enumerate() {
                let shard = e % shards;
                raw_count += 1;
                let flaky = c.flaky > 0
                    && raw_count % flaky_every == flaky_every / 2
                    && raw_count / flaky_every < c.flaky;
                let name = if flaky {
                    format!("{FLAKY_PREFIX}-{seq}")
                } else {
                    format!("n{seq}")
                };
                let idx = commands.len();
                commands.push(Command {
                    entity: entity.clone(),
                    seq,
                    name,
                    channel: Channel::Raw,
                });
                rounds[shard].push(RawItem::Command(idx));
                if !flaky {
                    raw_reuse_pool.push(idx);
                }
                if rng.random::<f64>() < half_dup {
                    rounds[shard].push(RawItem::Duplicate(idx));
                }
                if raw_count.is_multiple_of(poison_every) && poison.len() < poison_total {
                    let kind = match poison.len() % 3 {
                        0 => PoisonKind::InvalidJson,
                        1 => PoisonKind::UnknownType,
                        _ => PoisonKind::MissingId,
                    };
                    let p = poison.len();
                    poison.push(Poison {
                        tag: format!("poison-{p}"),
                        entity: entity.clone(),
                        kind,
                    });
                    rounds[shard].push(RawItem::Poison(p));
                }
            }
            for (shard, round) in rounds.into_iter().enumerate() {
                raw[shard].push(round);
            }
        }
        let raw_reuse = ((raw_reuse_pool.len() as f64) * half_dup).round() as usize;

        // Ingress entities: one sequential client each.
        let mut ingress = Vec::new();
        for e in 0..n_ingress {
            let entity = format!("i{e:05}");
            let mut items = Vec::new();
            for seq in 1..=per_entity {
                let idx = commands.len();
                commands.push(Command {
                    entity: entity.clone(),
                    seq,
                    name: format!("n{seq}"),
                    channel: Channel::Ingress,
                });
                items.push(IngressItem::Submit(idx));
                let r = rng.random::<f64>();
                if r < half_dup {
                    items.push(IngressItem::SamePayload(idx));
                } else if r < 2.0 * half_dup {
                    items.push(IngressItem::OtherPayload(idx));
                }
            }
            ingress.push(items);
        }

        // Bulk entities: their seqs cut into contiguous blocks, one job per block.
        let jobs = c.bulk_jobs.min(per_entity as usize).max(1);
        let mut bulk: Vec<BulkJob> = (0..jobs)
            .map(|j| BulkJob {
                lines: Vec::new(),
                // One re-upload (of the first job) keeps bulk duplicates near the overall ratio.
                resend: j == 0,
            })
            .collect();
        if n_bulk > 0 {
            for seq in 1..=per_entity {
                let job = ((seq - 1) as usize * jobs) / per_entity as usize;
                for e in 0..n_bulk {
                    let idx = commands.len();
                    commands.push(Command {
                        entity: format!("b{e:05}"),
                        seq,
                        name: format!("n{seq}"),
                        channel: Channel::Bulk,
                    });
                    bulk[job].lines.push(idx);
                }
            }
        } else {
            bulk.clear();
        }

        // Key reuse targets a random sample of the raw commands.
        let mut candidates = raw_reuse_pool;
        for i in (1..candidates.len()).rev() {
            let j = rng.random_range(0..=i);
            candidates.swap(i, j);
        }
        Plan {
            commands,
            poison,
            raw,
            ingress,
            bulk,
            raw_reuse,
            reuse_candidates: candidates,
        }
    }

    /// Duplicates the plan sends (raw same-payload, ingress both kinds, bulk resends, raw key reuse).
    pub fn duplicates(&self) -> usize {
        let raw = self
            .raw
            .iter()
            .flatten()
            .flatten()
            .filter(|i| matches!(i, RawItem::Duplicate(_)))
            .count();
        let ingress = self
            .ingress
            .iter()
            .flatten()
            .filter(|i| !matches!(i, IngressItem::Submit(_)))
            .count();
        let bulk: usize = self
            .bulk
            .iter()
            .filter(|j| j.resend)
            .map(|j| j.lines.len())
            .sum();
        raw + ingress + bulk + self.raw_reuse
    }

    /// Commands per channel.
    pub fn count(&self, channel: Channel) -> usize {
        self.commands
            .iter()
            .filter(|c| c.channel == channel)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    #[test]
    fn every_command_is_planned_exactly_once_in_entity_order() {
        let plan = Plan::generate(&PlanConfig::ci());
        assert_eq!(plan.commands.len(), 10_000);
        let mut seen = HashSet::new();
        for c in &plan.commands {
            assert!(seen.insert((c.entity.clone(), c.seq)), "{c:?} twice");
        }
        // Each channel sends an entity's commands in seq order.
        let mut order: Vec<usize> = Vec::new();
        for shard in &plan.raw {
            for round in shard {
                for item in round {
                    if let RawItem::Command(i) = item {
                        order.push(*i);
                    }
                }
            }
        }
        for client in &plan.ingress {
            for item in client {
                if let IngressItem::Submit(i) = item {
                    order.push(*i);
                }
            }
        }
        for job in &plan.bulk {
            order.extend(&job.lines);
        }
        assert_eq!(order.len(), plan.commands.len(), "each command sent once");
        let mut last: HashMap<&str, i64> = HashMap::new();
        for i in order {
            let c = &plan.commands[i];
            let prev = last.insert(&c.entity, c.seq).unwrap_or(0);
            assert_eq!(c.seq, prev + 1, "{c:?} sent after seq {prev}");
        }
        let channels: HashSet<_> = plan.commands.iter().map(|c| c.channel).collect();
        assert_eq!(channels.len(), 3);
        let by_entity: HashMap<&str, HashSet<Channel>> =
            plan.commands.iter().fold(HashMap::new(), |mut m, c| {
                m.entry(c.entity.as_str()).or_default().insert(c.channel);
                m
            });
        assert!(
            by_entity.values().all(|s| s.len() == 1),
            "one channel per entity"
        );
    }

    #[test]
    fn mix_matches_the_ratios() {
        let c = PlanConfig::ci();
        let plan = Plan::generate(&c);
        assert_eq!(plan.poison.len(), 100, "1% poison");
        let dups = plan.duplicates() as f64 / 10_000.0;
        assert!(
            (0.07..=0.15).contains(&dups),
            "about 10% duplicates: {dups}"
        );
        let flaky = plan
            .commands
            .iter()
            .filter(|c| c.name.starts_with(FLAKY_PREFIX))
            .count();
        assert_eq!(flaky, c.flaky);
        let kinds: HashSet<_> = plan.poison.iter().map(|p| p.kind).collect();
        assert_eq!(kinds.len(), 3, "every poison kind is sent");
        assert!(plan.bulk.iter().any(|j| j.resend) && plan.bulk.iter().any(|j| !j.resend));
        assert!(plan
            .reuse_candidates
            .iter()
            .all(|&i| plan.commands[i].channel == Channel::Raw
                && !plan.commands[i].name.starts_with(FLAKY_PREFIX)));
    }

    #[test]
    fn the_seed_makes_the_run_repeatable() {
        let a = Plan::generate(&PlanConfig::ci());
        let b = Plan::generate(&PlanConfig::ci());
        assert_eq!(a.raw, b.raw);
        assert_eq!(a.ingress, b.ingress);
        let other = Plan::generate(&PlanConfig {
            seed: 8,
            ..PlanConfig::ci()
        });
        assert_ne!(a.ingress, other.ingress);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let bad = PlanConfig {
            entities: 5,
            ..PlanConfig::ci()
        };
        assert!(bad.check().is_err());
        let bad = PlanConfig {
            ingress_share: 0.6,
            bulk_share: 0.3,
            ..PlanConfig::ci()
        };
        assert!(bad.check().unwrap_err().contains("raw"));
        assert!(PlanConfig::full().check().is_ok());
    }
}
