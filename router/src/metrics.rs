//! A router's Prometheus metrics (`--metrics-listen`): the KV requests it
//! served ([`ringkv_metrics::Requests`]), the retries its client library made
//! on the way to the nodes, by reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use ringkv_client::Client;
use ringkv_metrics::{Registry, Requests};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The router's metric families.
#[derive(Clone)]
pub struct RouterMetrics {
    pub requests: Requests,
    retries: Family<ReasonLabels, Counter>,
}

impl RouterMetrics {
    pub fn register(registry: &mut Registry) -> RouterMetrics {
        let metrics = RouterMetrics { requests: Requests::register(registry), retries: Family::default() };
        registry.register(
            "ringkv_router_retries",
            "Attempts the router retried on its way to a shard's leader, by the failed attempt's reason",
            metrics.retries.clone(),
        );
        metrics
    }

    /// Brings the retry counters up to the client's totals (scrape time).
    pub fn refresh(&self, client: &Client) {
        for (reason, total) in client.retries() {
            let counter = self.retries.get_or_create(&ReasonLabels { reason });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}
