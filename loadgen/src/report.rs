//! A self-contained HTML report of one run: parameters, totals, the audit verdict, latency
//! percentiles, and inline SVG plots. No scripts, fonts or other files; it works offline.

mod plot;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use hdrhistogram::Histogram;

use crate::summary::{LATENCY_METRICS, Latency, Summary};
use crate::{Error, Result};

use self::plot::{Chart, Series, XAxis};

/// The report for `summary`, as one HTML document.
pub fn render(summary: &Summary) -> String {
    let title = format!("loadgen {} report", summary.scenario);
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    body += &verdict(summary);
    body += "<h2>Run</h2>\n";
    body += &run_table(summary);
    body += "<h2>Totals</h2>\n";
    body += &totals_table(summary);
    body += "<h2>Latency</h2>\n";
    body += &latency_table(&metrics(summary));
    for (name, latency) in metrics(summary) {
        body += &latency_chart(&[(name, latency)], &format!("{name} latency by percentile"));
    }
    body += "<h2>Over time</h2>\n";
    body += &throughput_chart(summary);
    body += &connections_chart(summary);
    if !summary.server.is_empty() {
        body += "<h2>Server</h2>\n";
        body += &server_charts(summary);
    }
    body += &violations(summary);
    page(&title, &body)
}

/// Writes the report for `summary` to `path`.
pub fn write(path: &Path, summary: &Summary) -> Result<()> {
    fs::write(path, render(summary)).map_err(|source| Error::Io {
        op: "writing",
        path: path.to_owned(),
        source,
    })
}

/// `text` with the five HTML-special characters escaped, safe in text and quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A whole HTML document around `body` (already escaped), with the report's styles.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

