//! The run summary: what one run (or one worker process of a run) measured, as versioned JSON.
//!
//! Latencies are kept as whole HDR histograms (base64 of the V2 deflate encoding, the
//! `HISTFAAA…` strings other `HdrHistogram` tools read), so the summaries of several worker
//! processes merge exactly ([`Summary::merge`]) and reports can redraw any percentile.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The summary format this code writes and reads.
pub const VERSION: u32 = 1;

/// Time to open one connection.
pub const CONNECT: &str = "connect";
/// Latency from a message's intended send time to its ack.
pub const SEND_ACK: &str = "send_ack";
/// Latency from a message's intended send time to its delivery to a recipient.
pub const SEND_DELIVER: &str = "send_deliver";
/// Time from reconnecting to having received every missed message.
pub const CATCH_UP: &str = "catch_up";
/// The latency metrics, in the order reports show them.
pub const LATENCY_METRICS: [&str; 4] = [CONNECT, SEND_ACK, SEND_DELIVER, CATCH_UP];

/// Violations kept in [`Audit::violations`]; the rest are only counted. Worst case about
/// 100 × a few hundred bytes.
pub const VIOLATIONS_MAX: usize = 100;

/// Highest latency [`latency_histogram`] tracks; larger values are clamped to it.
pub const LATENCY_MAX: Duration = Duration::from_secs(600);

/// An empty latency histogram in microseconds, 1 µs to [`LATENCY_MAX`], three significant
/// digits (about 24 KiB). Histograms made here merge with each other without resizing.
pub fn latency_histogram() -> Histogram<u64> {
    let max = u64::try_from(LATENCY_MAX.as_micros()).expect("LATENCY_MAX fits in u64 µs");
    Histogram::new_with_bounds(1, max, 3).expect("1 µs .. LATENCY_MAX at 3 digits are valid bounds")
}

/// Records `latency` in `histogram` in microseconds, clamped to the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(us);
}

/// What one run measured. Field names are the JSON keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Always [`VERSION`].
    pub version: u32,
    /// `connect`, `chat`, `group`, `reconnect` or `soak`.
    pub scenario: String,
    /// The command line that started the run.
    pub command: String,
    pub started_unix_ms: u64,
    pub duration_s: f64,
    /// The scenario's options, by name.
    pub params: BTreeMap<String, serde_json::Value>,
    pub totals: Totals,
    pub rates: Rates,
    /// By metric name ([`LATENCY_METRICS`]); a metric the scenario does not measure is absent.
    pub latency: BTreeMap<String, Latency>,
    /// One sample per second of the run, in `t_s` order.
    pub timeline: Vec<Sample>,
    /// Figures scraped from the server, in `t_s` order; empty when not scraped.
    pub server: Vec<ServerSample>,
    pub audit: Audit,
}

/// Counts over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub connections_opened: u64,
    pub connect_errors: u64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub send_errors: u64,
    pub protocol_errors: u64,
}

/// Rates over the whole run, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// The open-loop send rate asked for; `None` for scenarios that send nothing.
    pub target_msgs_per_s: Option<f64>,
    pub achieved_msgs_per_s: f64,
    pub connects_per_s: f64,
}

/// One latency metric: headline percentiles in microseconds and the histogram they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
    /// Base64 of the `HdrHistogram` V2 deflate serialization (`HISTFAAA…`).
    pub histogram: String,
}

/// One second of the run. Counts are for that second; `connections` is the number open at
/// its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub t_s: u64,
    pub connections: u64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub errors: u64,
    /// p99 of send→deliver for messages delivered in this second; `None` if none were.
    pub send_deliver_p99_us: Option<u64>,
}

/// Server-side figures scraped at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSample {
    /// Seconds since the start of the run.
    pub t_s: u64,
    pub rss_bytes: u64,
    /// Open client connections, if the server reports them.
    pub connections: Option<u64>,
    /// CPU time used since the server started (user + system), in seconds.
    pub cpu_s: f64,
}

/// The correctness audit: every acked message delivered exactly once per online device, in
/// seq order, with no gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub passed: bool,
    pub checked_messages: u64,
    /// The first [`VIOLATIONS_MAX`] violations.
    pub violations: Vec<String>,
    /// All violations, including those not kept in `violations`.
    pub violations_total: u64,
}

impl Default for Audit {
    /// An audit that has checked nothing and found nothing wrong.
    fn default() -> Audit {
        Audit {
            passed: true,
            checked_messages: 0,
            violations: Vec::new(),
            violations_total: 0,
        }
    }
}

