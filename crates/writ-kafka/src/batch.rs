//! Batch accumulation, as pure logic: a batch closes on a record count, a byte
//! budget or a linger deadline, whichever comes first, and records of
//! partitions revoked mid-accumulation are dropped so the new owner reads them.

use std::collections::HashSet;
use std::time::Duration;

/// Bounds of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most records in one batch.
    pub max_records: usize,
    /// Most payload bytes (key + value + headers) in one batch; one oversized
    /// record still forms a batch of its own.
    pub max_bytes: usize,
    /// How long to wait for more records after the first one arrived.
    pub linger: Duration,
}

impl BatchLimits {
    /// Small batches, short linger: CP-1/CP-2 latency.
    pub const INTERACTIVE: BatchLimits = BatchLimits {
        max_records: 200,
        max_bytes: 1 << 20,
        linger: Duration::from_millis(2),
    };
    /// Big batches for CP-3 throughput.
    pub const BULK: BatchLimits = BatchLimits {
        max_records: 5000,
        max_bytes: 16 << 20,
        linger: Duration::from_millis(200),
    };
}

/// Something that can be batched: it has a partition and a size.
pub trait Batchable {
    /// (topic, partition) the record came from.
    fn topic_partition(&self) -> (&str, i32);
    /// Bytes the record counts against `max_bytes`.
    fn byte_size(&self) -> usize;
}

/// What happened to a pushed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Taken; the batch has room for more.
    Taken,
    /// Taken, and the batch is now full: flush it.
    TakenAndFull,
}

/// Accumulates one batch.
#[derive(Debug)]
pub struct BatchBuilder<R> {
    limits: BatchLimits,
    records: Vec<R>,
    bytes: usize,
}

impl<R: Batchable> BatchBuilder<R> {
    /// An empty batch with these limits.
    pub fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            records: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a record, or gives it back when it would overflow the byte budget
    /// (flush, then push it again).
    pub fn push(&mut self, record: R) -> Result<Push, R> {
        let size = record.byte_size();
        if !self.records.is_empty() && self.bytes + size > self.limits.max_bytes {
            return Err(record);
        }
        self.bytes += size;
        self.records.push(record);
        Ok(if self.is_full() {
            Push::TakenAndFull
        } else {
            Push::Taken
        })
    }

    /// Whether no more records fit.
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.limits.max_records.max(1) || self.bytes >= self.limits.max_bytes
    }

    /// Whether nothing has been taken yet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records taken so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Bytes taken so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops the records of revoked partitions (their offsets must not be stored here).
    pub fn drop_partitions(&mut self, revoked: &HashSet<(String, i32)>) -> usize {
        let before = self.records.len();
        self.records.retain(|r| {
            let (t, p) = r.topic_partition();
            !revoked.contains(&(t.to_owned(), p))
        });
        self.bytes = self.records.iter().map(Batchable::byte_size).sum();
        before - self.records.len()
    }

    /// Takes the batch, leaving an empty builder.
    pub fn take(&mut self) -> Vec<R> {
        self.bytes = 0;
        std::mem::take(&mut self.records)
    }

    /// The limits.
    pub fn limits(&self) -> BatchLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Rec(&'static str, i32, usize);

    impl Batchable for Rec {
        fn topic_partition(&self) -> (&str, i32) {
            (self.0, self.1)
        }
        fn byte_size(&self) -> usize {
            self.2
        }
    }

    fn limits(max_records: usize, max_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_records,
            max_bytes,
            linger: Duration::from_millis(1),
        }
    }

    #[test]
    fn closes_on_record_count() {
        let mut b = BatchBuilder::new(limits(2, 1000));
        assert_eq!(b.push(Rec("t", 0, 10)), Ok(Push::Taken));
        assert_eq!(b.push(Rec("t", 0, 10)), Ok(Push::TakenAndFull));
        assert_eq!(b.take().len(), 2);
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn closes_on_bytes_and_gives_back_the_overflowing_record() {
        let mut b = BatchBuilder::new(limits(100, 25));
        assert_eq!(b.push(Rec("t", 0, 10)), Ok(Push::Taken));
        assert_eq!(b.push(Rec("t", 0, 10)), Ok(Push::Taken));
        assert_eq!(b.push(Rec("t", 0, 10)), Err(Rec("t", 0, 10)));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn an_oversized_record_forms_a_batch_alone() {
        let mut b = BatchBuilder::new(limits(100, 25));
        assert_eq!(b.push(Rec("t", 0, 500)), Ok(Push::TakenAndFull));
        assert_eq!(b.take(), vec![Rec("t", 0, 500)]);
    }

    #[test]
    fn revoked_partitions_are_dropped() {
        let mut b = BatchBuilder::new(limits(100, 1000));
        for p in [0, 1, 0, 2] {
            b.push(Rec("t", p, 10)).unwrap();
        }
        let revoked: HashSet<_> = [("t".to_owned(), 0)].into_iter().collect();
        assert_eq!(b.drop_partitions(&revoked), 2);
        assert_eq!(b.len(), 2);
        assert_eq!(b.bytes(), 20);
    }
}
