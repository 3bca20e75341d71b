//! pushd's counters and latency histograms, rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// The two providers, as metric labels and array indexes.
pub const PROVIDERS: [&str; 2] = ["apns", "fcm"];

/// Distinct failure reasons kept per provider; past it they count as `other`
/// (reasons come from provider bodies, so their number must be bounded).
const REASONS_MAX: usize = 64;

/// Latencies above this (µs) are clamped into the top bucket.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Per-provider figures.
#[derive(Debug, Default)]
pub struct ProviderMetrics {
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub dead: AtomicU64,
    pub invalid_tokens: AtomicU64,
    /// Failed sends by reason (the provider's reason string).
    failed: Mutex<BTreeMap<String, u64>>,
    /// Request → response, µs.
    latency: Mutex<Option<Histogram<u64>>>,
    /// Engine's job creation → provider accepted, µs.
    delivery: Mutex<Option<Histogram<u64>>>,
    /// Circuit state per endpoint: 0 closed, 1 open, 2 half-open.
    pub circuit: [AtomicI64; 2],
}

/// Everything pushd counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub busy: AtomicU64,
    pub cancelled: AtomicU64,
    pub queue_depth: AtomicI64,
    pub in_flight: AtomicI64,
    pub engine_links: AtomicU64,
    pub providers: [ProviderMetrics; 2],
}

fn record(h: &Mutex<Option<Histogram<u64>>>, d: Duration) {
    let us = u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, LATENCY_MAX_US);
    let mut h = h.lock().expect("metrics lock is never poisoned");
    let h = h.get_or_insert_with(|| {
        Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static bounds are valid")
    });
    h.saturating_record(us);
}

impl ProviderMetrics {
    pub fn failed(&self, reason: &str) {
        let mut m = self.failed.lock().expect("metrics lock is never poisoned");
        if let Some(n) = m.get_mut(reason) {
            *n += 1;
        } else if m.len() < REASONS_MAX {
            m.insert(reason.to_owned(), 1);
        } else {
            *m.entry("other".to_owned()).or_default() += 1;
        }
    }

    pub fn latency(&self, d: Duration) {
        record(&self.latency, d);
    }

    pub fn delivery(&self, d: Duration) {
        record(&self.delivery, d);
    }

    /// A count of failed sends with `reason`.
    pub fn failed_count(&self, reason: &str) -> u64 {
        let m = self.failed.lock().expect("metrics lock is never poisoned");
        m.get(reason).copied().unwrap_or(0)
    }
}

