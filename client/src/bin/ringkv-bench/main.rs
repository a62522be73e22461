//! `ringkv-bench`: the same closed-loop workloads against ringkv (through a
//! router, or straight through the client library), etcd and Redis, with
//! latency histograms; a table on stdout and optionally JSON.
//!
//! ```text
//! ringkv-bench --target ringkv-router=127.0.0.1:7000 --target etcd=127.0.0.1:2379 \
//!     --workload write,read --concurrency 1,16,64,256 --duration 10 --warmup 2
//! ```
//!
//! Each worker keeps one request outstanding (closed loop). For every workload
//! and concurrency the targets run one after another (alternating, so drift in
//! the machine's state hits them alike); each run warms up, then measures for
//! `--duration`. Keys are 16 bytes (`key-000000000042`), values `--value-bytes`;
//! `--preload` writes every key once before the first run.

mod etcd;
mod report;
mod targets;
mod workloads;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;

use report::RunResult;
use targets::{Target, TargetSpec};
use workloads::{KeyChooser, OpKind, Workload, key};

#[derive(Debug, Parser)]
#[command(about = "Closed-loop benchmark of ringkv, etcd and Redis with the same workloads")]
struct Args {
    /// KIND[:LABEL]=ADDR[,ADDR]: ringkv-router, ringkv-direct (node addresses),
    /// etcd (leader first), redis. Repeat for several targets.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Comma-separated: write, read, stale-read, ycsb-a, ycsb-b, sessions, hot-key.
    #[arg(long, default_value = "write,read")]
    workload: String,
    /// Comma-separated concurrencies (outstanding requests).
    #[arg(long, default_value = "1,16,64,256")]
    concurrency: String,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds per run (not measured).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Write every key once before the runs (so reads find values).
    #[arg(long)]
    preload: bool,
    /// Also write the results as a JSON array to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Also write the results as Markdown tables (with ratios of ringkv's
    /// throughput to every other target's) to this file.
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// File holding the bearer token ringkv targets require (their KV token).
    #[arg(long, env = "RINGKV_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// CA bundle (PEM) that signed the ringkv targets' certificates: connect
    /// to them with TLS.
    #[arg(long, env = "RINGKV_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
}

fn list<T>(text: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    text.split(',').filter(|s| !s.is_empty()).map(|s| parse(s.trim())).collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let workloads = list(&args.workload, Workload::parse)?;
    let concurrencies =
        list(&args.concurrency, |c| c.parse::<usize>().map_err(|e| format!("concurrency {c:?}: {e}")))?;
    let credentials =
        ringkv_client::Credentials::from_files(args.token_file.as_deref(), args.tls_ca.as_deref())?;
    let mut targets = Vec::new();
    for spec in &args.targets {
        let (label, spec) = TargetSpec::parse(spec)?;
        let target = Target::connect(&spec, &credentials).await?;
        targets.push((label, Arc::new(target)));
    }
    let value = vec![b'v'; args.value_bytes];
    let keys = Arc::new(KeyChooser::new(args.keys));
    if args.preload {
        for (label, target) in &targets {
            let started = Instant::now();
            preload(target, args.keys, &value).await.map_err(|e| format!("preloading {label}: {e}"))?;
            eprintln!("preloaded {} keys into {label} in {:.1?}", args.keys, started.elapsed());
        }
    }
    println!("{}", RunResult::header());
    let mut results = Vec::new();
    for &workload in &workloads {
        for &concurrency in &concurrencies {
            for (label, target) in &targets {
                let timing = (Duration::from_secs(args.warmup), Duration::from_secs(args.duration));
                target.prepare().await.map_err(|e| format!("preparing {label}: {e}"))?;
                let result = measure(label, target, workload, concurrency, timing, &keys, &value).await?;
                println!("{}", result.row());
                results.push(result);
            }
        }
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report::markdown(&results))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::Value::Array(results.iter().map(RunResult::json).collect());
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Writes every key once, 64 at a time.
async fn preload(target: &Arc<Target>, keys: usize, value: &[u8]) -> Result<(), String> {
    let writers: Vec<_> = (0..64)
        .map(|w| {
            let (target, value) = (target.clone(), value.to_vec());
            tokio::spawn(async move {
                let mut conn = target.conn(w).await?;
                for i in (w..keys).step_by(64) {
                    conn.put(&key(i), &value, false).await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// One closed-loop run: `concurrency` workers for warm-up + duration; only the
/// operations that complete inside the measured window count.
async fn measure(
    label: &str,
    target: &Arc<Target>,
    workload: Workload,
    concurrency: usize,
    (warmup, duration): (Duration, Duration),
    keys: &Arc<KeyChooser>,
    value: &[u8],
) -> Result<RunResult, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let measure_from = Instant::now() + warmup;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let mut conn = target.conn(w).await?;
        let (stop, keys, value) = (stop.clone(), keys.clone(), value.to_vec());
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w as u64);
            let mut latency = Histogram::<u64>::new(3).expect("histogram");
            let (mut errors, mut first_error) = (0u64, None);
            while !stop.load(Ordering::Relaxed) {
                let (op, index) = workload.next(&mut rng, &keys);
                let key = key(index);
                let started = Instant::now();
                let result = match op {
                    OpKind::Put => conn.put(&key, &value, false).await,
                    OpKind::PutTtl => conn.put(&key, &value, true).await,
                    OpKind::Get => conn.get(&key, false).await,
                    OpKind::StaleGet => conn.get(&key, true).await,
                    OpKind::GetRefresh => conn.get_refresh(&key).await,
                    OpKind::Delete => conn.delete(&key).await,
                };
                if started < measure_from {
                    continue;
                }
                match result {
                    Ok(()) => {
                        let micros = started.elapsed().as_micros().max(1) as u64;
                        // `record` grows the (auto-resizing) histogram;
                        // `saturating_record` would clamp to its initial range.
                        latency.record(micros).expect("an auto-resizing histogram takes any value");
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latency, errors, first_error)
        }));
    }
    tokio::time::sleep_until((measure_from + duration).into()).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = measure_from.elapsed();
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let (mut errors, mut first_error) = (0, None);
    for worker in workers {
        let (h, e, first) = worker.await.map_err(|e| e.to_string())?;
        latency.add(h).map_err(|e| e.to_string())?;
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    Ok(RunResult {
        target: label.to_string(),
        workload: workload.name(),
        concurrency,
        elapsed,
        latency,
        errors,
        first_error,
    })
}
