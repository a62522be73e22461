//! The fuzzing loop: seeded inputs — random bytes, and valid encodings
//! mutated the ways decoders get hurt — fed to one decoder, which must neither
//! panic nor allocate more than [`bound_bytes`] of its input's length.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::alloc::{Usage, measure};

/// Inputs per decoder when `RINGKV_FUZZ_ITERATIONS` is not set: enough to get
/// past every decoder's first checks, small enough that the whole suite (18
/// decoders) takes about 6 s of a debug build on one core.
pub const DEFAULT_ITERATIONS: u64 = 20_000;

/// Every decoder may hold `max(64 KiB, 64 × input length)` bytes at once
/// while it decodes (and checks) one input: linear in what it was given,
/// whatever a length prefix inside claims. 64 × covers the widest in-memory
/// form of the densest encoding (a snapshot of one-byte keys in a `BTreeMap`
/// with its indexes); a decoder that trusts a length prefix and allocates
/// ahead exceeds it by orders of magnitude.
pub fn bound_bytes(input_len: usize) -> usize {
    (64 << 10).max(64 * input_len)
}

/// The seed `cargo test` runs with: a plain test run is deterministic, so a
/// failure in CI is a finding that reproduces, never a flake. New inputs are
/// explored on purpose, with `RINGKV_FUZZ_SEED=random`.
pub const DEFAULT_SEED: u64 = 0x5eed_2026_1127;

/// The seed of this run: `RINGKV_FUZZ_SEED` (a number, or `random` for a
/// fresh one), else [`DEFAULT_SEED`].
fn seed() -> u64 {
    match std::env::var("RINGKV_FUZZ_SEED") {
        Ok(seed) if seed.trim() == "random" => rand::rng().next_u64(),
        Ok(seed) => seed.trim().parse().expect("RINGKV_FUZZ_SEED is a u64 or `random`"),
        Err(_) => DEFAULT_SEED,
    }
}

fn iterations() -> u64 {
    match std::env::var("RINGKV_FUZZ_ITERATIONS") {
        Ok(n) => n.trim().parse().expect("RINGKV_FUZZ_ITERATIONS is a number"),
        Err(_) => DEFAULT_ITERATIONS,
    }
}

/// Feeds `decode` its valid `corpus` and then [`iterations`] seeded inputs.
/// `decode` returns whether the input was accepted; every corpus entry must
/// be. Fails with the seed, the iteration and the input on a panic or on an
/// allocation over [`bound_bytes`].
pub fn fuzz(target: &str, corpus: &[Vec<u8>], decode: impl Fn(&[u8]) -> bool) {
    assert!(!corpus.is_empty(), "{target}: empty corpus");
    let seed = seed();
    // Written past the test harness's capture: an abort (a stack overflow, a
    // failed allocation) loses captured output, and the seed must survive it.
    let _ = writeln!(std::io::stderr(), "hostile_input {target}: RINGKV_FUZZ_SEED={seed}");
    for (i, valid) in corpus.iter().enumerate() {
        let (accepted, _) = check(target, seed, &format!("corpus entry {i}"), valid, &decode);
        assert!(accepted, "{target}: corpus entry {i} was refused: {}", hex(valid));
    }
    let mut hasher = DefaultHasher::new();
    target.hash(&mut hasher);
    let mut rng = StdRng::seed_from_u64(seed ^ hasher.finish());
    let (mut accepted, mut most_held, iterations) = (0u64, 0f64, iterations());
    for i in 0..iterations {
        let input = generate(&mut rng, corpus);
        let (ok, usage) = check(target, seed, &format!("iteration {i}"), &input, &decode);
        accepted += u64::from(ok);
        most_held = most_held.max(usage.peak_bytes as f64 / bound_bytes(input.len()) as f64);
    }
    println!(
        "{target}: {iterations} inputs, {accepted} accepted, at most {:.1} % of the allocation bound \
         (seed {seed})",
        most_held * 100.0
    );
}

/// Runs one input; panics with everything needed to reproduce on a failure.
fn check(
    target: &str,
    seed: u64,
    which: &str,
    input: &[u8],
    decode: &impl Fn(&[u8]) -> bool,
) -> (bool, Usage) {
    let outcome = catch_unwind(AssertUnwindSafe(|| measure(|| decode(input))));
    let (accepted, usage) = match outcome {
        Ok(measured) => measured,
        Err(_) => panic!(
            "{target}: decoding panicked at {which} (RINGKV_FUZZ_SEED={seed}); input ({} bytes): {}",
            input.len(),
            hex(input)
        ),
    };
    let Usage { peak_bytes, largest_bytes } = usage;
    let bound = bound_bytes(input.len());
    assert!(
        peak_bytes <= bound,
        "{target}: decoding {} bytes held {peak_bytes} bytes at once (largest allocation \
         {largest_bytes}), over the bound of {bound}, at {which} (RINGKV_FUZZ_SEED={seed}); input: {}",
        input.len(),
        hex(input)
    );
    (accepted, usage)
}

fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 512;
    let shown: String = bytes.iter().take(SHOWN).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > SHOWN { format!("{shown}… ({} more bytes)", bytes.len() - SHOWN) } else { shown }
}

/// One input: a fifth random bytes, the rest a corpus entry mutated 1–4 times.
fn generate(rng: &mut StdRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    if rng.random_ratio(1, 5) {
        let len = match rng.random_range(0..10) {
            0..=5 => rng.random_range(0..32),
            6..=8 => rng.random_range(0..512),
            _ => rng.random_range(0..8192),
        };
        let mut bytes = vec![0; len];
        rng.fill_bytes(&mut bytes);
        return bytes;
    }
    let mut bytes = corpus[rng.random_range(0..corpus.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        mutate(rng, &mut bytes, corpus);
    }
    bytes
}

/// Varints that claim a huge length or count (u32::MAX, u64::MAX, overlong
/// encodings, an overflowing tenth byte) or a merely large one.
const BIG_VARINTS: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    &[0x80, 0x80, 0x80, 0x80, 0x10],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
    &[0xff, 0xff, 0x03],
    &[0x80, 0x80, 0x80, 0x02],
];

/// Fixed-width integers (little-endian) for length and count fields.
const BIG_FIXED: &[u64] = &[u64::MAX, u32::MAX as u64, 1 << 31, 1 << 32, 1 << 20, 0];

fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = bytes.len();
    let at = rng.random_range(0..=len);
    match rng.random_range(0..9) {
        // Flip one bit.
        0 if len > 0 => bytes[at.min(len - 1)] ^= 1 << rng.random_range(0..8),
        // An edge value in one byte (enum tags, varint continuation bits).
        1 if len > 0 => bytes[at.min(len - 1)] = [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff][rng.random_range(0..6)],
        // Truncate.
        2 => bytes.truncate(at),
        // Splice: this entry's head, another's tail.
        3 => {
            let other = &corpus[rng.random_range(0..corpus.len())];
            let from = rng.random_range(0..=other.len());
            bytes.truncate(at);
            bytes.extend_from_slice(&other[from..]);
        }
        // Insert random bytes.
        4 => {
            let mut extra = vec![0; rng.random_range(1..=8)];
            rng.fill_bytes(&mut extra);
            bytes.splice(at..at, extra);
        }
        // Delete a range.
        5 => {
            let end = rng.random_range(at..=len.min(at + 16));
            bytes.drain(at..end);
        }
        // Inflate a length or count: replace one byte with a huge varint.
        6 => {
            let varint = BIG_VARINTS[rng.random_range(0..BIG_VARINTS.len())];
            let end = (at + 1).min(len);
            bytes.splice(at..end, varint.iter().copied());
        }
        // Overwrite a 4- or 8-byte little-endian integer (fixed-width headers).
        7 => {
            let value = BIG_FIXED[rng.random_range(0..BIG_FIXED.len())].to_le_bytes();
            let width = if rng.random_bool(0.5) { 4 } else { 8 };
            let end = (at + width).min(len);
            bytes.splice(at..end, value[..width].iter().copied());
        }
        // Repeat a range: a list with more elements than it says, or (now
        // and then thousands of times) nesting deep enough to find recursion.
        _ => {
            let end = rng.random_range(at..=len.min(at + 32));
            let chunk = bytes[at..end].to_vec();
            let times =
                if rng.random_ratio(1, 16) { rng.random_range(1..=4096) } else { rng.random_range(1..=4) };
            for _ in 0..times {
                bytes.splice(end..end, chunk.iter().copied());
            }
        }
    }
}

/// The harness itself: a decoder that trusts a length prefix, or panics, is
/// caught (else a passing run would prove nothing).
#[cfg(test)]
mod tests {
    use super::fuzz;

    /// Allocates what the first four bytes claim (up to 16 MiB).
    fn trusting_decoder(bytes: &[u8]) -> bool {
        let claimed = bytes.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        let buffer: Vec<u8> = Vec::with_capacity((claimed as usize).min(16 << 20));
        std::hint::black_box(buffer);
        true
    }

    #[test]
    #[should_panic(expected = "over the bound")]
    fn a_decoder_trusting_a_length_prefix_is_caught() {
        fuzz("a trusting decoder", &[vec![1, 0, 0, 0]], trusting_decoder);
    }

    #[test]
    #[should_panic(expected = "decoding panicked")]
    fn a_panicking_decoder_is_caught() {
        fuzz("a panicking decoder", &[vec![1]], |bytes| bytes[0] == 1);
    }
}
