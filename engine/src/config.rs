//! Server configuration: defaults, then a TOML file, then `SWITCHBOARD_*`
//! environment variables, then flags (each later source wins).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use storage::Durability;

/// Everything the server can be told. Field docs give each default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public address for HTTP and WebSocket. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Shard threads; 0 means one per available core. Default 0.
    pub shards: u16,
    /// The store's directory. Default `data`.
    pub data_dir: PathBuf,
    /// What an ack means: `fsync` (default), `os` or `none`.
    #[serde(deserialize_with = "from_str")]
    pub durability: Durability,
    /// Development mode: the token endpoint, the echo endpoint, and a token
    /// secret kept in the data directory if none is given. Default off.
    pub dev: bool,
    /// Serve the browser client (the files under `web/`, built into the
    /// binary) at `/` on the public port. Default on.
    pub web: bool,
    /// The HMAC secret for auth tokens (at least 32 bytes). Required unless
    /// `dev`. Prefer the environment or a file over a flag: flags show in `ps`.
    pub token_secret: Option<String>,
    /// Time a new connection has to send a complete request head. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A WebSocket that has been quiet this long gets a ping. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A WebSocket that has sent nothing (not even a pong) this long is
    /// closed with 4005. Default 75 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long shutdown waits for connections to finish their close
    /// handshake. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Open connections per shard; past it, new connections get 503.
    /// Default 200,000.
    pub connections_per_shard_max: usize,
    /// Messages one shard may have queued for another (router queue depth).
    /// Default 8,192.
    pub router_queue_depth: usize,
    /// Bytes a shard reads from the network at once (one buffer per shard,
    /// not per connection). Default 64 KiB.
    pub read_buffer_bytes: usize,
    /// Members of one group, its creator included; past it, `group_full`.
    /// Default 100,000 (`GROUP_MEMBERS_MAX`, also the most allowed).
    pub group_members_max: usize,
    /// Groups one user may be in; past it, `too_many_groups`. Default 10,000.
    pub groups_per_user_max: usize,
    /// The admin address serving Prometheus `/metrics`; `None`: no admin
    /// listener. Default `127.0.0.1:9090`. Keep it off public networks. If
    /// it cannot be bound (another server has the port), the server logs a
    /// warning and runs without it.
    pub admin_listen: Option<SocketAddr>,
    /// Dev mode only, for testing correctness checkers: each shard silently
    /// skips every Nth live delivery to a device (never a catch-up or
    /// `fetch`), so the message is durable but never arrives live. It
    /// exists to prove that loadgen's audit catches a lost message. Default
    /// `None`; refused outside `dev`.
    pub dev_drop_delivery_every: Option<u64>,
    /// pushd's Unix socket. With it, messages to offline devices that have a
    /// push token become push jobs (outbox, then pushd); without it, no push
    /// jobs are made. Default `None`.
    pub push_socket: Option<PathBuf>,
    /// Messages to one device in one conversation within this window of the
    /// first become one notification with a count. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub push_coalesce: Duration,
    /// Open connections from one client address, over all shards; past it,
    /// new ones get HTTP 429. 0: no limit (behind a proxy that hides client
    /// addresses, say). Default 10,000.
    pub connections_per_ip_max: usize,
    /// Chat connections one user may hold open (all devices); past it, the
    /// new one is closed with 4004. Default 64.
    pub connections_per_user_max: usize,
    /// `send`s per second one connection may make (token bucket), and the
    /// burst it may save up; past it, a `rate_limited` error per refused
    /// send. Rate 0: no limit. Default 50 per second, burst 100.
    pub send_rate_per_connection: f64,
    pub send_burst_per_connection: u32,
    /// The same for all of one user's connections together. Default 100
    /// per second, burst 200.
    pub send_rate_per_user: f64,
    pub send_burst_per_user: u32,
    /// Consecutive refused `send`s after which a connection is closed with
    /// 4003. Default 200.
    pub rate_limited_close_after: u32,
    /// Encrypt message bodies (and push previews) at rest with the keys in
    /// this file: one `<id>:<64 hex digits>` per line, the last one used for
    /// new writes, every one for reads (rotation: append a key, restart).
    /// The environment variable `SWITCHBOARD_ENCRYPTION_KEYS` (same format,
    /// commas allowed between keys) is used if no file is given. Keys are
    /// never logged. Default: no encryption.
    pub encryption_keys_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shards: 0,
            data_dir: PathBuf::from("data"),
            durability: Durability::Fsync,
            dev: false,
            web: true,
            token_secret: None,
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            shutdown_grace: Duration::from_secs(5),
            connections_per_shard_max: 200_000,
            router_queue_depth: 8_192,
            read_buffer_bytes: 64 * 1024,
            group_members_max: protocol::limits::GROUP_MEMBERS_MAX,
            groups_per_user_max: 10_000,
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            dev_drop_delivery_every: None,
            push_socket: None,
            push_coalesce: Duration::from_secs(2),
            connections_per_ip_max: 10_000,
            connections_per_user_max: 64,
            send_rate_per_connection: 50.0,
            send_burst_per_connection: 100,
            send_rate_per_user: 100.0,
            send_burst_per_user: 200,
            rate_limited_close_after: 200,
            encryption_keys_file: None,
        }
    }
}

fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// The per-connection send rate.
    pub fn connection_send_rate(&self) -> crate::limits::Rate {
        crate::limits::Rate {
            per_second: self.send_rate_per_connection,
            burst: f64::from(self.send_burst_per_connection),
        }
    }

    /// The per-user send rate.
    pub fn user_send_rate(&self) -> crate::limits::Rate {
        crate::limits::Rate {
            per_second: self.send_rate_per_user,
            burst: f64::from(self.send_burst_per_user),
        }
    }

    /// Reads a TOML file; absent fields keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// The number of shards to run.
    pub fn shard_count(&self) -> u16 {
        if self.shards > 0 {
            return self.shards;
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        u16::try_from(cores).unwrap_or(u16::MAX)
    }

    /// Checks the relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |s: &str| Err(ConfigError::Invalid(s.to_owned()));
        if self.heartbeat_interval.is_zero() || self.idle_timeout <= self.heartbeat_interval {
            return invalid("idle_timeout must be longer than a non-zero heartbeat_interval");
        }
        if self.handshake_timeout.is_zero() {
            return invalid("handshake_timeout must be non-zero");
        }
        if self.router_queue_depth == 0 || self.connections_per_shard_max == 0 {
            return invalid("router_queue_depth and connections_per_shard_max must be non-zero");
        }
        if self.read_buffer_bytes < 4096 {
            return invalid("read_buffer_bytes must be at least 4096");
        }
        if self.group_members_max < 2
            || self.group_members_max > protocol::limits::GROUP_MEMBERS_MAX
        {
            return invalid("group_members_max must be between 2 and 100000");
        }
        if self.groups_per_user_max == 0 {
            return invalid("groups_per_user_max must be non-zero");
        }
        if self.dev_drop_delivery_every == Some(0) {
            return invalid("dev_drop_delivery_every must be at least 1");
        }
        if !self.dev && self.dev_drop_delivery_every.is_some() {
            return invalid("dev_drop_delivery_every needs dev mode (--dev)");
        }
        if !(self.send_rate_per_connection >= 0.0 && self.send_rate_per_user >= 0.0) {
            return invalid("send rates must be 0 (no limit) or positive");
        }
        if self.connections_per_user_max == 0 || self.rate_limited_close_after == 0 {
            return invalid(
                "connections_per_user_max and rate_limited_close_after must be non-zero",
            );
        }
        if self.push_coalesce > Duration::from_secs(3600) {
            return invalid("push_coalesce must be at most 1h");
        }
        if !self.dev && self.token_secret.is_none() {
            return invalid("token_secret is required (or run with --dev)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_fields() {
        let c: Config = toml::from_str(
            "listen = \"0.0.0.0:9000\"\ndurability = \"os\"\nheartbeat_interval = \"10s\"",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.durability, Durability::Os);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(75));
        assert!(toml::from_str::<Config>("listn = \"x\"").is_err());
        assert!(toml::from_str::<Config>("durability = \"sometimes\"").is_err());
    }

    #[test]
    fn validation() {
        let dev = Config {
            dev: true,
            ..Config::default()
        };
        assert!(dev.validate().is_ok());
        assert!(
            Config::default().validate().is_err(),
            "no secret outside dev mode"
        );
        let c = Config {
            idle_timeout: Duration::from_secs(1),
            ..dev.clone()
        };
        assert!(c.validate().is_err());
        let c = Config {
            read_buffer_bytes: 10,
            ..dev.clone()
        };
        assert!(c.validate().is_err());
        let drop = Config {
            dev_drop_delivery_every: Some(3),
            ..dev.clone()
        };
        assert!(drop.validate().is_ok());
        let c = Config {
            dev: false,
            token_secret: Some("x".repeat(32)),
            ..drop
        };
        assert!(c.validate().is_err(), "fault injection outside dev mode");
        let c = Config {
            dev_drop_delivery_every: Some(0),
            ..dev
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn admin_listen_defaults_to_loopback_and_reads_from_toml() {
        let c = Config::default();
        assert_eq!(
            c.admin_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        let c: Config = toml::from_str("admin_listen = \"127.0.0.1:9100\"").unwrap();
        assert_eq!(c.admin_listen.map(|a| a.port()), Some(9100));
        let c: Config = toml::from_str("dev_drop_delivery_every = 5").unwrap();
        assert_eq!(c.dev_drop_delivery_every, Some(5));
    }

    #[test]
    fn web_is_on_unless_turned_off() {
        assert!(Config::default().web);
        let c: Config = toml::from_str("web = false").unwrap();
        assert!(!c.web);
    }
}
