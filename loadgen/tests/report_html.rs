//! The HTML report: one plot per chart, self-contained, well-formed, escaped.

mod support;

use loadgen::report;
use support::{check_markup, sample, svg_fragments};

/// Elements the plots use; anything else in an `<svg>` is a mistake.
const SVG_ELEMENTS: [&str; 7] = ["svg", "title", "text", "line", "polyline", "rect", "/"];

#[test]
fn one_svg_per_plot() {
    let html = report::render(&sample(1));
    // Four latency curves, throughput, connections, server RSS and CPU.
    assert_eq!(html.matches("<svg").count(), 8);
    assert_eq!(html.matches("</svg>").count(), 8);
    for title in [
        "connect latency by percentile",
        "send_ack latency by percentile",
        "send_deliver latency by percentile",
        "catch_up latency by percentile",
        "Throughput",
        "Open connections",
        "Server memory",
        "Server CPU",
    ] {
        assert!(html.contains(&format!("<title>{title}</title>")), "{title}");
    }
}

#[test]
fn no_server_plots_without_server_samples() {
    let mut summary = sample(1);
    summary.server.clear();
    summary.latency.remove("catch_up");
    let html = report::render(&summary);
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(!html.contains("Server"));
}

#[test]
fn self_contained() {
    let html = report::render(&sample(1));
    for reference in [
        "http", "src=", "href=", "url(", "@import", "<script", "<link",
    ] {
        assert!(!html.contains(reference), "{reference}");
    }
}

#[test]
fn markup_is_balanced() {
    let html = report::render(&sample(1));
    check_markup(&html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>\n<html"));
    for svg in svg_fragments(&html) {
        check_markup(svg).unwrap();
        for (start, _) in svg.match_indices('<') {
            let name: String = svg[start + 1..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            let name = if name.is_empty() { "/" } else { &name };
            assert!(SVG_ELEMENTS.contains(&name), "<{name}> in an svg");
        }
    }
}

#[test]
fn plots_draw_lines() {
    let html = report::render(&sample(1));
    for svg in svg_fragments(&html) {
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(!svg.contains("no data"), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}

#[test]
fn text_is_escaped() {
    let mut summary = sample(1);
    summary.scenario = "<b>chat</b>".to_owned();
    summary.command = "loadgen --x '<script>alert(1)</script>' & more".to_owned();
    summary
        .params
        .insert("<i>".to_owned(), serde_json::json!("\"quoted\" <tag>"));
    summary
        .audit
        .violation("user 7 conv <9>: seq 3 after 5 & gap".to_owned());
    let html = report::render(&summary);
    check_markup(&html).unwrap();
    for raw in ["<b>", "<script>", "<i>", "<tag>", "<9>"] {
        assert!(!html.contains(raw), "{raw} unescaped");
    }
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("conv &lt;9&gt;: seq 3 after 5 &amp; gap"));
}

#[test]
fn audit_verdict_is_prominent() {
    let passed = report::render(&sample(1));
    assert!(passed.contains("<p class=\"verdict pass\">PASS"));
    assert!(!passed.contains("Audit violations"));

    let mut summary = sample(1);
    for i in 0..3 {
        summary.audit.violation(format!("message {i} lost"));
    }
    summary.audit.violations_total = 250;
    let failed = report::render(&summary);
    assert!(failed.contains("<p class=\"verdict fail\">FAIL: 250 audit violations"));
    for i in 0..3 {
        assert!(failed.contains(&format!("<li><code>message {i} lost</code></li>")));
    }
    assert!(failed.contains("250 in all; the first 3 are:"));
}

#[test]
fn tables_show_parameters_totals_and_percentiles() {
    let summary = sample(1);
    let html = report::render(&summary);
    assert!(html.contains("<td>--conns</td><td>1000</td>"));
    assert!(html.contains("<td>--sources</td><td>127.0.0.2-127.0.0.20</td>"));
    assert!(html.contains("<td>sent</td><td>150,000</td>"));
    assert!(html.contains("2023-11-14 22:13:20 UTC"));
    let p99 = summary.latency["send_ack"].p99_us;
    let row_start = html.find("<tr><td>send_ack</td>").unwrap();
    let row = &html[row_start..row_start + html[row_start..].find("</tr>").unwrap()];
    assert!(
        row.contains(&format!("{:.2} ms", p99 as f64 / 1000.0)),
        "{row}"
    );
}

#[test]
fn unreadable_histogram_is_reported_not_fatal() {
    let mut summary = sample(1);
    summary.latency.get_mut("connect").unwrap().histogram = "garbage".to_owned();
    let html = report::render(&summary);
    check_markup(&html).unwrap();
    assert_eq!(html.matches("<svg").count(), 7);
    assert!(html.contains("connect latency by percentile: latency histogram: not base64"));
}

#[test]
fn empty_run_still_renders() {
    let summary = loadgen::summary::Summary::new("connect", "loadgen run connect", 0);
    let html = report::render(&summary);
    check_markup(&html).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert_eq!(html.matches("no data").count(), 2);
}

#[test]
fn write_creates_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    report::write(&path, &sample(1)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        report::render(&sample(1))
    );
    let err = report::write(&dir.path().join("none").join("r.html"), &sample(1)).unwrap_err();
    assert!(err.to_string().contains("r.html"), "{err}");
}