impl Audit {
    /// Fails the audit with `violation`, keeping its text if fewer than [`VIOLATIONS_MAX`]
    /// are kept.
    pub fn violation(&mut self, violation: String) {
        self.passed = false;
        self.violations_total += 1;
        if self.violations.len() < VIOLATIONS_MAX {
            self.violations.push(violation);
        }
    }

    fn merge(&mut self, other: &Audit) {
        self.passed = self.passed && other.passed;
        self.checked_messages += other.checked_messages;
        self.violations_total += other.violations_total;
        let room = VIOLATIONS_MAX.saturating_sub(self.violations.len());
        self.violations
            .extend(other.violations.iter().take(room).cloned());
    }
}

impl Totals {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Totals) {
        self.connections_opened += other.connections_opened;
        self.connect_errors += other.connect_errors;
        self.sent += other.sent;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.send_errors += other.send_errors;
        self.protocol_errors += other.protocol_errors;
    }
}

impl Rates {
    /// Worker processes run side by side, so their rates add.
    fn merge(&mut self, other: &Rates) {
        self.target_msgs_per_s = match (self.target_msgs_per_s, other.target_msgs_per_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.achieved_msgs_per_s += other.achieved_msgs_per_s;
        self.connects_per_s += other.connects_per_s;
    }
}

impl Sample {
    /// Counts add. The merged p99 is the larger of the two: an upper bound, since per-second
    /// histograms are not kept.
    fn merge(&mut self, other: &Sample) {
        self.connections += other.connections;
        self.sent += other.sent;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.errors += other.errors;
        self.send_deliver_p99_us = self.send_deliver_p99_us.max(other.send_deliver_p99_us);
    }
}

impl Latency {
    /// Percentiles and encoding of `histogram`, whose values are microseconds.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Result<Latency> {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(histogram, &mut bytes)
            .map_err(|err| Error::Histogram(format!("encoding: {err}")))?;
        let at = |quantile: f64| histogram.value_at_quantile(quantile);
        Ok(Latency {
            count: histogram.len(),
            min_us: histogram.min(),
            mean_us: (histogram.mean() * 10.0).round() / 10.0,
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            p9999_us: at(0.9999),
            max_us: histogram.max(),
            histogram: BASE64.encode(bytes),
        })
    }

    /// The histogram this was made from, decoded.
    pub fn histogram(&self) -> Result<Histogram<u64>> {
        let histogram = decode_histogram(&self.histogram)?;
        if histogram.len() != self.count {
            return Err(Error::Histogram(format!(
                "holds {} values, the summary says {}",
                histogram.len(),
                self.count
            )));
        }
        Ok(histogram)
    }

    /// Both latencies' values in one: the histograms added, percentiles recomputed.
    pub fn merge(&self, other: &Latency) -> Result<Latency> {
        let mut histogram = self.histogram()?;
        // Histograms from elsewhere may have other bounds; grow rather than fail.
        histogram.auto(true);
        histogram
            .add(other.histogram()?)
            .map_err(|err| Error::Histogram(format!("adding: {err}")))?;
        Latency::from_histogram(&histogram)
    }
}

impl Summary {
    /// An empty summary of a run of `scenario` started at `started_unix_ms`.
    pub fn new(scenario: &str, command: &str, started_unix_ms: u64) -> Summary {
        Summary {
            version: VERSION,
            scenario: scenario.to_owned(),
            command: command.to_owned(),
            started_unix_ms,
            duration_s: 0.0,
            params: BTreeMap::new(),
            totals: Totals::default(),
            rates: Rates::default(),
            latency: BTreeMap::new(),
            timeline: Vec::new(),
            server: Vec::new(),
            audit: Audit::default(),
        }
    }

    /// Writes the summary to `path` as pretty-printed JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(Error::Encode)?;
        json.push(b'\n');
        fs::write(path, json).map_err(|source| Error::Io {
            op: "writing",
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a summary written by [`Summary::write`], checking its version first.
    pub fn read(path: &Path) -> Result<Summary> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u64,
        }
        let json = fs::read(path).map_err(|source| Error::Io {
            op: "reading",
            path: path.to_owned(),
            source,
        })?;
        let json_error = |source| Error::Json {
            path: path.to_owned(),
            source,
        };
        let Versioned { version } = serde_json::from_slice(&json).map_err(json_error)?;
        if version != u64::from(VERSION) {
            return Err(Error::Version {
                path: path.to_owned(),
                found: version,
                expected: VERSION,
            });
        }
        serde_json::from_slice(&json).map_err(json_error)
    }