const STYLE: &str = "\
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 820px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
td:first-child, th:first-child { text-align: left; }
code { font-size: 0.9em; word-break: break-all; }
.verdict { padding: 0.8em 1em; font-size: 1.2em; font-weight: bold; border-radius: 4px; }
.pass { background: #e3f5e1; color: #1b5e20; } .fail { background: #fde2e1; color: #b71c1c; }
svg.chart { display: block; margin: 1em 0; font-size: 11px; }
svg .title { font-size: 13px; font-weight: bold; } svg .legend, svg .label { font-size: 12px; }
svg .grid { stroke: #e5e5e5; } svg .axis { stroke: #555; } svg .empty { fill: #999; }
";

/// The latency metrics to show: the known ones in their order, then any others.
pub(crate) fn metrics(summary: &Summary) -> Vec<(&str, &Latency)> {
    let known = LATENCY_METRICS
        .iter()
        .filter_map(|name| summary.latency.get_key_value(*name));
    let others = summary
        .latency
        .iter()
        .filter(|(name, _)| !LATENCY_METRICS.contains(&name.as_str()));
    known
        .chain(others)
        .map(|(name, latency)| (name.as_str(), latency))
        .collect()
}

fn verdict(summary: &Summary) -> String {
    let audit = &summary.audit;
    let checked = group(audit.checked_messages);
    if audit.passed {
        format!(
            "<p class=\"verdict pass\">PASS: audit checked {checked} messages, no violations</p>\n"
        )
    } else {
        format!(
            "<p class=\"verdict fail\">FAIL: {} audit violations in {checked} messages \
             (listed below)</p>\n",
            group(audit.violations_total)
        )
    }
}

fn run_table(summary: &Summary) -> String {
    let rates = &summary.rates;
    let mut rows = vec![
        ("scenario".to_owned(), escape(&summary.scenario)),
        (
            "command".to_owned(),
            format!("<code>{}</code>", escape(&summary.command)),
        ),
        ("started".to_owned(), utc(summary.started_unix_ms)),
        (
            "duration".to_owned(),
            format!("{:.1} s", summary.duration_s),
        ),
        (
            "target rate".to_owned(),
            rates
                .target_msgs_per_s
                .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1} msg/s")),
        ),
        (
            "achieved rate".to_owned(),
            format!("{:.1} msg/s", rates.achieved_msgs_per_s),
        ),
        (
            "connect rate".to_owned(),
            format!("{:.1} conn/s", rates.connects_per_s),
        ),
    ];
    for (name, value) in &summary.params {
        let value = match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        rows.push((format!("--{}", escape(name)), escape(&value)));
    }
    table(&["", ""], &rows_of_pairs(rows))
}

fn totals_table(summary: &Summary) -> String {
    let t = &summary.totals;
    let rows = [
        ("connections opened", t.connections_opened),
        ("connect errors", t.connect_errors),
        ("sent", t.sent),
        ("acked", t.acked),
        ("delivered", t.delivered),
        ("send errors", t.send_errors),
        ("protocol errors", t.protocol_errors),
    ]
    .into_iter()
    .map(|(name, count)| vec![name.to_owned(), group(count)])
    .collect::<Vec<_>>();
    table(&["", "count"], &rows)
}

fn latency_table(metrics: &[(&str, &Latency)]) -> String {
    let header = [
        "metric", "count", "min", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max",
    ];
    let rows: Vec<Vec<String>> = metrics
        .iter()
        .map(|(name, l)| {
            let mut row = vec![escape(name), group(l.count), micros(l.min_us as f64)];
            row.push(micros(l.mean_us));
            for us in [
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.p9999_us, l.max_us,
            ] {
                row.push(micros(us as f64));
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// One chart of latency by percentile with a line per `(name, latency)`, or a note saying
/// why a histogram could not be read.
pub(crate) fn latency_chart(lines: &[(&str, &Latency)], title: &str) -> String {
    let mut histograms = Vec::new();
    for (name, latency) in lines {
        match latency.histogram() {
            Ok(histogram) => histograms.push((*name, histogram)),
            Err(err) => {
                return format!("<p>{}: {}</p>\n", escape(title), escape(&err.to_string()));
            }
        }
    }
    let max_us = histograms.iter().map(|(_, h)| h.max()).max().unwrap_or(0);
    let (unit, divisor) = latency_unit(max_us);
    let series = histograms
        .iter()
        .map(|(name, histogram)| Series {
            name: (*name).to_owned(),
            points: percentile_points(histogram, divisor),
        })
        .collect();
    Chart {
        title: title.to_owned(),
        x_label: "percentile".to_owned(),
        y_label: format!("latency ({unit})"),
        x_axis: XAxis::Percentile,
        series,
    }
    .svg()
}

/// Latency at 101 quantiles evenly spaced on the percentile axis, 0% to 99.999%.
fn percentile_points(histogram: &Histogram<u64>, divisor: f64) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    (0..=100_u8)
        .map(|i| {
            let quantile = 1.0 - 10_f64.powf(-f64::from(i) / 20.0);
            let value = histogram.value_at_quantile(quantile) as f64 / divisor;
            (quantile, value)
        })
        .collect()
}

/// A unit that keeps axis labels short for latencies up to `max_us`.
fn latency_unit(max_us: u64) -> (&'static str, f64) {
    if max_us >= 10_000_000 {
        ("s", 1e6)
    } else if max_us >= 10_000 {
        ("ms", 1e3)
    } else {
        ("µs", 1.0)
    }
}

fn throughput_chart(summary: &Summary) -> String {
    let per_second = |count: fn(&crate::summary::Sample) -> u64| {
        summary
            .timeline
            .iter()
            .map(|s| (s.t_s as f64, count(s) as f64))
            .collect()
    };
    Chart {
        title: "Throughput".to_owned(),
        x_label: "time (s)".to_owned(),
        y_label: "messages per second".to_owned(),
        x_axis: XAxis::Linear,
        series: vec![
            Series {
                name: "sent".to_owned(),
                points: per_second(|s| s.sent),
            },
            Series {
                name: "delivered".to_owned(),
                points: per_second(|s| s.delivered),
            },
        ],
    }
    .svg()
}

fn connections_chart(summary: &Summary) -> String {
    let mut series = vec![Series {
        name: "loadgen".to_owned(),
        points: summary
            .timeline
            .iter()
            .map(|s| (s.t_s as f64, s.connections as f64))
            .collect(),
    }];
    let server: Vec<(f64, f64)> = summary
        .server
        .iter()
        .filter_map(|s| Some((s.t_s as f64, s.connections? as f64)))
        .collect();
    if !server.is_empty() {
        series.push(Series {
            name: "server".to_owned(),
            points: server,
        });
    }
    Chart {
        title: "Open connections".to_owned(),
        x_label: "time (s)".to_owned(),
        y_label: "connections".to_owned(),
        x_axis: XAxis::Linear,
        series,
    }
    .svg()
}

/// Server RSS, and CPU use as cores busy between consecutive samples.
fn server_charts(summary: &Summary) -> String {
    let samples = &summary.server;
    let rss = samples
        .iter()
        .map(|s| (s.t_s as f64, s.rss_bytes as f64 / f64::from(1 << 20)))
        .collect();
    let cpu = samples
        .windows(2)
        .filter(|pair| pair[1].t_s > pair[0].t_s)
        .map(|pair| {
            let seconds = (pair[1].t_s - pair[0].t_s) as f64;
            let busy = (pair[1].cpu_s - pair[0].cpu_s).max(0.0);
            (pair[1].t_s as f64, busy / seconds)
        })
        .collect();
    let chart = |title: &str, y_label: &str, name: &str, points| {
        Chart {
            title: title.to_owned(),
            x_label: "time (s)".to_owned(),
            y_label: y_label.to_owned(),
            x_axis: XAxis::Linear,
            series: vec![Series {
                name: name.to_owned(),
                points,
            }],
        }
        .svg()
    };
    chart("Server memory", "RSS (MiB)", "RSS", rss)
        + &chart("Server CPU", "CPU (cores busy)", "user + system", cpu)
}

fn violations(summary: &Summary) -> String {
    let audit = &summary.audit;
    if audit.violations.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "<h2>Audit violations</h2>\n<p>{} in all; the first {} are:</p>\n<ol>\n",
        group(audit.violations_total),
        audit.violations.len()
    );
    for violation in &audit.violations {
        let _ = writeln!(out, "<li><code>{}</code></li>", escape(violation));
    }
    out.push_str("</ol>\n");
    out
}

/// An HTML table; cells are already escaped.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table>\n");
    if header.iter().any(|cell| !cell.is_empty()) {
        out.push_str("<tr>");
        for cell in header {
            let _ = write!(out, "<th>{}</th>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

fn rows_of_pairs(pairs: Vec<(String, String)>) -> Vec<Vec<String>> {
    pairs.into_iter().map(|(a, b)| vec![a, b]).collect()
}

/// `n` with thousands separated: `1,234,567`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A latency in a readable unit: `850 µs`, `12.35 ms`, `1.20 s`.
pub(crate) fn micros(us: f64) -> String {
    if us < 1e3 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `unix_ms` as `2024-05-01 12:34:56 UTC`.
fn utc(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let (era, day_of_era) = (z / 146_097, z % 146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn formats_numbers_and_times() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(micros(850.0), "850 µs");
        assert_eq!(micros(12_345.0), "12.35 ms");
        assert_eq!(micros(1_200_000.0), "1.20 s");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
    }
}
