//! `ringkv-router` under another name, built inside the tests package so the
//! integration tests can locate it (see Cargo.toml).

use std::process::ExitCode;

fn main() -> ExitCode {
    ringkv_router::cli::main(std::env::args_os())
}
