//! Sample summaries and a markup check shared by the output tests.

#![allow(dead_code, reason = "each test file uses a part of this module")]

use loadgen::summary::{
    Audit, LATENCY_METRICS, Latency, Sample, ServerSample, Summary, latency_histogram,
};
use serde_json::json;

/// A 30-second `chat` run with every latency metric, a timeline and server samples. `slow`
/// scales its latencies.
pub fn sample(slow: u64) -> Summary {
    let mut summary = Summary::new(
        "chat",
        "loadgen run chat --conns 1000 --rate 5000",
        1_700_000_000_000,
    );
    summary.duration_s = 30.0;
    summary.params.insert("conns".to_owned(), json!(1000));
    summary.params.insert("rate".to_owned(), json!(5000.0));
    summary
        .params
        .insert("sources".to_owned(), json!("127.0.0.2-127.0.0.20"));
    summary.totals.connections_opened = 1000;
    summary.totals.sent = 150_000;
    summary.totals.acked = 149_990;
    summary.totals.delivered = 149_990;
    summary.totals.send_errors = 10;
    summary.rates.target_msgs_per_s = Some(5000.0);
    summary.rates.achieved_msgs_per_s = 4999.7 / slow as f64;
    summary.rates.connects_per_s = 500.0;
    for (i, name) in (1_u64..).zip(LATENCY_METRICS) {
        let mut histogram = latency_histogram();
        for v in 1..=2000_u64 {
            // A body around 100·i µs and a tail to a few ms.
            histogram
                .record(slow * (i * 100 + v * v / 1000))
                .expect("sample latencies are far below LATENCY_MAX");
        }
        let latency = Latency::from_histogram(&histogram).expect("a histogram in memory encodes");
        summary.latency.insert(name.to_owned(), latency);
    }
    summary.timeline = (0..30)
        .map(|t_s| Sample {
            t_s,
            connections: (t_s * 100).min(1000),
            sent: if t_s < 2 { 0 } else { 5000 + t_s % 3 * 10 },
            acked: if t_s < 2 { 0 } else { 5000 },
            delivered: if t_s < 2 { 0 } else { 4990 + t_s % 5 },
            errors: u64::from(t_s == 7),
            send_deliver_p99_us: Some(900 + t_s),
        })
        .collect();
    summary.server = (0..30)
        .map(|t_s| ServerSample {
            t_s,
            rss_bytes: (40 + t_s.min(10) * 3) << 20,
            connections: Some((t_s * 100).min(1000)),
            cpu_s: t_s as f64 * 0.8,
        })
        .collect();
    summary.audit = Audit {
        passed: true,
        checked_messages: 149_990,
        violations: Vec::new(),
        violations_total: 0,
    };
    summary
}

/// Elements that have no end tag in HTML.
const VOID: [&str; 1] = ["meta"];

/// Checks that every start tag has its end tag, in order, that attribute quotes pair up and
/// that no `>` stands in text (unescaped markup). A small stand-in for an XML parser.
pub fn check_markup(html: &str) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        if rest[..start].contains('>') {
            return Err(format!("stray '>' before {:?}", &rest[start..start + 40]));
        }
        let tag_and_rest = &rest[start + 1..];
        let end = tag_and_rest.find('>').ok_or("unclosed '<'")?;
        let tag = &tag_and_rest[..end];
        rest = &tag_and_rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if !tag.matches('"').count().is_multiple_of(2) {
            return Err(format!("unpaired quote in <{tag}>"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            let expected = open.pop().ok_or(format!("</{name}> closes nothing"))?;
            if expected != name {
                return Err(format!("</{name}> closes <{expected}>"));
            }
            continue;
        }
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("bad tag <{tag}>"));
        }
        if !tag.ends_with('/') && !VOID.contains(&name) {
            open.push(name);
        }
    }
    if rest.contains('>') {
        return Err("stray '>' at the end".to_owned());
    }
    match open.as_slice() {
        [] => Ok(()),
        unclosed => Err(format!("unclosed {unclosed:?}")),
    }
}

/// Each `<svg …>…</svg>` in `html`.
pub fn svg_fragments(html: &str) -> Vec<&str> {
    html.match_indices("<svg")
        .map(|(start, _)| {
            let end = html[start..].find("</svg>").expect("every <svg> is closed");
            &html[start..start + end + "</svg>".len()]
        })
        .collect()
}
