//! # ringkv-cli
//!
//! The `ringkv` command line. `main.rs` parses and dispatches; everything else is
//! here so that it is tested without starting a process:
//!
//! - [`args`]: the clap definition and the parsers of addresses, durations
//!   (`30s`, `1500ms`, `5m`, `2h`, `1d`, bare milliseconds) and node lists.
//! - [`commands`]: the client commands (`get`, `put`, `del`, `touch`, `incr`,
//!   `status`, `cluster init`) and the operator commands under `ringkv admin`
//!   (add-node, rebalance, drain, remove-node, transfer-leader,
//!   balance-leaders) run with `ringkv-client`.
//! - [`backup`]: `ringkv admin backup` / `restore`: shard files, the
//!   manifest, and the two procedures.
//! - [`output`]: every text `ringkv` prints and every exit status, as pure
//!   functions (golden-tested in `tests/golden.rs`); [`rebalance_output`] the
//!   same for the admin commands: the dry-run plan and a rebalance's progress.
//! - [`dev`]: `ringkv dev`, a local 3-node cluster plus router as child processes.
//! - [`router`]: what `ringkv router` runs (the `ringkv-router` command line).
//!
//! ## One binary, many roles
//!
//! `ringkv` is a multi-call binary: besides the client commands it runs a node
//! (`ringkv node`, the flags of `ringkv-node`) and a router (`ringkv router`),
//! both hidden from `--help`. That is what lets `ringkv dev` start a whole cluster
//! from the one executable a newcomer has built, by re-running itself. It is also
//! why the CLI is its own crate: it depends on the node and the router, and the
//! client library must not (the router is built on the client, and applications
//! using the client should not compile openraft and sled).
//!
//! ## Exit statuses
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | done: found, written, deleted |
//! | 1 | negative answer: key not found, condition failed |
//! | 2 | usage error or invalid argument |
//! | 3 | unavailable: no connection, no quorum or leader, deadline exceeded |
//! | 4 | failed precondition: incr of a non-integer, cluster already initialized |
//! | 5 | any other error |
//!
//! Errors are one `error: <message>` line on stderr, sometimes followed by a
//! `hint: ...` line; never a `Debug` dump.
//!
//! ## Caveats / not done yet
//!
//! - `router::AVAILABLE` and the branches on it in `dev` date from before the
//!   router existed; they are always taken now and can go.
//! - `admin rebalance` commits the plan of the map as it is when the command
//!   runs; `--expected-epoch` (printed by `--dry-run`) pins it to the plan that
//!   was reviewed.
//! - Values are taken from the command line only (no stdin, no files).

pub mod args;
pub mod backup;
pub mod commands;
pub mod dev;
pub mod output;
pub mod rebalance_output;
pub mod router;
