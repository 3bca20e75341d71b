//! Server-side figures for the report: the engine's Prometheus `/metrics`
//! (admin port), scraped once a second while the run lasts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loadgen::summary::ServerSample;

/// Bound on one scrape (connect, request, response).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest `/metrics` response read.
const RESPONSE_BYTES_MAX: u64 = 1 << 20;

/// A scraper thread; [`Scraper::finish`] stops it and returns its samples.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<ServerSample>>,
}

impl Scraper {
    pub fn start(addr: SocketAddr) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(text) = fetch(addr)
                    && let Some(sample) = parse(&text, start.elapsed().as_secs())
                {
                    samples.push(sample);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        });
        Scraper { stop, thread }
    }

    pub fn finish(self) -> Vec<ServerSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn fetch(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).ok()?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: loadgen\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.take(RESPONSE_BYTES_MAX).read_to_string(&mut body).ok()?;
    let (head, rest) = body.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| rest.to_owned())
}

/// The figures of one exposition: RSS, CPU, and connections summed over
/// shards. `None` without an RSS line (not a Switchboard server).
fn parse(text: &str, t_s: u64) -> Option<ServerSample> {
    let mut sample = ServerSample {
        t_s,
        ..ServerSample::default()
    };
    let mut rss = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "gauges of bytes and connections, non-negative and far below 2^53"
        )]
        let whole = value as u64;
        match name.split('{').next() {
            Some("process_resident_memory_bytes") => rss = Some(whole),
            Some("process_cpu_seconds_total") => sample.cpu_s = value,
            Some("switchboard_connections") => {
                *sample.connections.get_or_insert(0) += whole;
            }
            _ => {}
        }
    }
    sample.rss_bytes = rss?;
    Some(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_cpu_and_sums_connections_over_shards() {
        let text = "# HELP x\n# TYPE process_resident_memory_bytes gauge\n\
            process_resident_memory_bytes 1048576\nprocess_cpu_seconds_total 2.5\n\
            switchboard_connections{shard=\"0\"} 3\nswitchboard_connections{shard=\"1\"} 4\n";
        let s = parse(text, 7).unwrap();
        assert_eq!((s.t_s, s.rss_bytes, s.connections), (7, 1_048_576, Some(7)));
        assert!((s.cpu_s - 2.5).abs() < 1e-9);
        assert!(parse("something_else 1\n", 0).is_none());
    }
}
