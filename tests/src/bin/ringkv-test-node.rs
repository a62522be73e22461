//! `ringkv-node` under another name, built inside the tests package so the
//! integration tests can locate it (see Cargo.toml).

use std::process::ExitCode;

/// The production node's allocator, so benchmarks on test clusters measure
/// what operators run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ringkv_node::cli::main(std::env::args_os())
}
