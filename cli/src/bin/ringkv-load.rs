//! `ringkv-load`: a small closed-loop load generator over [`ringkv_client::Client`].
//!
//! `--concurrency N` tasks each keep exactly one request outstanding: send, wait for
//! the answer, send the next. Keys are `key%013d`, drawn uniformly from
//! `0..--keyspace`. The run is a warm-up (`--warmup-s`) followed by a measurement
//! window (`--duration-s`); only requests that *complete* inside the window count.
//! A request still in flight when the window closes is abandoned (dropped, which
//! cancels it) and not counted (`in_flight_at_end`), so a run never outlasts its
//! warm-up plus window (plus at most 3 s to learn the routes first).
//! `--max-ops` also ends the window early once that many requests have completed
//! in it (successes and errors alike).
//!
//! With `--preload`, every key is first written once (with the same concurrency)
//! so that `get` finds data; for `--op incr` the preloaded value is `0` so the
//! counters are integers. `--preload-only` stops after the preload.
//!
//! Output on stdout: one human-readable line, then one JSON line (fixed field
//! names, numbers in ms or ops/s). Progress and the first error seen go to stderr.
//! Errors never abort the run: they are counted (`errors`) and excluded from the
//! latency percentiles. Exit status: 0 when at least one request succeeded (or the
//! preload-only run wrote every key), 1 otherwise, 2 on a usage error.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use ringkv_client::{Client, ClientOptions, Consistency, Error, PutOptions};
use ringkv_core::limits::DEFAULT_MAX_VALUE_BYTES;
use tokio::time::Instant;

/// Closed-loop load generator for ringkv: N tasks, one request outstanding each.
#[derive(Debug, Parser)]
#[command(name = "ringkv-load", version)]
struct Args {
    /// Node or router addresses (host:port), comma-separated.
    #[arg(
        long,
        env = "RINGKV_ADDR",
        value_delimiter = ',',
        value_name = "ADDR[,ADDR...]",
        default_value = "127.0.0.1:7001"
    )]
    addr: Vec<String>,
    /// Operation to run: put (unconditional, --value-size bytes), get, or incr (+1).
    #[arg(long, value_enum, default_value_t = OpKind::Put)]
    op: OpKind,
    /// Concurrent tasks, each with one request outstanding.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Length of the measurement window in seconds.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    duration_s: f64,
    /// Warm-up before the window, in seconds; requests completing in it do not count.
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    warmup_s: f64,
    /// Number of distinct keys (key0000000000000 ...).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000_000_000))]
    keyspace: u64,
    /// Value size in bytes for put and preload.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Write every key once before measuring (with --concurrency tasks).
    #[arg(long)]
    preload: bool,
    /// Only preload (implies --preload); no measurement.
    #[arg(long)]
    preload_only: bool,
    /// Give up the preload after this many seconds.
    #[arg(long, default_value_t = 600.0, value_parser = parse_seconds)]
    preload_timeout_s: f64,
    /// End the window once this many requests completed in it.
    #[arg(long)]
    max_ops: Option<u64>,
    /// Stale reads for --op get (any replica answers) instead of linearizable ones.
    #[arg(long)]
    stale: bool,
    /// Per-request deadline in milliseconds (retries included).
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// Seed of the key choice (each task derives its own stream from it).
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
    /// File holding the bearer token of a cluster that requires one (its KV token).
    #[arg(long, env = "RINGKV_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// CA bundle (PEM) that signed the cluster's certificates: connect with TLS.
    #[arg(long, env = "RINGKV_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OpKind {
    Put,
    Get,
    Incr,
}

impl OpKind {
    fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Incr => "incr",
        }
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s} must be between 0 and 86400 seconds"));
    }
    Ok(secs)
}

fn key_of(i: u64) -> Bytes {
    Bytes::from(format!("key{i:013}"))
}

/// splitmix64: a tiny, good-enough PRNG for picking keys (no extra crate).
struct KeyRng(u64);

impl KeyRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by 128-bit multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// What one operation did, errors included.
enum Outcome {
    Done,
    NotFound,
    Failed(Error),
}

async fn run_op(client: &Client, op: OpKind, key: Bytes, value: &Bytes, consistency: Consistency) -> Outcome {
    let result = match op {
        OpKind::Put => client.put(key, value.clone(), PutOptions::default()).await.map(|_| true),
        OpKind::Get => client.get(key, consistency).await.map(|got| got.is_some()),
        OpKind::Incr => client.increment(key, 1, 0).await.map(|_| true),
    };
    match result {
        Ok(true) => Outcome::Done,
        Ok(false) => Outcome::NotFound,
        Err(err) => Outcome::Failed(err),
    }
}

