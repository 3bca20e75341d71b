//! `switchboard`: the chat server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use engine::config::Config;
use engine::server::Server;
use signal_hook::consts::{SIGINT, SIGTERM};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Switchboard chat server. Settings come from defaults, then `--config`
/// (TOML), then `SWITCHBOARD_*` environment variables, then flags.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML config file.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Public address for HTTP and WebSocket.
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Shard threads (0: one per core).
    #[arg(long, env = "SWITCHBOARD_SHARDS")]
    shards: Option<u16>,
    /// The store's directory.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// What an ack means: fsync, os or none.
    #[arg(long, env = "SWITCHBOARD_DURABILITY")]
    durability: Option<storage::Durability>,
    /// Development mode: token and echo endpoints, a local token secret.
    #[arg(long, env = "SWITCHBOARD_DEV")]
    dev: bool,
    /// Do not serve the browser client at `/` (it is served by default).
    #[arg(long, env = "SWITCHBOARD_NO_WEB")]
    no_web: bool,
    /// The HMAC token secret (at least 32 bytes); prefer the environment.
    #[arg(long, env = "SWITCHBOARD_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// Admin address for Prometheus `/metrics` (default 127.0.0.1:9090; if
    /// it cannot be bound, the server warns and runs without it).
    #[arg(long, env = "SWITCHBOARD_ADMIN_LISTEN")]
    admin_listen: Option<std::net::SocketAddr>,
    /// Dev mode only, for testing correctness checkers: each shard silently
    /// skips every Nth live delivery (proves loadgen's audit catches a lost
    /// message).
    #[arg(long, env = "SWITCHBOARD_DEV_DROP_DELIVERY_EVERY", value_name = "N")]
    dev_drop_delivery_every: Option<u64>,
    /// pushd's Unix socket; enables push notifications for offline devices.
    #[arg(long, env = "SWITCHBOARD_PUSH_SOCKET", value_name = "PATH")]
    push_socket: Option<std::path::PathBuf>,
    /// Push coalescing window, e.g. `2s` (messages to a device in one
    /// conversation within it become one notification).
    #[arg(long, env = "SWITCHBOARD_PUSH_COALESCE", value_parser = humantime_duration)]
    push_coalesce: Option<std::time::Duration>,
    /// `send`s per second per connection (token bucket; 0: no limit).
    #[arg(
        long,
        env = "SWITCHBOARD_SEND_RATE_PER_CONNECTION",
        value_name = "RATE"
    )]
    send_rate_per_connection: Option<f64>,
    /// `send`s per second per user, all devices together (0: no limit).
    #[arg(long, env = "SWITCHBOARD_SEND_RATE_PER_USER", value_name = "RATE")]
    send_rate_per_user: Option<f64>,
    /// Open connections per client address (0: no limit).
    #[arg(long, env = "SWITCHBOARD_CONNECTIONS_PER_IP_MAX", value_name = "N")]
    connections_per_ip_max: Option<usize>,
    /// A file of at-rest encryption keys (`<id>:<64 hex>` per line, the
    /// last one current); see also `SWITCHBOARD_ENCRYPTION_KEYS`.
    #[arg(long, env = "SWITCHBOARD_ENCRYPTION_KEYS_FILE", value_name = "PATH")]
    encryption_keys_file: Option<std::path::PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "SWITCHBOARD_LOG_JSON")]
    log_json: bool,
}

impl Cli {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.shards {
            c.shards = v;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.durability {
            c.durability = v;
        }
        c.dev |= self.dev;
        if self.no_web {
            c.web = false;
        }
        if self.token_secret.is_some() {
            c.token_secret = self.token_secret;
        }
        if self.admin_listen.is_some() {
            c.admin_listen = self.admin_listen;
        }
        if self.dev_drop_delivery_every.is_some() {
            c.dev_drop_delivery_every = self.dev_drop_delivery_every;
        }
        if self.push_socket.is_some() {
            c.push_socket = self.push_socket;
        }
        if let Some(v) = self.push_coalesce {
            c.push_coalesce = v;
        }
        if let Some(v) = self.send_rate_per_connection {
            c.send_rate_per_connection = v;
        }
        if let Some(v) = self.send_rate_per_user {
            c.send_rate_per_user = v;
        }
        if let Some(v) = self.connections_per_ip_max {
            c.connections_per_ip_max = v;
        }
        if self.encryption_keys_file.is_some() {
            c.encryption_keys_file = self.encryption_keys_file;
        }
        Ok(c)
    }
}

fn humantime_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let config = cli.into_config()?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let server = Server::start(config)?;
    let shutdown = server.shutdown_handle();
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    shutdown.request();
    server.wait();
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}
