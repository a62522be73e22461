//! `ringkv-router`: parses flags and runs [`ringkv_router::cli::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ringkv_router::cli::run(ringkv_router::cli::RouterArgs::parse())
}