    /// Folds in the summary of another worker process of the same run.
    ///
    /// Totals, rates and latency histograms add; timelines add second by second. The start is
    /// the earlier one, the duration the longer one. Parameters and server samples are kept
    /// from `self` where both have them (the server is the same process for every worker).
    pub fn merge(&mut self, other: &Summary) -> Result<()> {
        if other.version != self.version {
            return Err(Error::Merge(format!(
                "versions differ: {} and {}",
                self.version, other.version
            )));
        }
        if other.scenario != self.scenario {
            return Err(Error::Merge(format!(
                "scenarios differ: {:?} and {:?}",
                self.scenario, other.scenario
            )));
        }
        for (name, latency) in &other.latency {
            let merged = match self.latency.get(name) {
                Some(mine) => mine
                    .merge(latency)
                    .map_err(|err| Error::Merge(format!("{name}: {err}")))?,
                None => latency.clone(),
            };
            self.latency.insert(name.clone(), merged);
        }
        self.started_unix_ms = self.started_unix_ms.min(other.started_unix_ms);
        self.duration_s = self.duration_s.max(other.duration_s);
        for (name, value) in &other.params {
            self.params
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        self.totals.merge(&other.totals);
        self.rates.merge(&other.rates);
        self.timeline = merge_timelines(&self.timeline, &other.timeline);
        self.server = merge_server(&self.server, &other.server);
        self.audit.merge(&other.audit);
        Ok(())
    }
}

/// A histogram from base64 of its V2 (deflate or plain) serialization, as Java's
/// `encodeIntoCompressedByteBuffer` and [`Latency::from_histogram`] write it.
pub fn decode_histogram(base64: &str) -> Result<Histogram<u64>> {
    let bytes = BASE64
        .decode(base64.trim())
        .map_err(|err| Error::Histogram(format!("not base64: {err}")))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|err| Error::Histogram(format!("decoding: {err}")))
}

fn merge_timelines(a: &[Sample], b: &[Sample]) -> Vec<Sample> {
    let mut by_second: BTreeMap<u64, Sample> = BTreeMap::new();
    for sample in a.iter().chain(b) {
        by_second
            .entry(sample.t_s)
            .and_modify(|merged| merged.merge(sample))
            .or_insert(*sample);
    }
    by_second.into_values().collect()
}

