//! The router behind `ringkv router`.
//!
//! STUB until ringkv-router lands: the router crate is being written in parallel
//! and will expose `ringkv_router::cli::{RouterArgs, run}` with exactly this shape.
//! At merge this whole file becomes:
//!
//! ```text
//! pub use ringkv_router::cli;
//! pub const AVAILABLE: bool = true;
//! ```
//!
//! (plus `ringkv-router.workspace = true` in cli/Cargo.toml).

/// Whether `ringkv router` really runs a router. While it does not, `ringkv dev`
/// starts no router and hands out the nodes' addresses as its endpoint.
pub const AVAILABLE: bool = false;

// STUB until ringkv-router lands
pub mod cli {
    use std::process::ExitCode;

    use clap::Parser;

    /// A ringkv router (not built yet: this is a placeholder).
    #[derive(Debug, Parser)]
    #[command(name = "ringkv-router")]
    pub struct RouterArgs {
        /// Address to listen on for clients (host:port).
        #[arg(long, default_value = "127.0.0.1:7000")]
        pub listen: String,
        /// Seed node addresses, comma-separated.
        #[arg(long, value_delimiter = ',')]
        pub nodes: Vec<String>,
        /// Shut down when standard input reaches end-of-file.
        #[arg(long, hide = true)]
        pub stop_on_stdin_eof: bool,
    }

    /// Runs nothing: the router is not built into this `ringkv` yet.
    pub fn run(args: RouterArgs) -> ExitCode {
        eprintln!(
            "error: the router is not built into this ringkv yet; cannot listen on {} \
             (talk to the nodes {} directly)",
            args.listen,
            args.nodes.join(",")
        );
        ExitCode::from(5)
    }
}
