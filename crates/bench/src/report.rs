//! Judging the figures against their targets, and writing them: a table for the terminal,
//! `report.json` for machines, `report.md` with PNG plots for people.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::Params;
use crate::plot::{Chart, Series};
use crate::run::{Activity, Figures};

const MIB: f64 = 1024.0 * 1024.0;

/// One figure held against its target.
pub struct Check {
    /// What is measured.
    pub figure: String,
    /// The target, as people read it.
    pub target: String,
    /// The measured value, formatted.
    pub value: String,
    /// Whether the target is met.
    pub met: bool,
    /// Whether missing it means the operator did something wrong (not merely slow).
    pub correctness: bool,
}

/// A judged run.
pub struct Report {
    json: Value,
    checks: Vec<Check>,
    figures: Figures,
    params: Params,
}

/// The `q`-quantile (0..=1) of sorted samples, by nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn activity_json(activity: &Activity) -> Value {
    json!({
        "upserts": activity.upserts,
        "list_calls": activity.list_calls,
        "status_patches": activity.status_patches,
        "events": activity.events,
        "secret_reads": activity.secret_reads,
    })
}

/// The checked-out revision, as the report names the code it measured.
pub fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn check(figure: &str, target: &str, value: String, met: bool, correctness: bool) -> Check {
    Check {
        figure: figure.into(),
        target: target.into(),
        value,
        met,
        correctness,
    }
}

