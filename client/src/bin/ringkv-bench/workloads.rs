//! The workloads: which operation a worker sends next, and on which key.

use rand::Rng;
use rand::rngs::StdRng;

/// A named operation mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Put, uniform keys.
    Write,
    /// Linearizable get, uniform keys.
    Read,
    /// Stale get (ringkv STALE, etcd serializable, Redis GET), uniform keys.
    StaleRead,
    /// YCSB A: 50 % reads, 50 % updates, Zipfian keys.
    YcsbA,
    /// YCSB B: 95 % reads, 5 % updates, Zipfian keys.
    YcsbB,
    /// Sessions: 60 % get + TTL refresh, 35 % put with TTL, 5 % delete, Zipfian keys.
    Sessions,
    /// Half reads, half writes, all on one key.
    HotKey,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Write,
        Workload::Read,
        Workload::StaleRead,
        Workload::YcsbA,
        Workload::YcsbB,
        Workload::Sessions,
        Workload::HotKey,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::StaleRead => "stale-read",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::Sessions => "sessions",
            Workload::HotKey => "hot-key",
        }
    }

    pub fn parse(name: &str) -> Result<Workload, String> {
        Workload::ALL.into_iter().find(|w| w.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
            format!("unknown workload {name:?} (one of {})", names.join(", "))
        })
    }

    /// The next operation and its key index.
    pub fn next(self, rng: &mut StdRng, keys: &KeyChooser) -> (OpKind, usize) {
        let roll = rng.random_range(0..100u32);
        match self {
            Workload::Write => (OpKind::Put, keys.uniform(rng)),
            Workload::Read => (OpKind::Get, keys.uniform(rng)),
            Workload::StaleRead => (OpKind::StaleGet, keys.uniform(rng)),
            Workload::YcsbA => (if roll < 50 { OpKind::Get } else { OpKind::Put }, keys.zipf(rng)),
            Workload::YcsbB => (if roll < 95 { OpKind::Get } else { OpKind::Put }, keys.zipf(rng)),
            Workload::Sessions => {
                let op = match roll {
                    0..60 => OpKind::GetRefresh,
                    60..95 => OpKind::PutTtl,
                    _ => OpKind::Delete,
                };
                (op, keys.zipf(rng))
            }
            Workload::HotKey => (if roll < 50 { OpKind::Get } else { OpKind::Put }, 0),
        }
    }
}

/// One request a worker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Put,
    PutTtl,
    Get,
    StaleGet,
    GetRefresh,
    Delete,
}

/// Picks key indexes: uniform, or Zipfian (θ = 0.99, YCSB's constant) from a
/// precomputed CDF, with the popular ranks scattered over the key space.
pub struct KeyChooser {
    keys: usize,
    cdf: Vec<f64>,
}

impl KeyChooser {
    pub fn new(keys: usize) -> KeyChooser {
        let keys = keys.max(1);
        let mut cdf = Vec::with_capacity(keys);
        let mut sum = 0.0;
        for rank in 1..=keys {
            sum += 1.0 / (rank as f64).powf(0.99);
            cdf.push(sum);
        }
        for p in &mut cdf {
            *p /= sum;
        }
        KeyChooser { keys, cdf }
    }

    pub fn uniform(&self, rng: &mut StdRng) -> usize {
        rng.random_range(0..self.keys)
    }

    pub fn zipf(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        let rank = self.cdf.partition_point(|&p| p < u).min(self.keys - 1);
        // Scatter ranks so hot keys land on different shards.
        (rank.wrapping_mul(0x9E37_79B9_7F4A_7C15_usize.wrapping_add(1)) ^ (rank >> 7)) % self.keys
    }
}

/// The key for index `i`: 16 bytes, like the anchors.
pub fn key(i: usize) -> [u8; 16] {
    let mut key = *b"key-000000000000";
    let digits = format!("{:012}", i % 1_000_000_000_000);
    key[4..].copy_from_slice(digits.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn keys_are_sixteen_bytes_and_distinct() {
        assert_eq!(&key(42), b"key-000000000042");
        assert_ne!(key(1), key(2));
    }

    #[test]
    fn zipf_prefers_a_few_keys() {
        let chooser = KeyChooser::new(10_000);
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            *counts.entry(chooser.zipf(&mut rng)).or_insert(0usize) += 1;
        }
        let mut top: Vec<usize> = counts.values().copied().collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        let top_100: usize = top.iter().take(100).sum();
        assert!(top_100 > 40_000, "the 100 hottest keys got {top_100} of 100k picks");
        assert!(counts.keys().all(|&k| k < 10_000));
    }
}
