//! The operator's metrics, kept and encoded by `prometheus-client` in Prometheus' text format:
//! a fixed prefix and bounded labels only (fixed reasons, endpoints and status classes; never
//! object names or error text).

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Prefix of every metric name.
pub const PREFIX: &str = "baseten_secrets_operator";

/// The `Content-Type` of what [`Metrics::render`] returns (the Prometheus text format 0.0.4,
/// the format `/metrics` has always served, so every scraper reads it unchanged).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The label of `reconcile_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

/// The labels of `baseten_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: &'static str,
}

/// The label of `resources`; a Ready reason read from a status, so not a fixed string.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    reason: String,
}

/// Everything the operator counts.
pub struct Metrics {
    /// Holds clones of the fields below (they share their values) and encodes them.
    registry: Registry,
    reconciles: Counter,
    reconcile_failures: Family<FailureLabels, Counter>,
    reconcile_duration: Histogram,
    baseten_requests: Family<RequestLabels, Counter>,
    baseten_duration: Histogram,
    writes: Counter,
    writes_skipped: Counter,
    drift_repairs: Counter,
    rate_limiter_waits: Counter,
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

impl Default for Metrics {
    // size: one registration per metric, in the documented order, read top to bottom.
    fn default() -> Self {
        let reconciles = Counter::default();
        let reconcile_failures = Family::default();
        let reconcile_duration = Histogram::new(BUCKETS_SECONDS);
        let baseten_requests = Family::default();
        let baseten_duration = Histogram::new(BUCKETS_SECONDS);
        let writes = Counter::default();
        let writes_skipped = Counter::default();
        let drift_repairs = Counter::default();
        let rate_limiter_waits = Counter::default();
        // Registered in the order the exposition always had; the library appends `_total` to
        // counters, the unit to the histograms, and a full stop to each help text.
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed and are retried, by fixed reason",
            reconcile_failures.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time a reconcile took",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "baseten_requests",
            "Requests to Baseten by endpoint and status class",
            baseten_requests.clone(),
        );
        registry.register_with_unit(
            "baseten_request_duration",
            "Time from sending a Baseten request to its answer",
            Unit::Seconds,
            baseten_duration.clone(),
        );
        registry.register(
            "baseten_writes",
            "Values written to Baseten",
            writes.clone(),
        );
        registry.register(
            "baseten_writes_skipped",
            "Reconciles that found Baseten up to date and wrote nothing",
            writes_skipped.clone(),
        );
        registry.register(
            "drift_repairs",
            "Resources a drift check found missing or recreated in Baseten",
            drift_repairs.clone(),
        );
        registry.register(
            "rate_limiter_waits",
            "Baseten requests that waited for the client's rate limiter",
            rate_limiter_waits.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_failures,
            reconcile_duration,
            baseten_requests,
            baseten_duration,
            writes,
            writes_skipped,
            drift_repairs,
            rate_limiter_waits,
        }
    }
}

