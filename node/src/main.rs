//! `ringkv-node`: parses flags, binds the listener, and runs [`ringkv_node::server::serve`]
//! until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use ringkv_node::cli::NodeArgs;

/// mimalloc instead of glibc malloc: allocation was a tenth of a node's CPU
/// under load (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = NodeArgs::parse();
    ringkv_node::cli::run(args)
}
