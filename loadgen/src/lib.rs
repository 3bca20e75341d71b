//! `loadgen`: Switchboard's load generator and correctness checker.
//!
//! The binary (`src/main.rs`, with the scenarios and workers in `run/`) drives a server and
//! records latencies in HDR histograms. This library holds what a run produces and what reads
//! it back:
//!
//! - [`summary`]: the versioned JSON run summary, with mergeable histograms, so the summaries
//!   of several worker processes combine into one.
//! - [`hgrm`]: a histogram as `HdrHistogram` percentile-distribution text (`.hgrm`).
//! - [`report`]: a self-contained HTML report (inline SVG plots, no scripts, works offline).
//! - [`compare`]: two runs side by side, as text or HTML.
//!
//! The library does no network I/O; only `Summary::write` and `read`, [`hgrm::write`] and
//! [`report::write`] touch files.

#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod compare;
pub mod hgrm;
pub mod report;
pub mod summary;

/// What can go wrong reading, writing or merging run outputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a loadgen summary: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: summary version {found}, this loadgen reads version {expected}")]
    Version {
        path: PathBuf,
        found: u64,
        expected: u32,
    },
    #[error("encoding the summary as JSON: {0}")]
    Encode(serde_json::Error),
    #[error("latency histogram: {0}")]
    Histogram(String),
    #[error("merging summaries: {0}")]
    Merge(String),
}

/// The result of this crate's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
