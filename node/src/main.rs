//! `ringkv-node`: parses flags, binds the listener, and runs [`ringkv_node::server::serve`]
//! until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use ringkv_node::cli::NodeArgs;

fn main() -> ExitCode {
    let args = NodeArgs::parse();
    ringkv_node::cli::run(args)
}
