//! The `pushd` binary: the push daemon, or with `mock-provider` a loopback
//! imitation of APNs and FCM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushd::config::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard's push daemon. Settings: defaults, then `--config`, then flags.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// A TOML file of settings (see pushd/README.md).
    #[arg(long, env = "PUSHD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The Unix socket the engine connects to (default data/pushd.sock).
    #[arg(long, env = "PUSHD_SOCKET")]
    socket: Option<PathBuf>,
    /// pushd's queue directory (default data/pushd).
    #[arg(long, env = "PUSHD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Admin address for `/metrics` (default 127.0.0.1:9091).
    #[arg(long, env = "PUSHD_ADMIN_LISTEN")]
    admin_listen: Option<std::net::SocketAddr>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "PUSHD_LOG_JSON", global = true)]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve a loopback HTTP/2 imitation of APNs and FCM (tests, benchmarks).
    MockProvider(pushd::mock::MockArgs),
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PUSHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    // Colours only for a person at a terminal (and never with `NO_COLOR`).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn config(cli: Cli) -> anyhow::Result<Config> {
    let mut c = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = cli.socket {
        c.socket = v;
    }
    if let Some(v) = cli.data_dir {
        c.data_dir = v;
    }
    if cli.admin_listen.is_some() {
        c.admin_listen = cli.admin_listen;
    }
    Ok(c)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let result = match cli.cmd {
        Some(Cmd::MockProvider(args)) => pushd::mock::run(args),
        None => config(cli).and_then(pushd::daemon::run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