impl Report {
    /// Judges the figures of a run with `params`.
    pub fn new(params: &Params, figures: Figures, revision: &str) -> Self {
        let floor = params.n as f64 / baseten_emulator::DEFAULT_RATE_LIMIT_PER_SECOND as f64;
        let ratio = figures.convergence_seconds / floor;
        let mut latencies = figures.latencies_ms.clone();
        latencies.sort_by(f64::total_cmp);
        let (p50, p95, p99) = (
            quantile(&latencies, 0.50),
            quantile(&latencies, 0.95),
            quantile(&latencies, 0.99),
        );
        let max = latencies.last().copied().unwrap_or(f64::NAN);
        let mut trips = figures.round_trips_ms.clone();
        trips.sort_by(f64::total_cmp);
        let round_trip_p50 = quantile(&trips, 0.5);
        let peak_first = figures.first.peak_rss as f64 / MIB;
        let peak_restart = figures.second.peak_rss as f64 / MIB;
        let peak = peak_first.max(peak_restart);
        let idle = figures.idle_rss as f64 / MIB;
        let empty = figures.empty_rss as f64 / MIB;
        let deleted = figures.deleted_rss as f64 / MIB;
        let cpu_total = figures.first.cpu_seconds + figures.second.cpu_seconds;
        // Issue 9's targets: p99 under 50 ms at N=1000, under 100 ms at N=10 000.
        let p99_target = if params.n > 1000 { 100.0 } else { 50.0 };

        let json = json!({
            "parameters": {
                "n": params.n,
                "value_bytes": params.value_bytes,
                "noise": params.noise,
                "noise_bytes": crate::NOISE_BYTES,
                "steady_seconds": params.steady.as_secs(),
                "updates": params.updates,
                "baseten_rate_limit_per_second": baseten_emulator::DEFAULT_RATE_LIMIT_PER_SECOND,
            },
            "machine": crate::probe::machine(),
            "revision": revision,
            "date": jiff::Timestamp::now().to_string(),
            "convergence": {
                "seconds": figures.convergence_seconds,
                "floor_seconds": floor,
                "ratio_to_floor": ratio,
                "creation_seconds": figures.creation_seconds,
                "http_429": figures.throttled,
                "ready_over_time": figures.curve,
            },
            "propagation": {
                "samples": figures.latencies_ms.len(),
                "missed": figures.missed_updates,
                "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": max,
                "measured_from": "the apiserver's answer to the update",
                "update_round_trip_p50_ms": round_trip_p50,
                "latencies_ms": figures.latencies_ms,
            },
            "steady": {
                "seconds": params.steady.as_secs(),
                "activity": activity_json(&figures.steady),
                "cpu_seconds": figures.steady_cpu_seconds,
            },
            "restart": {
                "to_idle_seconds": figures.restart_to_idle_seconds,
                "activity": activity_json(&figures.restart),
            },
            "rss": {
                "peak_mib": peak,
                "peak_first_process_mib": peak_first,
                "peak_restarted_process_mib": peak_restart,
                "idle_mib": idle,
                "with_no_resource_mib": empty,
                "after_deleting_every_resource_mib": deleted,
                "cpu_seconds_total": cpu_total,
                "cpu_seconds_idle": figures.steady_cpu_seconds,
            },
            "apiserver": {
                "secret_reads_per_push": figures.reads_per_push,
                "status_writes_per_push": figures.status_writes_per_push,
                "watch_connections": figures.watch_connections,
            },
            "end_state": {
                "resources": params.n,
                "ready_with_current_value": figures.correct_values,
            },
        });

        let sets = &figures.sets;
        let mut set_latencies = sets.latencies_ms.clone();
        set_latencies.sort_by(f64::total_cmp);
        let set_p99 = quantile(&set_latencies, 0.99);
        let set_p50 = quantile(&set_latencies, 0.50);
        let keys_ratio = sets.keys_convergence_seconds / floor;
        let selector_ratio = sets.selector_convergence_seconds / floor;
        let set_idle = sets.idle_rss as f64 / MIB;
        let mut json = json;
        json["sets"] = json!({
            "one_secret_of_n_keys_seconds": sets.keys_convergence_seconds,
            "n_labelled_secrets_seconds": sets.selector_convergence_seconds,
            "propagation_ms": {"p50": set_p50, "p99": set_p99, "samples": set_latencies.len()},
            "missed_updates": sets.missed_updates,
            "idle_rss_mib_with_n_generated": set_idle,
        });
        let zero =
            |figure: &str, value: f64| check(figure, "0", format!("{value}"), value == 0.0, true);
        let checks = vec![
            check(
                "every resource Ready, Baseten holding each Secret's current value",
                &format!("{}", params.n),
                format!("{}", figures.correct_values),
                figures.correct_values == params.n,
                true,
            ),
            check(
                "cold convergence / floor (N / 100 s)",
                "≤ 1.10",
                format!(
                    "{ratio:.3} ({:.1} s / {floor:.1} s)",
                    figures.convergence_seconds
                ),
                ratio <= 1.10,
                false,
            ),
            zero("HTTP 429 received", figures.throttled as f64),
            check(
                "propagation p99 (apiserver → Baseten)",
                &format!("< {p99_target} ms"),
                format!("{p99:.1} ms (p50 {p50:.1}, p95 {p95:.1}, max {max:.1})"),
                p99 < p99_target,
                false,
            ),
            zero("updates that never arrived", figures.missed_updates as f64),
            zero("upserts at rest", figures.steady.upserts as f64),
            zero("status patches at rest", figures.steady.status_patches),
            zero("events at rest", figures.steady.events),
            zero("upserts after restart", figures.restart.upserts as f64),
            zero(
                "status patches after restart",
                figures.restart.status_patches,
            ),
            check(
                "restart to idle",
                "< 30 s",
                format!("{:.1} s", figures.restart_to_idle_seconds),
                figures.restart_to_idle_seconds < 30.0,
                false,
            ),
            check(
                "operator peak RSS",
                "< 48 MiB",
                format!("{peak:.1} MiB (idle {idle:.1} MiB)"),
                peak < 48.0,
                false,
            ),
            check(
                "operator RSS after deleting every resource",
                "< 5 MiB over its RSS with none",
                format!("{deleted:.1} MiB (with none: {empty:.1} MiB)"),
                deleted < empty + 5.0,
                false,
            ),
            check(
                "operator idle RSS",
                "< 32 MiB",
                format!("{idle:.1} MiB"),
                idle < 32.0,
                false,
            ),
            check(
                "set over one Secret of N keys: convergence / floor",
                "≤ 1.10",
                format!(
                    "{keys_ratio:.3} ({:.1} s / {floor:.1} s)",
                    sets.keys_convergence_seconds
                ),
                keys_ratio <= 1.10,
                false,
            ),
            check(
                "set over N labelled Secrets: convergence / floor",
                "≤ 1.10",
                format!(
                    "{selector_ratio:.3} ({:.1} s / {floor:.1} s)",
                    sets.selector_convergence_seconds
                ),
                selector_ratio <= 1.10,
                false,
            ),
            check(
                "set key propagation p99 (apiserver → Baseten)",
                &format!("< {p99_target} ms"),
                format!(
                    "{set_p99:.1} ms (p50 {set_p50:.1}, {} samples)",
                    set_latencies.len()
                ),
                set_p99 < p99_target,
                false,
            ),
            zero(
                "set key changes that never arrived",
                sets.missed_updates as f64,
            ),
            check(
                "idle RSS with N generated BasetenSecrets",
                "< plain idle + 5 MiB",
                format!("{set_idle:.1} MiB (N plain: {idle:.1} MiB)"),
                set_idle < idle + 5.0,
                false,
            ),
            check(
                "Secret reads per push",
                "≤ 1",
                format!("{:.2}", figures.reads_per_push),
                figures.reads_per_push <= 1.0,
                false,
            ),
            check(
                "status writes per push",
                "≤ 1",
                format!("{:.2}", figures.status_writes_per_push),
                figures.status_writes_per_push <= 1.0,
                false,
            ),
        ];
        json["targets"] = checks
            .iter()
            .map(
                |c| json!({"figure": c.figure, "target": c.target, "value": c.value, "met": c.met}),
            )
            .collect();
        Self {
            json,
            checks,
            figures,
            params: params.clone(),
        }
    }

