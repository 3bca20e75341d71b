//! Wires the daemon: queue, schedule, dispatchers, engine link, admin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use protocol::push::ToEngine;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;

use crate::circuit::Circuit;
use crate::config::Config;
use crate::dispatch::{self, Client};
use crate::metrics::Metrics;
use crate::provider::apns::Apns;
use crate::provider::fcm::Fcm;
use crate::queue::Queue;
use crate::sched::Sched;

/// What every task of the daemon shares.
#[derive(Debug)]
pub struct Ctx {
    pub config: Config,
    pub queue: Queue,
    pub sched: Sched,
    pub metrics: Metrics,
    /// The current engine link's outbound queue, if one is connected.
    pub link: Mutex<Option<mpsc::Sender<ToEngine>>>,
    pub dead_seq: AtomicU64,
    /// `[provider][endpoint]`.
    pub circuits: [[Circuit; 2]; 2],
}

/// Runs pushd until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("pushd")
        .build()?;
    rt.block_on(serve(config))
}

fn circuit(c: &Config) -> Circuit {
    Circuit::new(c.circuit_failures, c.circuit_cooldown)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", config.data_dir.display()))?;
    let queue = Queue::open(&config.data_dir)?;
    let apns = match &config.apns {
        Some(a) => Some((Arc::new(Client::Apns(Apns::new(a)?)), a.concurrency)),
        None => None,
    };
    let fcm = match &config.fcm {
        Some(f) => Some((Arc::new(Client::Fcm(Fcm::new(f)?)), f.concurrency)),
        None => None,
    };
    let held = queue.all()?;
    let ctx = Arc::new(Ctx {
        circuits: [
            [circuit(&config), circuit(&config)],
            [circuit(&config), circuit(&config)],
        ],
        dead_seq: AtomicU64::new(queue.next_dead_seq()?),
        config,
        queue,
        sched: Sched::default(),
        metrics: Metrics::default(),
        link: Mutex::new(None),
    });
    ctx.metrics.queue_depth.store(
        i64::try_from(held.len()).unwrap_or(i64::MAX),
        Ordering::Relaxed,
    );
    tracing::info!(jobs = held.len(), "queue loaded");
    ctx.sched.insert(held, Instant::now());
    let listener = bind_socket(&ctx.config)?;
    if let Some(addr) = ctx.config.admin_listen {
        let admin = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the admin listener {addr}: {e}"))?;
        tracing::info!(addr = %admin.local_addr()?, "admin listening");
        tokio::spawn(crate::admin::serve(Arc::clone(&ctx), admin));
    }
    for (p, client) in [apns, fcm].into_iter().enumerate() {
        let (client, concurrency) = match client {
            Some((c, n)) => (Some(c), n),
            None => (None, 1),
        };
        tokio::spawn(dispatch::run(Arc::clone(&ctx), p, client, concurrency));
    }
    tokio::spawn(accept(Arc::clone(&ctx), listener));
    wait_for_signal().await?;
    tracing::info!("shutting down");
    let c = Arc::clone(&ctx);
    tokio::task::spawn_blocking(move || c.queue.sync()).await??;
    Ok(())
}

fn bind_socket(config: &Config) -> anyhow::Result<UnixListener> {
    let path = &config.socket;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    // A socket file left by a previous run; binding fails while it exists.
    if std::fs::symlink_metadata(path).is_ok() {
        std::fs::remove_file(path)
            .map_err(|e| anyhow::anyhow!("cannot remove stale {}: {e}", path.display()))?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", path.display()))?;
    // Only this user (and its group) may offer jobs.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
        .map_err(|e| anyhow::anyhow!("cannot restrict {}: {e}", path.display()))?;
    tracing::info!(socket = %path.display(), "engine link listening");
    Ok(l)
}

async fn accept(ctx: Arc<Ctx>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tracing::info!("engine linked");
                tokio::spawn(crate::link::serve(Arc::clone(&ctx), stream));
            }
            Err(e) => {
                tracing::warn!(cause = %e, "engine link accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