fn summary(out: &mut String, name: &str, provider: &str, h: &Mutex<Option<Histogram<u64>>>) {
    let h = h.lock().expect("metrics lock is never poisoned");
    let Some(h) = h.as_ref() else {
        let _ = writeln!(out, "{name}_count{{provider=\"{provider}\"}} 0");
        return;
    };
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = h.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}{{provider=\"{provider}\",quantile=\"{q}\"}} {v}"
        );
    }
    let sum = h.mean() * h.len() as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{{provider=\"{provider}\"}} {sum}");
    let _ = writeln!(out, "{name}_count{{provider=\"{provider}\"}} {}", h.len());
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let scalars: [(&str, &str, &str, i128); 7] = [
            (
                "pushd_jobs_received_total",
                "counter",
                "Jobs taken from the engine (made durable).",
                g(&self.received).into(),
            ),
            (
                "pushd_jobs_duplicate_total",
                "counter",
                "Jobs offered again that pushd already had.",
                g(&self.duplicates).into(),
            ),
            (
                "pushd_jobs_busy_total",
                "counter",
                "Jobs refused because the queue was full.",
                g(&self.busy).into(),
            ),
            (
                "pushd_jobs_cancelled_total",
                "counter",
                "Jobs dropped because their device came online.",
                g(&self.cancelled).into(),
            ),
            (
                "pushd_queue_depth",
                "gauge",
                "Jobs held (waiting or in flight).",
                self.queue_depth.load(Ordering::Relaxed).into(),
            ),
            (
                "pushd_in_flight",
                "gauge",
                "Provider requests in flight.",
                self.in_flight.load(Ordering::Relaxed).into(),
            ),
            (
                "pushd_engine_links_total",
                "counter",
                "Engine connections accepted.",
                g(&self.engine_links).into(),
            ),
        ];
        for (name, kind, help, v) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        self.render_providers(&mut out);
        out
    }

    fn render_providers(&self, out: &mut String) {
        self.render_counters(out);
        self.render_failures(out);
        self.render_circuits(out);
        let hists: [(&str, &str, HistField); 2] = [
            (
                "pushd_provider_latency_seconds",
                "Provider request latency.",
                |p| &p.latency,
            ),
            (
                "pushd_delivery_seconds",
                "Engine job creation to provider acceptance.",
                |p| &p.delivery,
            ),
        ];
        for (name, help, field) in hists {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
            for (label, p) in PROVIDERS.iter().zip(&self.providers) {
                summary(out, name, label, field(p));
            }
        }
    }

    fn render_counters(&self, out: &mut String) {
        let counters: [(&str, &str, CounterField); 4] = [
            (
                "pushd_jobs_sent_total",
                "Notifications the provider accepted.",
                |p| &p.sent,
            ),
            (
                "pushd_jobs_retried_total",
                "Sends to be tried again.",
                |p| &p.retried,
            ),
            ("pushd_jobs_dead_total", "Jobs dead-lettered.", |p| &p.dead),
            (
                "pushd_invalid_tokens_total",
                "Tokens the provider refused for good.",
                |p| &p.invalid_tokens,
            ),
        ];
        for (name, help, field) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (label, p) in PROVIDERS.iter().zip(&self.providers) {
                let v = field(p).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{provider=\"{label}\"}} {v}");
            }
        }
    }

    fn render_failures(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP pushd_jobs_failed_total Failed sends by provider reason.\n# TYPE pushd_jobs_failed_total counter"
        );
        for (label, p) in PROVIDERS.iter().zip(&self.providers) {
            let m = p.failed.lock().expect("metrics lock is never poisoned");
            for (reason, n) in m.iter() {
                let reason = reason.replace(['"', '\\', '\n'], "_");
                let _ = writeln!(
                    out,
                    "pushd_jobs_failed_total{{provider=\"{label}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
    }

    fn render_circuits(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP pushd_circuit_state Endpoint circuit: 0 closed, 1 open, 2 half-open.\n# TYPE pushd_circuit_state gauge"
        );
        for (label, p) in PROVIDERS.iter().zip(&self.providers) {
            for (endpoint, c) in ["primary", "secondary"].iter().zip(&p.circuit) {
                let v = c.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "pushd_circuit_state{{provider=\"{label}\",endpoint=\"{endpoint}\"}} {v}"
                );
            }
        }
    }
}

type CounterField = fn(&ProviderMetrics) -> &AtomicU64;
type HistField = fn(&ProviderMetrics) -> &Mutex<Option<Histogram<u64>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_and_bounds_reasons() {
        let m = Metrics::default();
        m.received.fetch_add(3, Ordering::Relaxed);
        m.providers[0].sent.fetch_add(2, Ordering::Relaxed);
        m.providers[0].latency(Duration::from_millis(5));
        for i in 0..100 {
            m.providers[1].failed(&format!("r{i}"));
        }
        let text = m.render();
        for name in [
            "pushd_jobs_received_total 3",
            "pushd_jobs_sent_total{provider=\"apns\"} 2",
            "pushd_jobs_failed_total{provider=\"fcm\",reason=\"other\"} 36",
            "pushd_queue_depth 0",
            "pushd_circuit_state{provider=\"fcm\",endpoint=\"secondary\"} 0",
            "pushd_provider_latency_seconds_count{provider=\"apns\"} 1",
            "pushd_delivery_seconds_count{provider=\"fcm\"} 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
