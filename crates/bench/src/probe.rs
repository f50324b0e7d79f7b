//! What the bench reads off the system: the apiserver's own metrics, and a process's memory
//! and CPU time from /proc.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

/// One scrape of the apiserver's `/metrics`.
pub struct Scrape(String);

impl Scrape {
    /// Reads `/metrics` with an admin client.
    pub async fn take(client: &kube::Client) -> Result<Self> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        Ok(Self(client.request_text(request).await?))
    }

    /// The sum of every sample of `metric` whose labels include all of `labels`.
    pub fn sum(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter_map(|line| parse_sample(line, metric))
            .filter(|(sample_labels, _)| {
                labels
                    .iter()
                    .all(|(k, v)| sample_labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Requests the apiserver counted for `verb` on `resource` (and `subresource`).
    pub fn requests(&self, verb: &str, resource: &str, subresource: &str) -> f64 {
        self.sum(
            "apiserver_request_total",
            &[
                ("verb", verb),
                ("resource", resource),
                ("subresource", subresource),
            ],
        )
    }

    /// Watch connections open right now.
    pub fn watches(&self) -> f64 {
        self.sum("apiserver_longrunning_requests", &[("verb", "WATCH")])
    }
}

/// Parses `name{a="b",c="d"} value` when the name is `metric`.
fn parse_sample(line: &str, metric: &str) -> Option<(BTreeMap<String, String>, f64)> {
    let rest = line.strip_prefix(metric)?;
    let (labels, value) = match rest.strip_prefix('{') {
        Some(inner) => {
            let (labels, value) = inner.split_once("} ")?;
            (labels, value)
        }
        None => ("", rest.strip_prefix(' ')?),
    };
    let mut map = BTreeMap::new();
    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once("=\"")?;
        map.insert(key.to_string(), value.trim_end_matches('"').to_string());
    }
    Some((map, value.split_whitespace().next()?.parse().ok()?))
}

/// Memory and CPU time of one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Resident set size now, bytes.
    pub rss: u64,
    /// Peak resident set size so far, bytes.
    pub peak_rss: u64,
    /// User plus system CPU time so far, seconds.
    pub cpu_seconds: f64,
}

/// Reads a process's usage from /proc (Linux).
pub fn usage(pid: u32) -> Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, so split after its ')').
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = fields
        .get(11..13)
        .map(|t| t.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    Ok(Usage {
        rss: kib("VmRSS:"),
        peak_rss: kib("VmHWM:"),
        cpu_seconds: ticks / clock_ticks_per_second(),
    })
}

/// USER_HZ: 100 on every Linux this runs on; `getconf` confirms it when present.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The machine: core count, CPU model, memory.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": model,
        "memory_gib": memory_gib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_label() {
        let text = "\
# HELP apiserver_request_total x
apiserver_request_total{code=\"200\",resource=\"secrets\",subresource=\"\",verb=\"GET\"} 7
apiserver_request_total{code=\"404\",resource=\"secrets\",subresource=\"\",verb=\"GET\"} 2
apiserver_request_total{code=\"200\",resource=\"basetensecrets\",subresource=\"status\",verb=\"APPLY\"} 3
apiserver_request_total_other{verb=\"GET\"} 100
apiserver_longrunning_requests{resource=\"secrets\",verb=\"WATCH\"} 2
";
        let scrape = Scrape(text.into());
        assert_eq!(scrape.requests("GET", "secrets", ""), 9.0);
        assert_eq!(scrape.requests("APPLY", "basetensecrets", "status"), 3.0);
        assert_eq!(scrape.watches(), 2.0);
    }

    #[test]
    fn this_process_has_a_usage() {
        let usage = usage(std::process::id()).unwrap();
        assert!(usage.rss > 0 && usage.peak_rss >= usage.rss);
    }
}
