//! `ringkv-node`: reads its settings (flags, environment, config file), binds
//! the listener, and runs [`ringkv_node::server::serve`] until SIGINT or SIGTERM.

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: allocation was a tenth of a node's CPU
/// under load (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ringkv_node::cli::main(std::env::args_os())
}
