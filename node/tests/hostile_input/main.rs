//! Hostile input: every decoder of bytes that come from a client, a peer or
//! the disk, fed arbitrary bytes and mutated valid encodings. None may panic,
//! and none may hold more than `max(64 KiB, 64 × input length)` bytes at once
//! while it decodes ([`fuzz::bound_bytes`]): a decoder that trusts a length
//! prefix is a way to make a node allocate gigabytes with a few bytes.
//!
//! - [`client_requests`]: every KV and Admin request as prost decodes it (unary
//!   or as a `KV.Pipe` frame), then the checks and conversion into the op that
//!   would be proposed, its log encoding, and applying it;
//! - [`raft_payloads`]: the Raft envelopes and the postcard payloads inside
//!   them (AppendEntries, Vote, snapshot meta and vote) and the replies a
//!   sender decodes; decoded commands are applied;
//! - [`disk`]: snapshot files (with their checksum broken and fixed up), the
//!   state-machine data inside them, log entries, shard and node metadata.
//!
//! Each test runs its valid corpus and then `RINGKV_FUZZ_ITERATIONS` inputs
//! (default [`fuzz::DEFAULT_ITERATIONS`]) from a fixed seed
//! ([`fuzz::DEFAULT_SEED`]), so `cargo test` is deterministic. The seed is
//! printed on stderr at the start and in every failure; `RINGKV_FUZZ_SEED`
//! replays one, and `RINGKV_FUZZ_SEED=random` explores new inputs. Explore
//! longer with, e.g.:
//!
//! ```text
//! RINGKV_FUZZ_SEED=random RINGKV_FUZZ_ITERATIONS=1000000 \
//!     cargo test --release -p ringkv-node --test hostile_input -- --nocapture
//! ```
//!
//! A finding becomes a regression test of the decoder it hit (see
//! `crate::raft_payloads` for one), not a reason to change the seed.

mod alloc;
mod client_requests;
mod disk;
mod fuzz;
mod raft_payloads;

/// Measures what each decode allocates (see [`alloc::measure`]).
#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;