    /// The correctness figures that missed their targets.
    pub fn correctness_failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.correctness && !c.met)
            .map(|c| format!("{}: {} (target {})", c.figure, c.value, c.target))
            .collect()
    }

    /// The plain-text table for the terminal.
    pub fn table(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.figure.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = format!(
            "bench N={} ({} cores, revision {})\n",
            self.params.n,
            self.json["machine"]["cores"],
            self.json["revision"].as_str().unwrap_or("")
        );
        for c in &self.checks {
            out += &format!(
                "{:<width$}  {:<8} {}  {}\n",
                c.figure,
                c.target,
                if c.met { "met   " } else { "MISSED" },
                c.value
            );
        }
        out += &format!(
            "steady state: {} list calls, {} Secret reads, {:.2} CPU s in {} s; watch connections {}; CPU total {:.1} s",
            self.figures.steady.list_calls,
            self.figures.steady.secret_reads,
            self.figures.steady_cpu_seconds,
            self.params.steady.as_secs(),
            self.figures.watch_connections,
            self.json["rss"]["cpu_seconds_total"]
                .as_f64()
                .unwrap_or_default()
        );
        out
    }

    /// Writes `report.json`, `report.md` and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&self.json)?,
        )?;
        let floor_rate = baseten_emulator::DEFAULT_RATE_LIMIT_PER_SECOND as f64;
        let n = self.params.n as f64;
        Chart {
            title: format!("Cold convergence, N={}", self.params.n),
            x_label: "seconds since the first resource was created".into(),
            y_label: "resources Ready".into(),
            series: vec![
                Series {
                    label: "Ready".into(),
                    points: self.figures.curve.clone(),
                    dashed: false,
                },
                Series {
                    label: "floor: 100 writes/s".into(),
                    points: vec![(0.0, 0.0), (n / floor_rate, n)],
                    dashed: true,
                },
            ],
        }
        .save(&dir.join("convergence.png"))?;
        let mut latencies = self.figures.latencies_ms.clone();
        latencies.sort_by(f64::total_cmp);
        let total = latencies.len().max(1) as f64;
        let cdf: Vec<(f64, f64)> = latencies
            .iter()
            .enumerate()
            .map(|(i, ms)| (*ms, (i + 1) as f64 / total))
            .collect();
        Chart {
            title: format!("Change propagation, N={}", self.params.n),
            x_label: "milliseconds from the Secret update to Baseten's receipt".into(),
            y_label: "fraction of updates".into(),
            series: vec![Series {
                label: "latency CDF".into(),
                points: cdf,
                dashed: false,
            }],
        }
        .save(&dir.join("latency-cdf.png"))?;

        let machine = &self.json["machine"];
        let mut md = format!(
            "# Bench report\n\nN={} resources ({} B values), {} unrelated 64 KiB Secrets, {} timed updates, {} s steady state.\n\
             Machine: {} cores, {}, {} GiB. Revision `{}`, {}.\n\n| figure | target | measured | |\n|---|---|---|---|\n",
            self.params.n,
            self.params.value_bytes,
            self.params.noise,
            self.params.updates,
            self.params.steady.as_secs(),
            machine["cores"],
            machine["cpu"].as_str().unwrap_or("unknown"),
            machine["memory_gib"],
            self.json["revision"].as_str().unwrap_or(""),
            self.json["date"].as_str().unwrap_or("")
        );
        for c in &self.checks {
            md += &format!(
                "| {} | {} | {} | {} |\n",
                c.figure,
                c.target,
                c.value,
                if c.met { "met" } else { "**missed**" }
            );
        }
        md += &format!(
            "\nAt rest: {} Baseten list calls, {} Secret reads, {:.2} CPU seconds. Watch connections held: {}.\n\
             Restart: {} Secret reads until idle.\n\n\
             ![convergence](convergence.png)\n\n![latency CDF](latency-cdf.png)\n",
            self.figures.steady.list_calls,
            self.figures.steady.secret_reads,
            self.figures.steady_cpu_seconds,
            self.figures.watch_connections,
            self.figures.restart.secret_reads,
        );
        std::fs::write(dir.join("report.md"), md)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&samples, 0.5), 50.0);
        assert_eq!(quantile(&samples, 0.99), 99.0);
        assert_eq!(quantile(&samples, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
