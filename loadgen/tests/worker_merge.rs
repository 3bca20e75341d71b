//! Worker processes' summary files merge into one run's summary, then into one report.

mod support;

use loadgen::summary::Summary;
use support::{check_markup, sample};

#[test]
fn worker_summaries_merge_through_files() {
    let dir = tempfile::tempdir().unwrap();
    let parts = [sample(1), sample(2), sample(3)];
    let paths: Vec<_> = (0..parts.len())
        .map(|i| dir.path().join(format!("worker-{i}.json")))
        .collect();
    for (part, path) in parts.iter().zip(&paths) {
        part.write(path).unwrap();
    }

    let mut merged = Summary::read(&paths[0]).unwrap();
    for path in &paths[1..] {
        merged.merge(&Summary::read(path).unwrap()).unwrap();
    }

    assert_eq!(merged.totals.sent, 3 * 150_000);
    assert_eq!(merged.rates.target_msgs_per_s, Some(15_000.0));
    assert_eq!(merged.timeline.len(), 30);
    assert_eq!(merged.timeline[29].connections, 3000);
    // The same server, seen by every worker: not added up.
    assert_eq!(merged.server, parts[0].server);
    let latency = &merged.latency["send_deliver"];
    assert_eq!(latency.count, 3 * 2000);
    assert_eq!(latency.min_us, parts[0].latency["send_deliver"].min_us);
    assert_eq!(latency.max_us, parts[2].latency["send_deliver"].max_us);
    let mut exact = parts[0].latency["send_deliver"].histogram().unwrap();
    for part in &parts[1..] {
        exact
            .add(part.latency["send_deliver"].histogram().unwrap())
            .unwrap();
    }
    assert_eq!(latency.p99_us, exact.value_at_quantile(0.99));

    let path = dir.path().join("summary.json");
    merged.write(&path).unwrap();
    assert_eq!(Summary::read(&path).unwrap(), merged);
    check_markup(&loadgen::report::render(&merged)).unwrap();
}