impl Metrics {
    /// A reconcile ended after `took`; `failure` is its error's fixed label, if it failed.
    pub fn reconciled(&self, took: Duration, failure: Option<&'static str>) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.reconcile_failures
                .get_or_create(&FailureLabels { reason })
                .inc();
        }
    }

    /// A Baseten request to `endpoint` (a path template) answered `status` after `took`.
    pub fn baseten_request(&self, endpoint: &'static str, status: Option<u16>, took: Duration) {
        let labels = RequestLabels {
            endpoint,
            status: status_class(status),
        };
        self.baseten_requests.get_or_create(&labels).inc();
        self.baseten_duration.observe(took.as_secs_f64());
    }

    /// A value was written to Baseten.
    pub fn wrote(&self) {
        self.writes.inc();
    }

    /// A reconcile found Baseten up to date and wrote nothing.
    pub fn skipped_write(&self) {
        self.writes_skipped.inc();
    }

    /// A drift check flagged a resource for a push.
    pub fn drift_repair(&self) {
        self.drift_repairs.inc();
    }

    /// A request waited for the rate limiter.
    pub fn rate_limiter_wait(&self) {
        self.rate_limiter_waits.inc();
    }

    /// The text exposition (serve it as [`CONTENT_TYPE`]); `ready_reasons` counts resources
    /// by Ready reason and `leader` says whether this process writes.
    pub fn render(&self, ready_reasons: &BTreeMap<String, u64>, leader: bool) -> String {
        // The gauges are read off the cache at each scrape, so they live in a registry of
        // their own, made for this scrape: concurrent scrapes then share nothing, and a reason
        // no resource has any more disappears instead of staying at its last count.
        let mut scrape = Registry::with_prefix(PREFIX);
        let leader_gauge: Gauge = Gauge::default();
        leader_gauge.set(i64::from(leader));
        scrape.register(
            "leader",
            "Whether this process is the one writing (1) or a standby (0)",
            leader_gauge,
        );
        let resources = Family::<ReadyLabels, Gauge>::default();
        for (reason, count) in ready_reasons {
            let labels = ReadyLabels {
                reason: reason.clone(),
            };
            resources
                .get_or_create(&labels)
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        scrape.register(
            "resources",
            "Resources by the reason of their Ready condition",
            resources,
        );

        let mut out = String::new();
        // Writing to a String cannot fail; the library only returns errors from its writer.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &scrape);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every metric as scraped, with its type and label names. Alerts and dashboards use these
    /// names: change one only together with the README's table and its users.
    const DECLARED: [(&str, &str, &[&str]); 11] = [
        ("reconciles_total", "counter", &[]),
        ("reconcile_failures_total", "counter", &["reason"]),
        ("reconcile_duration_seconds", "histogram", &[]),
        ("baseten_requests_total", "counter", &["endpoint", "status"]),
        ("baseten_request_duration_seconds", "histogram", &[]),
        ("baseten_writes_total", "counter", &[]),
        ("baseten_writes_skipped_total", "counter", &[]),
        ("drift_repairs_total", "counter", &[]),
        ("rate_limiter_waits_total", "counter", &[]),
        ("leader", "gauge", &[]),
        ("resources", "gauge", &["reason"]),
    ];

    /// Metrics with every family in use.
    fn exercised() -> String {
        let metrics = Metrics::default();
        metrics.reconciled(Duration::from_millis(3), None);
        metrics.reconciled(Duration::from_millis(30), Some("kube"));
        metrics.baseten_request("POST /v1/secrets", Some(200), Duration::from_millis(4));
        metrics.baseten_request("POST /v1/secrets", Some(429), Duration::from_millis(4));
        metrics.baseten_request("POST /v1/secrets", None, Duration::from_secs(20));
        metrics.wrote();
        metrics.skipped_write();
        metrics.drift_repair();
        metrics.rate_limiter_wait();
        let reasons = BTreeMap::from([("Synced".to_string(), 2)]);
        metrics.render(&reasons, true)
    }

    /// The name of a sample line and its label names, `le` left out.
    fn sample(line: &str) -> (&str, BTreeSet<&str>) {
        let end = line.find(['{', ' ']).unwrap();
        let labels = match line[end..].strip_prefix('{') {
            Some(rest) => rest[..rest.find("} ").unwrap()]
                .split("\",")
                .map(|pair| pair.split_once("=\"").unwrap().0)
                .filter(|name| *name != "le")
                .collect(),
            None => BTreeSet::new(),
        };
        (&line[..end], labels)
    }

    #[test]
    fn names_types_and_labels_are_the_declared_ones() {
        let text = exercised();
        let mut types = BTreeMap::new();
        let mut labels: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') {
                let (name, names) = sample(line);
                // A histogram's samples belong to the family without their suffix.
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|family| types.get(*family).is_some_and(|t| t == "histogram"))
                    .unwrap_or(name);
                assert!(types.contains_key(family), "{name} has no TYPE in\n{text}");
                labels.entry(family.to_string()).or_default().extend(names);
            }
        }
        let declared_types: BTreeMap<String, String> = DECLARED
            .iter()
            .map(|(name, kind, _)| (format!("{PREFIX}_{name}"), kind.to_string()))
            .collect();
        assert_eq!(types, declared_types, "in\n{text}");
        let declared_labels: BTreeMap<String, BTreeSet<&str>> = DECLARED
            .iter()
            .map(|(name, _, names)| (format!("{PREFIX}_{name}"), names.iter().copied().collect()))
            .collect();
        assert_eq!(labels, declared_labels, "in\n{text}");
    }

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let text = exercised();
        for expected in [
            "# HELP baseten_secrets_operator_reconciles_total Reconciles run.\n",
            "# TYPE baseten_secrets_operator_reconciles_total counter\n",
            "baseten_secrets_operator_reconciles_total 2\n",
            "baseten_secrets_operator_reconcile_failures_total{reason=\"kube\"} 1\n",
            "baseten_secrets_operator_reconcile_duration_seconds_bucket{le=\"0.001\"} 0\n",
            "baseten_secrets_operator_reconcile_duration_seconds_bucket{le=\"0.005\"} 1\n",
            "baseten_secrets_operator_reconcile_duration_seconds_bucket{le=\"1\"} 2\n",
            "baseten_secrets_operator_reconcile_duration_seconds_bucket{le=\"10\"} 2\n",
            "baseten_secrets_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2\n",
            "baseten_secrets_operator_reconcile_duration_seconds_sum 0.033\n",
            "baseten_secrets_operator_reconcile_duration_seconds_count 2\n",
            "baseten_secrets_operator_baseten_requests_total{endpoint=\"POST /v1/secrets\",status=\"2xx\"} 1\n",
            "baseten_secrets_operator_baseten_requests_total{endpoint=\"POST /v1/secrets\",status=\"429\"} 1\n",
            "baseten_secrets_operator_baseten_requests_total{endpoint=\"POST /v1/secrets\",status=\"error\"} 1\n",
            "baseten_secrets_operator_baseten_request_duration_seconds_bucket{le=\"10\"} 2\n",
            "baseten_secrets_operator_baseten_request_duration_seconds_bucket{le=\"+Inf\"} 3\n",
            "baseten_secrets_operator_baseten_request_duration_seconds_count 3\n",
            "baseten_secrets_operator_baseten_writes_total 1\n",
            "baseten_secrets_operator_leader 1\n",
            "baseten_secrets_operator_resources{reason=\"Synced\"} 2\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // The Prometheus text format has no end marker (OpenMetrics' `# EOF`).
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn counters_show_0_before_any_use_and_labelled_families_nothing() {
        let text = Metrics::default().render(&BTreeMap::new(), false);
        for zero in [
            "reconciles_total",
            "reconcile_duration_seconds_count",
            "baseten_request_duration_seconds_count",
            "baseten_writes_total",
            "baseten_writes_skipped_total",
            "drift_repairs_total",
            "rate_limiter_waits_total",
            "leader",
        ] {
            let line = format!("\n{PREFIX}_{zero} 0\n");
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        // The library leaves out a family with no series, its HELP and TYPE lines too.
        for labelled in [
            "reconcile_failures_total",
            "baseten_requests_total",
            "resources",
        ] {
            assert!(
                !text.contains(&format!("{PREFIX}_{labelled}")),
                "{labelled} is in\n{text}"
            );
        }
    }

    #[test]
    fn a_ready_reason_is_escaped() {
        let reasons = BTreeMap::from([("a\"b\\c\nd".to_string(), 1)]);
        let text = Metrics::default().render(&reasons, true);
        let line = format!("\n{PREFIX}_resources{{reason=\"a\\\"b\\\\c\\nd\"}} 1\n");
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
}
