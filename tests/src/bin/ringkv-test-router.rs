//! `ringkv-router` under another name, built inside the tests package so the
//! integration tests can locate it (see Cargo.toml).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ringkv_router::cli::run(ringkv_router::cli::RouterArgs::parse())
}
