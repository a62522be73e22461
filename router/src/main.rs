//! `ringkv-router`: reads its settings (flags, environment, config file) and
//! runs [`ringkv_router::cli::run`].

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: allocation was a tenth of a node's CPU
/// under load (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ringkv_router::cli::main(std::env::args_os())
}
