//! `ringkv-chaos`: one chaos run from the command line (see `scripts/chaos.sh`).
//! Exits 0 when every checker passed and every replica converged.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringkv_tests::chaos::{ChaosConfig, run};

/// Runs a workload through routers while faults are injected, then checks the
/// history for linearizability, lost writes, counters, TTLs and divergence.
#[derive(Debug, Parser)]
struct Args {
    /// Length of the faulty phase, in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seed of the workload and the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of nodes (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Also grow the cluster by a node and drain nodes while the faults hit
    /// (rebalance under faults).
    #[arg(long)]
    rebalance: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if ![3, 5].contains(&args.nodes) {
        eprintln!("error: --nodes must be 3 or 5");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let mut config = ChaosConfig::new(args.seed, Duration::from_secs(args.duration), args.nodes);
    if args.rebalance {
        config = config.with_rebalance();
    }
    let report = runtime.block_on(run(config));
    println!("{report}");
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
