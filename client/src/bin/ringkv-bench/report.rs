//! One measured run and how it prints: a table row, and a JSON object.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

/// What one (target, workload, concurrency) run measured.
pub struct RunResult {
    pub target: String,
    pub workload: &'static str,
    pub concurrency: usize,
    pub elapsed: Duration,
    /// Latency of every completed operation in the window, in microseconds.
    pub latency: Histogram<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl RunResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.latency.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn header() -> String {
        format!(
            "{:<16} {:<10} {:>5} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "TARGET", "WORKLOAD", "CONC", "OPS/S", "P50 MS", "P99 MS", "P999 MS", "MAX MS", "ERRORS"
        )
    }

    pub fn row(&self) -> String {
        format!(
            "{:<16} {:<10} {:>5} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}",
            self.target,
            self.workload,
            self.concurrency,
            self.ops_per_sec(),
            self.ms(0.50),
            self.ms(0.99),
            self.ms(0.999),
            self.latency.max() as f64 / 1000.0,
            self.errors
        )
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "target": self.target,
            "workload": self.workload,
            "concurrency": self.concurrency,
            "seconds": self.elapsed.as_secs_f64(),
            "ops": self.latency.len(),
            "ops_per_sec": self.ops_per_sec(),
            "p50_ms": self.ms(0.50),
            "p99_ms": self.ms(0.99),
            "p999_ms": self.ms(0.999),
            "max_ms": self.latency.max() as f64 / 1000.0,
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

/// The results as Markdown: per workload, one row per concurrency with every
/// target's ops/s and p50/p99, then ringkv's throughput as a ratio of each
/// comparison target's (labels starting with `ringkv` are ours; the rest are
/// what we compare against).
pub fn markdown(results: &[RunResult]) -> String {
    let mut out = String::new();
    let mut workloads: Vec<&str> = Vec::new();
    let mut targets: Vec<&str> = Vec::new();
    for r in results {
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload);
        }
        if !targets.contains(&r.target.as_str()) {
            targets.push(&r.target);
        }
    }
    let ours: Vec<&str> = targets.iter().copied().filter(|t| t.starts_with("ringkv")).collect();
    let theirs: Vec<&str> = targets.iter().copied().filter(|t| !t.starts_with("ringkv")).collect();
    for workload in workloads {
        out.push_str(&format!("\n### {workload}\n\nEach cell: ops/s · p50 / p99 ms.\n\n| clients |"));
        for t in &targets {
            out.push_str(&format!(" {t} |"));
        }
        for o in &ours {
            for t in &theirs {
                out.push_str(&format!(" {o} / {t} |"));
            }
        }
        out.push_str("\n|---|");
        for _ in 0..targets.len() + ours.len() * theirs.len() {
            out.push_str("---|");
        }
        out.push('\n');
        let mut concurrencies: Vec<usize> =
            results.iter().filter(|r| r.workload == workload).map(|r| r.concurrency).collect();
        concurrencies.dedup();
        for c in concurrencies {
            let find = |t: &str| {
                results.iter().find(|r| r.workload == workload && r.concurrency == c && r.target == t)
            };
            out.push_str(&format!("| {c} |"));
            for t in &targets {
                match find(t) {
                    Some(r) => out.push_str(&format!(
                        " {:.0} · {:.2} / {:.2}{} |",
                        r.ops_per_sec(),
                        r.ms(0.5),
                        r.ms(0.99),
                        if r.errors > 0 { format!(" ({} errors)", r.errors) } else { String::new() }
                    )),
                    None => out.push_str(" - |"),
                }
            }
            for o in &ours {
                for t in &theirs {
                    match (find(o), find(t)) {
                        (Some(a), Some(b)) if b.ops_per_sec() > 0.0 => {
                            out.push_str(&format!(" {:.2}× |", a.ops_per_sec() / b.ops_per_sec()))
                        }
                        _ => out.push_str(" - |"),
                    }
                }
            }
            out.push('\n');
        }
    }
    out
}
