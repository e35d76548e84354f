//! A Bloom filter of every submission id the status view holds, so the
//! common case of an idempotency check — a key never seen before — is
//! answered from memory instead of a store lookup per request.
//!
//! Only "certainly never seen" is trusted: a hit (true or false positive)
//! still asks the store, so the filter can never make a duplicate look new,
//! only save lookups. Its size is fixed; past its capacity the false-positive
//! rate grows and more requests fall through to the store, nothing worse.
//! Ids the store forgets (past the dedupe window) stay in the filter until the
//! ingress restarts, which again only costs lookups.

use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// Bits in the default filter: 2^26 bits = 8 MiB, about 1% false positives
/// at 7 million ids with [`HASHES`] probes.
pub const DEFAULT_BITS_LOG2: u32 = 26;
/// Probes per id.
const HASHES: u64 = 7;

/// A fixed-size, lock-free Bloom filter over submission ids.
#[derive(Debug)]
pub struct SeenIds {
    words: Box<[AtomicU64]>,
    /// `bits - 1`; the bit count is a power of two.
    mask: u64,
}

impl Default for SeenIds {
    fn default() -> Self {
        Self::with_bits_log2(DEFAULT_BITS_LOG2)
    }
}

impl SeenIds {
    /// An empty filter of `2^bits_log2` bits (at least 64).
    pub fn with_bits_log2(bits_log2: u32) -> Self {
        let bits = 1u64 << bits_log2.clamp(6, 40);
        let words = (0..bits / 64).map(|_| AtomicU64::new(0)).collect();
        Self {
            words,
            mask: bits - 1,
        }
    }

    /// Adds `id`.
    pub fn insert(&self, id: Uuid) {
        for bit in self.probes(id) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Release);
        }
    }

    /// `false` only if `id` was never inserted.
    pub fn may_contain(&self, id: Uuid) -> bool {
        self.probes(id).all(|bit| {
            self.words[(bit / 64) as usize].load(Ordering::Acquire) & (1 << (bit % 64)) != 0
        })
    }

    /// Bit positions of `id` by double hashing. Submission ids are UUIDv5
    /// (already uniform), but ids of other versions are mixed first so a
    /// run of sequential ids does not pile onto the same bits.
    fn probes(&self, id: Uuid) -> impl Iterator<Item = u64> {
        let (hi, lo) = id.as_u64_pair();
        let h1 = mix(hi ^ lo.rotate_left(32));
        let h2 = mix(lo ^ 0x9e37_79b9_7f4a_7c15) | 1;
        let mask = self.mask;
        (0..HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & mask)
    }
}

/// SplitMix64's finalizer: a cheap, well-distributed 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v5(i: u64) -> Uuid {
        Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("/tenants/acme\0key-{i}").as_bytes(),
        )
    }

    #[test]
    fn every_inserted_id_is_reported_present() {
        let seen = SeenIds::with_bits_log2(16);
        // Far past capacity: a full filter still has no false negatives.
        for i in 0..50_000 {
            seen.insert(v5(i));
        }
        assert!((0..50_000).all(|i| seen.may_contain(v5(i))));
    }

    #[test]
    fn an_empty_filter_knows_nothing() {
        let seen = SeenIds::with_bits_log2(10);
        assert!((0..1000).all(|i| !seen.may_contain(v5(i))));
    }

    #[test]
    fn false_positives_stay_near_the_design_rate() {
        // 2^20 bits for 100k ids: ~10 bits per id, ~1% expected.
        let seen = SeenIds::with_bits_log2(20);
        for i in 0..100_000 {
            seen.insert(v5(i));
        }
        let false_positives = (100_000..200_000)
            .filter(|i| seen.may_contain(v5(*i)))
            .count();
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives in 100k"
        );
    }

    #[test]
    fn sequential_ids_of_other_versions_spread_too() {
        let seen = SeenIds::with_bits_log2(20);
        for i in 0..100_000u128 {
            seen.insert(Uuid::from_u128(i));
        }
        let false_positives = (100_000..200_000u128)
            .filter(|i| seen.may_contain(Uuid::from_u128(*i)))
            .count();
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives in 100k"
        );
    }
}
