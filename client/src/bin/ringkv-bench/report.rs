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
