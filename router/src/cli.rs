//! The `ringkv-router` command line: settings (flags, `RINGKV_*` environment
//! variables, a TOML file; see `ringkv_settings`) → [`RouterConfig`], logging,
//! and the process lifecycle (bind, serve, stop on SIGINT/SIGTERM or stdin EOF).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::server::RouterConfig;

/// The stateless front door of a ringkv cluster: one gRPC endpoint for the `KV`
/// and `Admin` services that forwards each request to its shard's leader.
#[derive(Debug, Parser)]
#[command(name = "ringkv-router", version, after_help = ringkv_settings::HELP)]
pub struct RouterArgs {
    /// TOML file of settings: each key is a flag's name without `--`
    /// (`nodes = ["10.0.0.1:7001"]`). A flag beats its environment variable,
    /// which beats the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings (as a config file, each with where it came
    /// from) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address to listen on (host:port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Node addresses to learn the cluster from, comma-separated (any subset).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Deadline of each forwarded request in milliseconds, retries included.
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Largest value forwarded, in bytes (keep equal to the nodes' limit).
    #[arg(long, default_value_t = ringkv_core::limits::DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// Largest request (gRPC message) accepted from clients and routers, in
    /// bytes; larger ones are refused with RESOURCE_EXHAUSTED. At least
    /// --max-value-bytes + 8 KiB [default: the larger of 4 MiB and that]
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// HTTP/2 streams (calls, watches, subscriptions) one client connection may
    /// have open at once; more wait for a free one.
    #[arg(long, default_value_t = crate::server::DEFAULT_MAX_STREAMS_PER_CONNECTION,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics (host:port); off when
    /// not given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
    /// Shut down when standard input reaches end-of-file (used by `ringkv dev`
    /// and tests so routers never outlive their supervisor).
    #[arg(long, hide = true)]
    pub stop_on_stdin_eof: bool,
    #[command(flatten)]
    pub security: ringkv_security::SecuritySettings,
}

/// Runs `ringkv-router` with this argument list (program name first): parses
/// the settings, prints them or an error if asked or wrong, else runs it.
pub fn main(argv: impl IntoIterator<Item = OsString>) -> ExitCode {
    let loaded = match ringkv_settings::parse_or_report::<RouterArgs, _, _>(argv) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if loaded.settings.request_timeout_ms == 0 {
        eprintln!("error: --request-timeout-ms must be greater than 0");
        return ExitCode::from(2);
    }
    let min_request = ringkv_core::limits::min_request_bytes(loaded.settings.max_value_bytes);
    if let Some(max_request) = loaded.settings.max_request_bytes
        && max_request < min_request
    {
        eprintln!(
            "error: --max-request-bytes ({max_request}) must be at least {min_request}: --max-value-bytes plus \
             the longest key and framing"
        );
        return ExitCode::from(2);
    }
    if loaded.settings.print_config {
        print!("{}", ringkv_settings::render(&loaded.effective, SECRET_SETTINGS));
        return ExitCode::SUCCESS;
    }
    run(loaded.settings)
}

/// Settings whose values `--print-config` never shows.
pub const SECRET_SETTINGS: &[&str] = &["-token"];

/// Runs the router process to completion.
pub fn run(args: RouterArgs) -> ExitCode {
    init_logging(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(args));
    // Do not wait on a blocking stdin read.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: RouterArgs) -> Result<(), String> {
    let security = args.security.load()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let mut config = RouterConfig::new(args.nodes.clone());
    config.request_timeout = Duration::from_millis(args.request_timeout_ms);
    config.max_value_bytes = args.max_value_bytes;
    config.max_request_bytes = args
        .max_request_bytes
        .unwrap_or_else(|| ringkv_core::limits::default_request_bytes(args.max_value_bytes));
    config.max_streams_per_connection = args.max_streams_per_connection;
    config.metrics_listen = args.metrics_listen.clone();
    config.security = security;
    let stop_on_eof = args.stop_on_stdin_eof;
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stdin_closed(), if stop_on_eof => {}
        }
    };
    crate::server::serve(listener, config, shutdown).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Resolves when standard input is closed (or unreadable).
async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
