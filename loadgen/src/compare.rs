//! Two runs side by side: rates, totals and latency percentiles of `a` and `b`, with the
//! ratio b/a, as a text table or an HTML page with overlaid percentile curves.

use std::fmt::Write as _;

use crate::report;
use crate::summary::{Latency, Summary};

/// One value of one run.
#[derive(Debug, Clone)]
enum Cell {
    Count(u64),
    Rate(f64),
    Micros(u64),
    Text(String),
    Missing,
}

impl Cell {
    fn number(&self) -> Option<f64> {
        match self {
            Cell::Count(n) | Cell::Micros(n) => Some(*n as f64),
            Cell::Rate(rate) => Some(*rate),
            Cell::Text(_) | Cell::Missing => None,
        }
    }

    fn text(&self) -> String {
        match self {
            Cell::Count(n) | Cell::Micros(n) => n.to_string(),
            Cell::Rate(rate) => format!("{rate:.1}"),
            Cell::Text(text) => text.clone(),
            Cell::Missing => "-".to_owned(),
        }
    }
}

/// A section heading or a compared value.
#[derive(Debug, Clone)]
enum Row {
    Section(String),
    Value { label: String, a: Cell, b: Cell },
}

/// b/a to two decimals, or `-` where it means nothing (no numbers, or a is 0).
fn ratio(a: &Cell, b: &Cell) -> String {
    match (a.number(), b.number()) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
        _ => "-".to_owned(),
    }
}

/// `a` and `b` side by side as a text table: metric, a, b, b/a. Latencies are in µs.
pub fn compare(a: &Summary, b: &Summary) -> String {
    let lines: Vec<Result<[String; 4], String>> = rows(a, b)
        .into_iter()
        .map(|row| match row {
            Row::Section(title) => Err(title),
            Row::Value { label, a, b } => Ok([label, a.text(), b.text(), ratio(&a, &b)]),
        })
        .collect();
    let mut widths = ["metric".len(), 1, 1, "b/a".len()];
    for cells in lines.iter().flatten() {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let [w0, w1, w2, w3] = widths;
    // `fmt::Write` for a `String` never fails, hence the ignored results.
    let mut out = format!(
        "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}\n",
        "metric", "a", "b", "b/a"
    );
    for line in lines {
        let _ = match line {
            Err(title) => writeln!(out, "\n{title}"),
            Ok([label, a, b, ratio]) => {
                writeln!(out, "{label:<w0$}  {a:>w1$}  {b:>w2$}  {ratio:>w3$}")
            }
        };
    }
    out
}

/// `a` and `b` side by side as a self-contained HTML page: the table of [`compare`], then
/// each latency metric's percentile curves of both runs in one plot.
pub fn compare_html(a: &Summary, b: &Summary) -> String {
    let title = format!("loadgen compare: {} vs {}", a.scenario, b.scenario);
    let mut body = format!("<h1>{}</h1>\n", report::escape(&title));
    for (name, run) in [("a", a), ("b", b)] {
        let _ = writeln!(
            body,
            "<p><b>{name}</b>: <code>{}</code></p>",
            report::escape(&run.command)
        );
    }
    let mut table_rows = Vec::new();
    for row in rows(a, b) {
        match row {
            Row::Section(title) => {
                table_rows.push(vec![format!("<b>{}</b>", report::escape(&title))]);
            }
            Row::Value { label, a, b } => table_rows.push(vec![
                report::escape(&label),
                report::escape(&a.text()),
                report::escape(&b.text()),
                ratio(&a, &b),
            ]),
        }
    }
    body += &report::table(&["metric", "a", "b", "b/a"], &table_rows);
    for (name, latency_a, latency_b) in latency_pairs(a, b) {
        let mut lines = Vec::new();
        if let Some(latency) = latency_a {
            lines.push(("a", latency));
        }
        if let Some(latency) = latency_b {
            lines.push(("b", latency));
        }
        body += &report::latency_chart(&lines, &format!("{name} latency by percentile"));
    }
    report::page(&title, &body)
}

fn rows(a: &Summary, b: &Summary) -> Vec<Row> {
    let value = |label: &str, a: Cell, b: Cell| Row::Value {
        label: label.to_owned(),
        a,
        b,
    };
    let verdict = |s: &Summary| Cell::Text(if s.audit.passed { "pass" } else { "FAIL" }.into());
    let mut rows = vec![
        Row::Section("run".to_owned()),
        value(
            "scenario",
            Cell::Text(a.scenario.clone()),
            Cell::Text(b.scenario.clone()),
        ),
        value(
            "duration s",
            Cell::Rate(a.duration_s),
            Cell::Rate(b.duration_s),
        ),
        value("audit", verdict(a), verdict(b)),
        value(
            "audit violations",
            Cell::Count(a.audit.violations_total),
            Cell::Count(b.audit.violations_total),
        ),
        Row::Section("rates".to_owned()),
    ];
    let target = |s: &Summary| s.rates.target_msgs_per_s.map_or(Cell::Missing, Cell::Rate);
    rows.push(value("target msg/s", target(a), target(b)));
    let rates: [(&str, Rate); 2] = [
        ("achieved msg/s", |s| s.rates.achieved_msgs_per_s),
        ("connects/s", |s| s.rates.connects_per_s),
    ];
    for (label, rate) in rates {
        rows.push(value(label, Cell::Rate(rate(a)), Cell::Rate(rate(b))));
    }
    rows.push(Row::Section("totals".to_owned()));
    for (label, count) in totals() {
        rows.push(value(label, Cell::Count(count(a)), Cell::Count(count(b))));
    }
    for (name, latency_a, latency_b) in latency_pairs(a, b) {
        rows.push(Row::Section(format!("latency {name} (µs)")));
        for (label, field) in latency_fields() {
            let cell = |latency: Option<&Latency>| latency.map_or(Cell::Missing, field);
            rows.push(value(label, cell(latency_a), cell(latency_b)));
        }
    }
    rows
}

type Rate = fn(&Summary) -> f64;
type Count = fn(&Summary) -> u64;

fn totals() -> [(&'static str, Count); 7] {
    [
        ("connections opened", |s| s.totals.connections_opened),
        ("connect errors", |s| s.totals.connect_errors),
        ("sent", |s| s.totals.sent),
        ("acked", |s| s.totals.acked),
        ("delivered", |s| s.totals.delivered),
        ("send errors", |s| s.totals.send_errors),
        ("protocol errors", |s| s.totals.protocol_errors),
    ]
}

type Field = fn(&Latency) -> Cell;

fn latency_fields() -> [(&'static str, Field); 9] {
    [
        ("count", |l| Cell::Count(l.count)),
        ("min", |l| Cell::Micros(l.min_us)),
        ("mean", |l| Cell::Rate(l.mean_us)),
        ("p50", |l| Cell::Micros(l.p50_us)),
        ("p90", |l| Cell::Micros(l.p90_us)),
        ("p99", |l| Cell::Micros(l.p99_us)),
        ("p99.9", |l| Cell::Micros(l.p999_us)),
        ("p99.99", |l| Cell::Micros(l.p9999_us)),
        ("max", |l| Cell::Micros(l.max_us)),
    ]
}

/// Each latency metric either run has, in report order, with each run's value.
fn latency_pairs<'s>(
    a: &'s Summary,
    b: &'s Summary,
) -> Vec<(&'s str, Option<&'s Latency>, Option<&'s Latency>)> {
    let mut names: Vec<&str> = report::metrics(a).into_iter().map(|(n, _)| n).collect();
    for (name, _) in report::metrics(b) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| (name, a.latency.get(name), b.latency.get(name)))
        .collect()
}