/// State shared by the tasks of one phase.
struct Shared {
    /// Requests completed inside the window (successes and errors), for --max-ops.
    completed: AtomicU64,
    /// Set once --max-ops is reached: every task stops issuing.
    stop: AtomicBool,
    /// When the --max-ops-th request completed, in µs after the window opened.
    stopped_at_us: AtomicU64,
    /// The first error seen, to show what kind of errors were counted.
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            completed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stopped_at_us: AtomicU64::new(u64::MAX),
            first_error: Mutex::new(None),
        }
    }

    fn note_error(&self, err: &Error) {
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(err.to_string());
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }
}

/// One task's counts; latencies are of successful requests, in µs.
#[derive(Default)]
struct TaskStats {
    latencies_us: Vec<u32>,
    errors: u64,
    not_found: u64,
    warmup_ops: u64,
    warmup_errors: u64,
    /// Requests still in flight when the window closed (abandoned, not counted).
    abandoned: u64,
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

struct Plan {
    op: OpKind,
    keyspace: u64,
    value: Bytes,
    consistency: Consistency,
    max_ops: u64,
}

/// One closed-loop task: issues requests until the window closes or --max-ops is
/// reached. A request in flight at the end of the window is dropped (cancelled).
async fn worker(
    client: Client,
    plan: Arc<Plan>,
    window: Window,
    shared: Arc<Shared>,
    seed: u64,
) -> TaskStats {
    let mut rng = KeyRng(seed);
    let mut stats = TaskStats::default();
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= window.end {
            break;
        }
        let key = key_of(rng.below(plan.keyspace));
        let sent = Instant::now();
        let request = run_op(&client, plan.op, key, &plan.value, plan.consistency);
        let Ok(outcome) = tokio::time::timeout_at(window.end, request).await else {
            stats.abandoned += 1; // still in flight when the window closed: not counted
            break;
        };
        let done = Instant::now();
        if done < window.start {
            match outcome {
                Outcome::Failed(err) => {
                    stats.warmup_errors += 1;
                    shared.note_error(&err);
                }
                Outcome::Done | Outcome::NotFound => stats.warmup_ops += 1,
            }
            continue;
        }
        if done > window.end {
            break;
        }
        let n = shared.completed.fetch_add(1, Ordering::Relaxed) + 1;
        if n > plan.max_ops {
            break; // another task completed the last counted request first
        }
        match outcome {
            Outcome::Failed(err) => {
                stats.errors += 1;
                shared.note_error(&err);
            }
            outcome => {
                if matches!(outcome, Outcome::NotFound) {
                    stats.not_found += 1;
                }
                let us = done.duration_since(sent).as_micros();
                stats.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        }
        if n == plan.max_ops {
            let at = done.duration_since(window.start).as_micros();
            shared.stopped_at_us.store(u64::try_from(at).unwrap_or(u64::MAX - 1), Ordering::Relaxed);
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
    }
    stats
}

struct PreloadStats {
    written: u64,
    errors: u64,
    seconds: f64,
    first_error: Option<String>,
}

/// Writes every key once, `concurrency` at a time. A failed put is retried (a put
/// of the same value is idempotent) up to three times in all.
async fn preload(client: &Client, args: &Args, value: Bytes) -> PreloadStats {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.preload_timeout_s);
    let next = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Shared::new());
    let keyspace = args.keyspace;
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, value) = (client.clone(), value.clone());
        let (next, written, shared) = (next.clone(), written.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keyspace || Instant::now() >= deadline {
                    break;
                }
                let mut ok = false;
                for _ in 0..3 {
                    let put = client.put(key_of(i), value.clone(), PutOptions::default());
                    match tokio::time::timeout_at(deadline, put).await {
                        Ok(Ok(_)) => {
                            ok = true;
                            break;
                        }
                        Ok(Err(err)) => shared.note_error(&err),
                        Err(_) => break,
                    }
                }
                if ok {
                    written.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors += 1;
                }
            }
            errors
        }));
    }
    let progress = {
        let written = written.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let done = written.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprintln!("preload: {done}/{keyspace} keys in {secs:.1} s");
            }
        })
    };
    let mut errors = 0;
    for task in tasks {
        errors += task.await.unwrap_or(0);
    }
    progress.abort();
    let written = written.load(Ordering::Relaxed);
    // Keys never attempted (deadline) count as errors too.
    let errors = errors.max(keyspace.saturating_sub(written));
    PreloadStats {
        written,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        first_error: shared.first_error(),
    }
}

