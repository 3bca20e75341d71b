//! Latency histograms and how they are reported.

use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram tracks; larger values are clamped to it.
const LATENCY_MAX: Duration = Duration::from_secs(600);

/// A latency histogram in nanoseconds, three significant digits.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Latencies {
        let max = u64::try_from(LATENCY_MAX.as_nanos()).expect("LATENCY_MAX fits in u64 ns");
        Latencies {
            histogram: Histogram::new_with_bounds(1, max, 3)
                .expect("1 ns .. LATENCY_MAX at 3 digits are valid bounds"),
        }
    }

    pub fn record_nanos(&mut self, nanos: u64) {
        self.histogram.saturating_record(nanos.max(1));
    }

    pub fn merge(&mut self, other: &Latencies) -> Result<()> {
        self.histogram
            .add(&other.histogram)
            .context("merging latency histograms")
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// p50, p90, p99, p99.9 and max, in microseconds.
    pub fn summary(&self) -> Summary {
        let us = |nanos: u64| round1(nanos as f64 / 1000.0);
        Summary {
            p50: us(self.histogram.value_at_quantile(0.5)),
            p90: us(self.histogram.value_at_quantile(0.9)),
            p99: us(self.histogram.value_at_quantile(0.99)),
            p999: us(self.histogram.value_at_quantile(0.999)),
            max: us(self.histogram.max()),
        }
    }
}

/// Percentiles of one histogram, in microseconds to one decimal.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    /// One report line: `name  p50 …  p90 …`.
    pub fn line(&self, name: &str) -> String {
        format!(
            "  {name:<14} p50 {:>10.1}  p90 {:>10.1}  p99 {:>10.1}  p99.9 {:>10.1}  max {:>10.1}",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// `x` rounded to three decimals, for seconds of CPU time in JSON output.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `x` rounded to one decimal, for JSON output.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_percentiles() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for i in 1..=500 {
            a.record_nanos(i * 1000);
            b.record_nanos((500 + i) * 1000);
        }
        a.merge(&b).unwrap();
        let s = a.summary();
        assert_eq!(a.count(), 1000);
        assert!((s.p50 - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.max - 1000.0).abs() < 1.0, "{s:?}");
    }
}
