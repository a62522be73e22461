//! Bounded chaos runs with fixed seeds: a contended workload through two routers
//! while nodes are killed, paused, partitioned and all crashed at once; then the
//! linearizability, counter, lost-write and TTL checkers and a replica
//! convergence check, and once more with membership changes (rebalance under
//! faults). Longer runs: `scripts/chaos.sh`.

use std::time::Duration;

use ringkv_tests::chaos::{ChaosConfig, run};

async fn run_and_check(seed: u64, nodes: u64, seconds: u64, rebalance: bool) {
    let mut config = ChaosConfig::new(seed, Duration::from_secs(seconds), nodes);
    if rebalance {
        config = config.with_rebalance();
    }
    let report = run(config).await;
    println!("{report}");
    assert!(report.history.len() > 500, "the workload barely ran:\n{report}");
    assert!(!report.faults.is_empty(), "the nemesis injected nothing:\n{report}");
    assert!(
        report.passed(),
        "chaos run failed (reproduce with scripts/chaos.sh --seed {seed} --nodes {nodes}{}):\n{report}",
        if rebalance { " --rebalance" } else { "" }
    );
}

/// One test, so the clusters never compete for the machine's two cores. The
/// third run also adds a node and drains nodes while the faults hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_runs_with_fixed_seeds() {
    run_and_check(1, 3, 30, false).await;
    run_and_check(2, 5, 30, false).await;
    run_and_check(3, 3, 30, true).await;
}
