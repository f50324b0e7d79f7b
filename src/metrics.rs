//! The operator's metrics in Prometheus' text format: a fixed prefix and bounded labels only
//! (fixed reasons, endpoints and status classes; never object names or error text).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Prefix of every metric name.
pub const PREFIX: &str = "baseten_secrets_operator";

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A histogram of durations with fixed buckets.
#[derive(Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    counts: [AtomicU64; BUCKETS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let slot = BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
        let _ = writeln!(out, "# TYPE {PREFIX}_{name} histogram");
        let mut cumulative = 0;
        for (slot, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let bound = BUCKETS_SECONDS
                .get(slot)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{PREFIX}_{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{PREFIX}_{name}_sum {sum}");
        let _ = writeln!(out, "{PREFIX}_{name}_count {cumulative}");
    }
}

/// Counters keyed by a fixed set of label values.
#[derive(Default)]
struct Labelled(Mutex<BTreeMap<Vec<&'static str>, u64>>);

impl Labelled {
    fn add(&self, labels: &[&'static str]) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(labels.to_vec())
            .or_default() += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
        let _ = writeln!(out, "# TYPE {PREFIX}_{name} counter");
        for (values, count) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let labels: Vec<String> = label_names
                .iter()
                .zip(values)
                .map(|(n, v)| format!("{n}=\"{v}\""))
                .collect();
            let _ = writeln!(out, "{PREFIX}_{name}{{{}}} {count}", labels.join(","));
        }
    }
}

/// Everything the operator counts.
#[derive(Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    reconcile_failures: Labelled,
    reconcile_duration: Histogram,
    baseten_requests: Labelled,
    baseten_duration: Histogram,
    writes: AtomicU64,
    writes_skipped: AtomicU64,
    drift_repairs: AtomicU64,
    rate_limiter_waits: AtomicU64,
}

/// The class of an HTTP status ("2xx", "4xx", ...), or "error" when none came back.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(429) => "429",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "error",
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A reconcile ended after `took`; `failure` is its error's fixed label, if it failed.
    pub fn reconciled(&self, took: Duration, failure: Option<&'static str>) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        self.reconcile_duration.observe(took);
        if let Some(reason) = failure {
            self.reconcile_failures.add(&[reason]);
        }
    }

    /// A Baseten request to `endpoint` (a path template) answered `status` after `took`.
    pub fn baseten_request(&self, endpoint: &'static str, status: Option<u16>, took: Duration) {
        self.baseten_requests.add(&[endpoint, status_class(status)]);
        self.baseten_duration.observe(took);
    }

    /// A value was written to Baseten.
    pub fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// A reconcile found Baseten up to date and wrote nothing.
    pub fn skipped_write(&self) {
        self.writes_skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// A drift check flagged a resource for a push.
    pub fn drift_repair(&self) {
        self.drift_repairs.fetch_add(1, Ordering::Relaxed);
    }

    /// A request waited for the rate limiter.
    pub fn rate_limiter_wait(&self) {
        self.rate_limiter_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition; `ready_reasons` counts resources by Ready reason and `leader`
    /// says whether this process writes.
    pub fn render(&self, ready_reasons: &BTreeMap<String, u64>, leader: bool) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
            let _ = writeln!(out, "# TYPE {PREFIX}_{name} counter");
            let _ = writeln!(out, "{PREFIX}_{name} {value}");
        };
        counter(
            &mut out,
            "reconciles_total",
            "Reconciles run.",
            self.reconciles.load(Ordering::Relaxed),
        );
        self.reconcile_failures.render(
            &mut out,
            "reconcile_failures_total",
            "Reconciles that failed and are retried, by fixed reason.",
            &["reason"],
        );
        self.reconcile_duration.render(
            &mut out,
            "reconcile_duration_seconds",
            "Time a reconcile took.",
        );
        self.baseten_requests.render(
            &mut out,
            "baseten_requests_total",
            "Requests to Baseten by endpoint and status class.",
            &["endpoint", "status"],
        );
        self.baseten_duration.render(
            &mut out,
            "baseten_request_duration_seconds",
            "Time from sending a Baseten request to its answer.",
        );
        counter(
            &mut out,
            "baseten_writes_total",
            "Values written to Baseten.",
            self.writes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "baseten_writes_skipped_total",
            "Reconciles that found Baseten up to date and wrote nothing.",
            self.writes_skipped.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "drift_repairs_total",
            "Resources a drift check found missing or recreated in Baseten.",
            self.drift_repairs.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "rate_limiter_waits_total",
            "Baseten requests that waited for the client's rate limiter.",
            self.rate_limiter_waits.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP {PREFIX}_leader Whether this process is the one writing (1) or a standby (0)."
        );
        let _ = writeln!(out, "# TYPE {PREFIX}_leader gauge");
        let _ = writeln!(out, "{PREFIX}_leader {}", u8::from(leader));
        let _ = writeln!(
            out,
            "# HELP {PREFIX}_resources Resources by the reason of their Ready condition."
        );
        let _ = writeln!(out, "# TYPE {PREFIX}_resources gauge");
        for (reason, count) in ready_reasons {
            let _ = writeln!(out, "{PREFIX}_resources{{reason=\"{reason}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::default();
        metrics.reconciled(Duration::from_millis(3), None);
        metrics.reconciled(Duration::from_millis(30), Some("kube"));
        metrics.baseten_request("POST /v1/secrets", Some(200), Duration::from_millis(4));
        metrics.baseten_request("POST /v1/secrets", Some(429), Duration::from_millis(4));
        metrics.baseten_request("POST /v1/secrets", None, Duration::from_secs(20));
        let reasons = BTreeMap::from([("Synced".to_string(), 2)]);
        let text = metrics.render(&reasons, true);
        for expected in [
            "baseten_secrets_operator_reconciles_total 2",
            "baseten_secrets_operator_reconcile_failures_total{reason=\"kube\"} 1",
            "baseten_secrets_operator_reconcile_duration_seconds_bucket{le=\"0.005\"} 1",
            "baseten_secrets_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "baseten_secrets_operator_reconcile_duration_seconds_count 2",
            "baseten_secrets_operator_baseten_requests_total{endpoint=\"POST /v1/secrets\",status=\"2xx\"} 1",
            "baseten_secrets_operator_baseten_requests_total{endpoint=\"POST /v1/secrets\",status=\"429\"} 1",
            "baseten_secrets_operator_baseten_requests_total{endpoint=\"POST /v1/secrets\",status=\"error\"} 1",
            "baseten_secrets_operator_leader 1",
            "baseten_secrets_operator_resources{reason=\"Synced\"} 2",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
