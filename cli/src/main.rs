//! `ringkv`: the command line of ringkv, and a multi-call binary.
//!
//! - Client commands (`get`, `put`, `del`, `touch`, `incr`, `status`, `cluster`)
//!   talk to a router or to nodes through `ringkv-client`.
//! - `ringkv dev` runs a local cluster: it starts this same executable as three
//!   `ringkv node` processes and one `ringkv router`, forms the cluster and stops
//!   them all on Ctrl-C.
//! - `ringkv node ...` and `ringkv router ...` (hidden) run a node or a router with
//!   the flags of `ringkv-node` and `ringkv-router`.
//!
//! **Why this is its own crate and not a binary of `ringkv-client`:** running a
//! node and a router makes this binary depend on `ringkv-node` and
//! `ringkv-router`. The client library must not: the router is built on the
//! client, so client → router would be a dependency cycle, and an application
//! that only wants the client would compile openraft and sled for nothing. So the
//! CLI sits on top of all three.
//!
//! This file only parses and dispatches; see the `ringkv_cli` library, and
//! `ringkv --help` for the output formats and exit statuses.

use std::io;
use std::process::ExitCode;

use clap::Parser;
use ringkv_cli::args::{Cli, ClientArgs, Command};
use ringkv_cli::output::{EXIT_OTHER, EXIT_USAGE};
use ringkv_cli::{commands, dev, router};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: allocation was a tenth of a node's CPU
/// under load (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `ringkv node ...` / `ringkv router ...` go to the server's own parser
    // untouched: through `Cli`, a server flag that is also a global client
    // option (`--tls-ca`, `--addr`) would be taken by the CLI when it comes
    // first.
    let mut argv = std::env::args_os();
    let _program = argv.next();
    let rest: Vec<std::ffi::OsString> = argv.collect();
    match rest.first().and_then(|a| a.to_str()) {
        Some("node") => return ringkv_node::cli::main(server_argv("ringkv node", rest[1..].to_vec())),
        Some("router") => return router::cli::main(server_argv("ringkv router", rest[1..].to_vec())),
        _ => {}
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with status 0; usage errors to stderr
            // with status 2.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    match cli.command {
        // The node and the router set up their own logging and runtime.
        Command::Node(server) => ringkv_node::cli::main(server_argv("ringkv node", server.args)),
        Command::Router(server) => router::cli::main(server_argv("ringkv router", server.args)),
        Command::Dev(args) => {
            init_logging();
            dev::run(args)
        }
        command => {
            init_logging();
            run_client_command(cli.client, command)
        }
    }
}

/// The argument list a server's own parser expects: its name, then its arguments.
fn server_argv(name: &str, args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    std::iter::once(name.into()).chain(args).collect()
}

fn run_client_command(args: ClientArgs, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_OTHER);
        }
    };
    match runtime.block_on(commands::run(args, command, &mut io::stdout(), &mut io::stderr())) {
        Ok(exit) => ExitCode::from(exit),
        Err(failure) => {
            eprint!("{}", failure.render());
            ExitCode::from(failure.exit)
        }
    }
}

/// Warnings only by default, on stderr, so stdout stays the answer.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
}
