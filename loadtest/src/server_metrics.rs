//! The server's CPU, memory and batch counters, from its `/metrics`.

use super::{http, viewer};
use anyhow::Context;
use std::time::Duration;

#[derive(Clone)]
pub(crate) struct ProcSample {
    pub(crate) at: f64,
    pub(crate) cpu_s: f64,
    pub(crate) rss_mb: f64,
    pub(crate) frames_late: f64,
    /// (batches run, requests in them) by stage.
    pub(crate) batches: std::collections::BTreeMap<String, (f64, f64)>,
}

/// The server's CPU seconds and resident memory, from its `/metrics`.
pub(crate) async fn metrics_sample(addr: std::net::SocketAddr) -> anyhow::Result<ProcSample> {
    let r = http::request(addr, "GET", "/metrics", &[], b"", Duration::from_secs(5)).await?;
    anyhow::ensure!(r.status == 200, "/metrics answered {}", r.status);
    let scrape = parse_metrics(&r.text())?;
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.is_empty())
            .and_then(|s| number(&s.value))
            .with_context(|| format!("{name} missing from /metrics"))
    };
    Ok(ProcSample {
        batches: batch_counters(&scrape),
        at: viewer::unix_now(),
        cpu_s: value("huashen_process_cpu_seconds_total")?,
        rss_mb: value("process_resident_memory_bytes")? / 1048576.0,
        frames_late: value("huashen_frames_late_total")?,
    })
}

/// Prometheus text exposition, parsed (by `prometheus-parse`).
pub(crate) fn parse_metrics(text: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .context("/metrics is not Prometheus text")
}

/// A counter's, gauge's or untyped sample's number.
pub(crate) fn number(v: &prometheus_parse::Value) -> Option<f64> {
    use prometheus_parse::Value::*;
    match v {
        Counter(x) | Gauge(x) | Untyped(x) => Some(*x),
        Histogram(_) | Summary(_) => None,
    }
}

/// (batches run, requests in them) by stage, from the series
/// `huashen_batch_runs_total{stage="en_vocoder"}` and `…_items_total`.
pub(crate) fn batch_counters(
    scrape: &prometheus_parse::Scrape,
) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut batches = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for s in &scrape.samples {
        let which = match s.metric.as_str() {
            "huashen_batch_runs_total" => 0,
            "huashen_batch_items_total" => 1,
            _ => continue,
        };
        let (Some(stage), Some(v)) = (s.labels.get("stage"), number(&s.value)) else {
            continue;
        };
        let e = batches.entry(stage.to_owned()).or_default();
        if which == 0 {
            e.0 = v;
        } else {
            e.1 = v;
        }
    }
    batches
}