/// Nearest-rank percentile of sorted latencies, in ms.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[index]) / 1000.0
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt_str(s: &Option<String>) -> String {
    s.as_deref().map_or_else(|| "null".to_string(), json_str)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args));
    // Abandoned requests must not hold the process open.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run(args: Args) -> ExitCode {
    let credentials =
        match ringkv_client::Credentials::from_files(args.token_file.as_deref(), args.tls_ca.as_deref()) {
            Ok(credentials) => credentials,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        };
    let opts = ClientOptions {
        credentials,
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
        // Let the nodes judge a large value, not a local default.
        max_value_bytes: args.value_size.max(DEFAULT_MAX_VALUE_BYTES),
        ..ClientOptions::default()
    };
    let client = match Client::connect(args.addr.clone(), opts) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    // Learn the shard count and leaders so requests go straight to shard leaders.
    match tokio::time::timeout(Duration::from_secs(3), client.refresh_routes()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            eprintln!("warning: cannot learn the cluster's routes ({err}); going on with redirects")
        }
        Err(_) => eprintln!("warning: no cluster status within 3 s; going on with redirects"),
    }

    let value = match args.op {
        OpKind::Incr => Bytes::from_static(b"0"),
        _ => Bytes::from(vec![b'v'; args.value_size]),
    };
    let preloaded = if args.preload || args.preload_only {
        eprintln!("preload: writing {} keys with {} tasks", args.keyspace, args.concurrency);
        let stats = preload(&client, &args, value.clone()).await;
        eprintln!(
            "preload: {} keys written in {:.2} s ({:.0} keys/s), {} failed{}",
            stats.written,
            stats.seconds,
            stats.written as f64 / stats.seconds.max(1e-9),
            stats.errors,
            stats.first_error.as_deref().map(|e| format!("; first error: {e}")).unwrap_or_default()
        );
        Some(stats)
    } else {
        None
    };
    let (pre_keys, pre_s, pre_errors) =
        preloaded.as_ref().map_or((0, 0.0, 0), |stats| (stats.written, stats.seconds, stats.errors));
    if args.preload_only {
        let line = format!(
            "{{\"op\":\"preload\",\"addr\":{},\"concurrency\":{},\"keyspace\":{},\"value_size\":{},\
             \"preload_keys\":{pre_keys},\"preload_s\":{pre_s:.3},\"preload_errors\":{pre_errors}}}",
            json_str(&args.addr.join(",")),
            args.concurrency,
            args.keyspace,
            args.value_size
        );
        println!(
            "preload: {pre_keys}/{} keys in {pre_s:.2} s ({:.0} keys/s), {pre_errors} errors",
            args.keyspace,
            pre_keys as f64 / pre_s.max(1e-9)
        );
        println!("{line}");
        return if pre_errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }

    let plan = Arc::new(Plan {
        op: args.op,
        keyspace: args.keyspace,
        value,
        consistency: if args.stale { Consistency::Stale } else { Consistency::Linearizable },
        max_ops: args.max_ops.unwrap_or(u64::MAX),
    });
    let shared = Arc::new(Shared::new());
    let begun = Instant::now();
    let start = begun + Duration::from_secs_f64(args.warmup_s);
    let window = Window { start, end: start + Duration::from_secs_f64(args.duration_s) };
    let mut tasks = Vec::with_capacity(args.concurrency as usize);
    for i in 0..args.concurrency {
        let seed = args.seed ^ u64::from(i).wrapping_mul(0xA24B_AED4_963E_E407);
        tasks.push(tokio::spawn(worker(client.clone(), plan.clone(), window, shared.clone(), seed)));
    }
    let mut latencies: Vec<u32> = Vec::new();
    let (mut errors, mut not_found, mut warmup_ops, mut warmup_errors, mut abandoned, mut panicked) =
        (0, 0, 0, 0, 0, 0);
    for task in tasks {
        match task.await {
            Ok(stats) => {
                latencies.extend_from_slice(&stats.latencies_us);
                errors += stats.errors;
                not_found += stats.not_found;
                warmup_ops += stats.warmup_ops;
                warmup_errors += stats.warmup_errors;
                abandoned += stats.abandoned;
            }
            Err(err) => {
                panicked += 1;
                eprintln!("error: a load task failed: {err}");
            }
        }
    }
    latencies.sort_unstable();

    let stopped_at_us = shared.stopped_at_us.load(Ordering::Relaxed);
    let max_ops_reached = stopped_at_us != u64::MAX;
    let elapsed_s =
        if max_ops_reached { (stopped_at_us as f64 / 1e6).max(1e-6) } else { args.duration_s.max(1e-6) };
    let ops = latencies.len() as u64;
    let ops_per_s = ops as f64 / elapsed_s;
    let mean_ms = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&us| u64::from(us)).sum::<u64>() as f64 / latencies.len() as f64 / 1000.0
    };
    let (p50, p90, p99) =
        (percentile_ms(&latencies, 50.0), percentile_ms(&latencies, 90.0), percentile_ms(&latencies, 99.0));
    let max = latencies.last().map_or(0.0, |&us| f64::from(us) / 1000.0);
    let first_error = shared.first_error();

    let mut human = format!(
        "{} c={}: {ops_per_s:.0} ops/s ({ops} ops in {elapsed_s:.2} s), latency ms p50 {p50:.3} p90 {p90:.3} \
         p99 {p99:.3} max {max:.3}, errors {errors}",
        args.op.name(),
        args.concurrency,
    );
    if not_found > 0 {
        let _ = write!(human, ", not found {not_found}");
    }
    if abandoned > 0 && ops == 0 {
        // (Normally every task has one request in flight at the end; with no
        // successes at all, they are the sign of a stall.)
        let _ = write!(human, ", {abandoned} still in flight at the end");
    }
    if warmup_errors > 0 {
        let _ = write!(human, ", warm-up errors {warmup_errors}");
    }
    if max_ops_reached {
        human.push_str(" (--max-ops reached)");
    }
    if let Some(err) = &first_error {
        let _ = write!(human, "; first error: {err}");
    }
    let json = format!(
        "{{\"op\":\"{}\",\"addr\":{},\"concurrency\":{},\"duration_s\":{elapsed_s:.3},\"warmup_s\":{:.3},\
         \"keyspace\":{},\"value_size\":{},\"ops\":{ops},\"ops_per_s\":{ops_per_s:.1},\"errors\":{errors},\
         \"not_found\":{not_found},\"p50_ms\":{p50:.3},\"p90_ms\":{p90:.3},\"p99_ms\":{p99:.3},\
         \"max_ms\":{max:.3},\"mean_ms\":{mean_ms:.3},\"warmup_ops\":{warmup_ops},\
         \"warmup_errors\":{warmup_errors},\"in_flight_at_end\":{abandoned},\"max_ops_reached\":{max_ops_reached},\"preload_keys\":{pre_keys},\
         \"preload_s\":{pre_s:.3},\"preload_errors\":{pre_errors},\"first_error\":{}}}",
        args.op.name(),
        json_str(&args.addr.join(",")),
        args.concurrency,
        args.warmup_s,
        args.keyspace,
        args.value_size,
        json_opt_str(&first_error),
    );
    println!("{human}");
    println!("{json}");
    if ops > 0 && panicked == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_to_13_digits() {
        assert_eq!(key_of(0), Bytes::from_static(b"key0000000000000"));
        assert_eq!(key_of(99_999), Bytes::from_static(b"key0000000099999"));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 50.0), 50.0);
        assert_eq!(percentile_ms(&sorted, 99.0), 99.0);
        assert_eq!(percentile_ms(&sorted, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
        assert_eq!(percentile_ms(&[7000], 90.0), 7.0);
    }

    #[test]
    fn key_choice_stays_in_range() {
        let mut rng = KeyRng(1);
        assert!((0..10_000).all(|_| rng.below(10) < 10));
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn flags_parse() {
        let args = Args::try_parse_from([
            "ringkv-load",
            "--addr",
            "127.0.0.1:1,127.0.0.1:2",
            "--op",
            "incr",
            "--concurrency",
            "8",
            "--max-ops",
            "5",
        ])
        .unwrap();
        assert_eq!(args.addr.len(), 2);
        assert_eq!(args.op, OpKind::Incr);
        assert_eq!(
            (args.duration_s, args.warmup_s, args.keyspace, args.value_size),
            (10.0, 1.0, 10_000, 256)
        );
        assert!(Args::try_parse_from(["ringkv-load", "--concurrency", "0"]).is_err());
        assert!(Args::try_parse_from(["ringkv-load", "--duration-s", "-1"]).is_err());
    }
}