fn merge_server(a: &[ServerSample], b: &[ServerSample]) -> Vec<ServerSample> {
    let mut by_second: BTreeMap<u64, ServerSample> = BTreeMap::new();
    for sample in a.iter().chain(b) {
        by_second.entry(sample.t_s).or_insert(*sample);
    }
    by_second.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(values: impl IntoIterator<Item = u64>) -> Latency {
        let mut histogram = latency_histogram();
        for value in values {
            histogram.record(value).unwrap();
        }
        Latency::from_histogram(&histogram).unwrap()
    }

    fn worker(sent: u64, latencies: impl IntoIterator<Item = u64>) -> Summary {
        let mut summary = Summary::new("chat", "loadgen chat --rate 100", 1_700_000_000_000);
        summary.duration_s = 10.0;
        summary.totals.sent = sent;
        summary.rates.target_msgs_per_s = Some(50.0);
        summary.rates.achieved_msgs_per_s = sent as f64 / 10.0;
        summary
            .latency
            .insert(SEND_DELIVER.to_owned(), latency(latencies));
        summary
    }

    #[test]
    fn latency_round_trips_through_base64() {
        let latency = latency(1..=1000);
        assert_eq!(latency.count, 1000);
        assert_eq!(latency.min_us, 1);
        assert_eq!(latency.p50_us, 500);
        assert_eq!(latency.max_us, 1000);
        assert!(
            latency.histogram.starts_with("HISTFAAA"),
            "{}",
            latency.histogram
        );
        let decoded = latency.histogram().unwrap();
        assert_eq!(decoded.len(), 1000);
        assert_eq!(decoded.value_at_quantile(0.99), 990);
    }

    #[test]
    fn empty_latency_round_trips() {
        let latency = Latency::from_histogram(&latency_histogram()).unwrap();
        assert_eq!(latency.count, 0);
        assert_eq!(latency.max_us, 0);
        assert!(latency.histogram().unwrap().is_empty());
    }

    #[test]
    fn corrupt_histogram_is_an_error() {
        let mut bad = latency(1..=10);
        bad.histogram = "not base64!".to_owned();
        assert!(matches!(bad.histogram(), Err(Error::Histogram(_))));
        bad.histogram = BASE64.encode(b"HIST but not really");
        assert!(matches!(bad.histogram(), Err(Error::Histogram(_))));
        let mut lying = latency(1..=10);
        lying.count = 11;
        assert!(matches!(lying.histogram(), Err(Error::Histogram(_))));
    }

    #[test]
    fn merge_adds_histograms_totals_and_rates() {
        let mut a = worker(1000, 1..=500);
        let b = worker(3000, 501..=1000);
        a.merge(&b).unwrap();
        let merged = &a.latency[SEND_DELIVER];
        assert_eq!(merged.count, 1000);
        assert_eq!(merged.min_us, 1);
        assert_eq!(merged.p50_us, 500);
        assert_eq!(merged.max_us, 1000);
        assert_eq!(a.totals.sent, 4000);
        assert_eq!(a.rates.target_msgs_per_s, Some(100.0));
        assert!((a.rates.achieved_msgs_per_s - 400.0).abs() < 1e-9);
    }

    #[test]
    fn merge_keeps_latencies_only_one_side_has() {
        let mut a = worker(1, [10]);
        let mut b = worker(1, [20]);
        b.latency.insert(CONNECT.to_owned(), latency([300, 400]));
        a.merge(&b).unwrap();
        assert_eq!(a.latency[CONNECT].count, 2);
        assert_eq!(a.latency[SEND_DELIVER].count, 2);
    }

    #[test]
    fn merge_grows_to_fit_other_bounds() {
        let mut narrow = Histogram::<u64>::new_with_bounds(1, 1000, 2).unwrap();
        narrow.record(7).unwrap();
        let narrow = Latency::from_histogram(&narrow).unwrap();
        let merged = narrow.merge(&latency([5_000_000])).unwrap();
        assert_eq!(merged.count, 2);
        assert!(merged.max_us >= 5_000_000);
    }

    #[test]
    fn merge_joins_timelines_by_second() {
        let mut a = worker(0, []);
        let mut b = worker(0, []);
        let at = |t_s, sent, p99| Sample {
            t_s,
            connections: 10,
            sent,
            send_deliver_p99_us: p99,
            ..Sample::default()
        };
        a.timeline = vec![at(0, 1, None), at(1, 2, Some(100))];
        b.timeline = vec![at(1, 5, Some(300)), at(2, 7, Some(50))];
        a.merge(&b).unwrap();
        let seconds: Vec<_> = a.timeline.iter().map(|s| (s.t_s, s.sent)).collect();
        assert_eq!(seconds, [(0, 1), (1, 7), (2, 7)]);
        assert_eq!(a.timeline[1].connections, 20);
        assert_eq!(a.timeline[1].send_deliver_p99_us, Some(300));
    }

    #[test]
    fn merge_bounds_violations_and_fails_if_either_failed() {
        let mut a = worker(0, []);
        let mut b = worker(0, []);
        for i in 0..VIOLATIONS_MAX + 5 {
            a.audit.violation(format!("a{i}"));
        }
        b.audit.violation("b0".to_owned());
        b.audit.checked_messages = 9;
        a.merge(&b).unwrap();
        assert!(!a.audit.passed);
        assert_eq!(a.audit.violations.len(), VIOLATIONS_MAX);
        assert_eq!(a.audit.violations_total, VIOLATIONS_MAX as u64 + 6);
        assert_eq!(a.audit.checked_messages, 9);
    }

    #[test]
    fn merge_refuses_another_scenario() {
        let mut a = worker(0, []);
        let mut b = worker(0, []);
        b.scenario = "group".to_owned();
        assert!(matches!(a.merge(&b), Err(Error::Merge(_))));
    }

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let mut summary = worker(100, [1, 2, 3]);
        summary
            .params
            .insert("rate".to_owned(), serde_json::json!(100));
        summary.server.push(ServerSample {
            t_s: 1,
            rss_bytes: 1 << 20,
            connections: Some(3),
            cpu_s: 0.5,
        });
        summary.write(&path).unwrap();
        assert_eq!(Summary::read(&path).unwrap(), summary);
    }

    #[test]
    fn read_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = Summary::read(&missing).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing.json"), "{err}");

        let garbage = dir.path().join("garbage.json");
        fs::write(&garbage, "{ not json").unwrap();
        assert!(matches!(Summary::read(&garbage), Err(Error::Json { .. })));

        let future = dir.path().join("future.json");
        fs::write(&future, r#"{"version": 2, "scenario": "chat"}"#).unwrap();
        let err = Summary::read(&future).unwrap_err();
        assert!(matches!(err, Error::Version { found: 2, .. }), "{err}");
    }
}
