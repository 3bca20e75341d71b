//! `loadgen compare`: two runs side by side with the ratio b/a.

mod support;

use loadgen::compare::{compare, compare_html};
use support::{check_markup, sample};

/// The cells of the text table's row labelled `label` (labels may hold spaces).
fn row<'t>(table: &'t str, section: &str, label: &str) -> Vec<&'t str> {
    let start = table
        .find(&format!("\n{section}\n"))
        .unwrap_or_else(|| panic!("no section {section}"));
    let line = table[start..]
        .lines()
        .find(|line| line.starts_with(&format!("{label}  ")))
        .unwrap_or_else(|| panic!("no {label} in {section}"));
    line[label.len()..].split_whitespace().collect()
}

#[test]
fn text_table_has_values_and_ratios() {
    let (a, b) = (sample(1), sample(2));
    let table = compare(&a, &b);
    assert!(table.starts_with("metric"), "{table}");
    assert_eq!(row(&table, "run", "scenario"), ["chat", "chat", "-"]);
    assert_eq!(row(&table, "run", "audit"), ["pass", "pass", "-"]);
    assert_eq!(
        row(&table, "rates", "achieved msg/s"),
        ["4999.7", "2499.8", "0.50"]
    );
    assert_eq!(
        row(&table, "rates", "target msg/s"),
        ["5000.0", "5000.0", "1.00"]
    );
    assert_eq!(row(&table, "totals", "sent"), ["150000", "150000", "1.00"]);
    let p99_a = a.latency["send_deliver"].p99_us;
    let p99_b = b.latency["send_deliver"].p99_us;
    let ratio = format!("{:.2}", p99_b as f64 / p99_a as f64);
    assert_eq!(
        row(&table, "latency send_deliver (µs)", "p99"),
        [p99_a.to_string(), p99_b.to_string(), ratio]
    );
}

#[test]
fn columns_line_up() {
    let table = compare(&sample(1), &sample(3));
    let widths: Vec<usize> = table
        .lines()
        .filter(|line| line.contains("  "))
        .map(|line| line.chars().count())
        .collect();
    assert!(widths.len() > 40, "{table}");
    assert!(widths.iter().all(|w| *w == widths[0]), "{table}");
}

#[test]
fn missing_values_and_zero_bases_show_a_dash() {
    let a = sample(1);
    let mut b = sample(1);
    b.latency.remove("catch_up");
    b.rates.target_msgs_per_s = None;
    b.audit.violation("lost one".to_owned());
    let table = compare(&a, &b);
    assert_eq!(row(&table, "rates", "target msg/s"), ["5000.0", "-", "-"]);
    assert_eq!(row(&table, "latency catch_up (µs)", "p50")[1..], ["-", "-"]);
    assert_eq!(row(&table, "totals", "connect errors"), ["0", "0", "-"]);
    assert_eq!(row(&table, "run", "audit"), ["pass", "FAIL", "-"]);
    assert_eq!(row(&table, "run", "audit violations"), ["0", "1", "-"]);
}

#[test]
fn html_overlays_both_runs() {
    let a = sample(1);
    let mut b = sample(2);
    b.latency.remove("catch_up");
    b.command = "loadgen <b> & 'c'".to_owned();
    let html = compare_html(&a, &b);
    check_markup(&html).unwrap();
    assert!(!html.contains("http"));
    assert!(!html.contains("<b> &"));
    assert_eq!(html.matches("<svg").count(), 4);
    let send_deliver = html
        .find("<title>send_deliver latency by percentile")
        .unwrap();
    let svg = &html[send_deliver..send_deliver + html[send_deliver..].find("</svg>").unwrap()];
    assert_eq!(svg.matches("<polyline").count(), 2);
    let catch_up = html.find("<title>catch_up latency by percentile").unwrap();
    let svg = &html[catch_up..catch_up + html[catch_up..].find("</svg>").unwrap()];
    assert_eq!(svg.matches("<polyline").count(), 1);
    assert!(html.contains("<tr><td>p99</td>"));
}
