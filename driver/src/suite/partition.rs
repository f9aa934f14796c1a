//! Splitting a suite across machines: `--partition K/N` keeps the tests whose id
//! hashes to shard K of N. The hash is of the id alone, so a test always lands on the
//! same shard whatever else the suite holds (cargo-nextest's `hash:` partitioning).

use std::fmt;
use std::str::FromStr;

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

impl Partition {
    /// Whether the test with this id belongs to this shard.
    pub fn contains(&self, id: &str) -> bool {
        stable_hash(id) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl FromStr for Partition {
    type Err = String;

    /// `K/N` with 1 <= K <= N.
    fn from_str(s: &str) -> Result<Partition, String> {
        let bad = || format!("`{s}` is not a partition K/N with 1 <= K <= N (e.g. 2/3)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Partition { index, count })
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// FNV-1a, 64 bits: the same on every host, build and Rust version (std's hasher is
/// not promised to be).
pub(crate) fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_is_in_exactly_one_shard_and_always_the_same() {
        let ids: Vec<String> = (0..200).map(|i| format!("tests/specs/t{i}")).collect();
        for count in 1..=5 {
            let shards: Vec<Partition> = (1..=count)
                .map(|index| Partition { index, count })
                .collect();
            for id in &ids {
                assert_eq!(shards.iter().filter(|p| p.contains(id)).count(), 1, "{id}");
            }
            // Spread over the shards (200 ids: none gets less than half its share).
            for p in &shards {
                let n = ids.iter().filter(|id| p.contains(id)).count();
                assert!(n * 2 * count as usize >= ids.len(), "{p}: {n}");
            }
        }
        // Fixed values: a change of hash would move tests between CI machines.
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn partitions_parse_and_print() {
        assert_eq!(
            "2/3".parse::<Partition>(),
            Ok(Partition { index: 2, count: 3 })
        );
        assert_eq!(Partition { index: 2, count: 3 }.to_string(), "2/3");
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", "1/2/3"] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
    }
}
