//! pushd's configuration: defaults, then a TOML file, then flags.
//!
//! Credentials are paths to files (an APNs `.p8` key, an FCM service-account
//! JSON); their contents are read at start and never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything pushd can be told. Field docs give each default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Unix socket the engine connects to. Default `data/pushd.sock`.
    pub socket: PathBuf,
    /// pushd's own queue directory. Default `data/pushd`.
    pub data_dir: PathBuf,
    /// Prometheus `/metrics`, `/healthz`. Default `127.0.0.1:9091`.
    pub admin_listen: Option<SocketAddr>,
    /// Jobs held (queued or in flight) at most; past it, new jobs are
    /// answered `Busy` and stay in the engine's outbox. Default 1,000,000.
    pub queue_max: usize,
    /// Attempts per job before it is dead-lettered. Default 12.
    pub attempts_max: u32,
    /// A job older than this is dead-lettered instead of sent. Default 24 h.
    #[serde(with = "humantime_serde")]
    pub job_ttl: Duration,
    /// Dead-lettered jobs kept for inspection; the oldest go first. Default 100,000.
    pub dead_max: usize,
    /// Retry backoff: the first delay's cap; doubles per attempt. Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// The largest backoff delay. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Consecutive endpoint failures (5xx, timeouts, connection errors) that
    /// open its circuit. Default 5.
    pub circuit_failures: u32,
    /// How long an open circuit waits before one probe. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub circuit_cooldown: Duration,
    pub apns: Option<ApnsConfig>,
    pub fcm: Option<FcmConfig>,
}

/// Apple Push Notification service, token-based (`.p8`) authentication.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The `.p8` signing key downloaded from the Apple developer account.
    pub key_file: PathBuf,
    /// The key's 10-character id (the `kid` of the provider token).
    pub key_id: String,
    /// The developer team id (the `iss` of the provider token).
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Default `https://api.push.apple.com`. `http://` endpoints (the mock
    /// provider) are spoken to in cleartext HTTP/2.
    #[serde(default = "apns_primary")]
    pub primary: String,
    /// Used while the primary's circuit is open. Default none; Apple's
    /// alternative port, `https://api.push.apple.com:2197`, is a good one.
    #[serde(default)]
    pub secondary: Option<String>,
    /// Requests in flight at most. Default 64.
    #[serde(default = "concurrency")]
    pub concurrency: usize,
    /// Per-request timeout. Default 10 s.
    #[serde(default = "timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// Firebase Cloud Messaging, HTTP v1 API, service-account `OAuth2`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service-account JSON key from the Firebase console.
    pub service_account_file: PathBuf,
    /// Overrides the key's `project_id`.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Overrides the key's `token_uri` (the mock provider's `/token`).
    #[serde(default)]
    pub token_uri: Option<String>,
    /// Default `https://fcm.googleapis.com`.
    #[serde(default = "fcm_primary")]
    pub primary: String,
    /// Used while the primary's circuit is open. Default none.
    #[serde(default)]
    pub secondary: Option<String>,
    /// Requests in flight at most. Default 64.
    #[serde(default = "concurrency")]
    pub concurrency: usize,
    /// Per-request timeout. Default 10 s.
    #[serde(default = "timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn apns_primary() -> String {
    "https://api.push.apple.com".into()
}

fn fcm_primary() -> String {
    "https://fcm.googleapis.com".into()
}

fn concurrency() -> usize {
    64
}

fn timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for Config {
    fn default() -> Config {
        Config {
            socket: PathBuf::from("data/pushd.sock"),
            data_dir: PathBuf::from("data/pushd"),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9091))),
            queue_max: 1_000_000,
            attempts_max: 12,
            job_ttl: Duration::from_secs(24 * 3600),
            dead_max: 100_000,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            circuit_failures: 5,
            circuit_cooldown: Duration::from_secs(5),
            apns: None,
            fcm: None,
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.queue_max > 0, "queue_max must be at least 1");
        anyhow::ensure!(self.attempts_max > 0, "attempts_max must be at least 1");
        anyhow::ensure!(
            self.circuit_failures > 0,
            "circuit_failures must be at least 1"
        );
        anyhow::ensure!(
            self.backoff_base <= self.backoff_max,
            "backoff_base must not exceed backoff_max"
        );
        if let Some(a) = &self.apns {
            anyhow::ensure!(a.concurrency > 0, "apns.concurrency must be at least 1");
        }
        if let Some(f) = &self.fcm {
            anyhow::ensure!(f.concurrency > 0, "fcm.concurrency must be at least 1");
        }
        Ok(())
    }
}
