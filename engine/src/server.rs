//! Starting and stopping the server: open the store, bind one `SO_REUSEPORT`
//! listener per shard on the same port, run each shard on its own thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use protocol::token::TokenKey;
use socket2::{Domain, Protocol, Socket, Type};
use storage::Store;

use crate::chat::{self, HubInit, StoreEvent};
use crate::config::{Config, ConfigError};
use crate::metrics::{Admin, ShardStats};
use crate::push::PushShared;
use crate::push::forwarder::{self, ForwarderInit};
use crate::shard::{self, ShardInit};
use crate::shutdown::Shutdown;
use crate::store_io::ReadPool;

/// Threads that run blocking storage reads for the shards.
const STORAGE_READERS: usize = 2;

/// Pending connections the kernel queues per listener before accept.
const LISTEN_BACKLOG: i32 = 4096;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the store in {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        source: storage::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid token secret: {0}")]
    Secret(String),
    #[error("cannot start shard thread: {0}")]
    Spawn(std::io::Error),
    #[error("invalid encryption keys: {0}")]
    Keys(storage::Error),
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shutdown: Arc<Shutdown>,
    threads: Vec<JoinHandle<()>>,
    store: Store,
    reads: ReadPool<StoreEvent>,
    admin: Option<Admin>,
    push: Option<Push>,
}

/// Opens the store and starts its read pool, sized so that every storage
/// operation a shard can have in flight fits in the store's queues (a
/// shard's submission is never refused as full).
fn open_store(config: &Config, shards: u16) -> Result<(Store, ReadPool<StoreEvent>), StartError> {
    let in_flight_max = usize::from(shards) * chat::INBOX_CAPACITY;
    let mut store_config = storage::Config::new(&config.data_dir).durability(config.durability);
    if let Some(keys) = encryption_keys(config)? {
        store_config = store_config.encryption(keys);
    }
    store_config.write_queue_depth = store_config.write_queue_depth.max(in_flight_max);
    let store = Store::open(store_config).map_err(|source| StartError::Store {
        path: config.data_dir.clone(),
        source,
    })?;
    let reads =
        ReadPool::start(&store, STORAGE_READERS, in_flight_max).map_err(StartError::Spawn)?;
    Ok((store, reads))
}

/// The environment variable holding encryption keys (if no file is set).
const ENCRYPTION_KEYS_ENV: &str = "SWITCHBOARD_ENCRYPTION_KEYS";

/// The at-rest encryption keys: from `encryption_keys_file`, else from
/// `SWITCHBOARD_ENCRYPTION_KEYS`, else none.
fn encryption_keys(config: &Config) -> Result<Option<storage::EncryptionKeys>, StartError> {
    let keys = match &config.encryption_keys_file {
        Some(path) => storage::EncryptionKeys::from_file(path),
        None if std::env::var_os(ENCRYPTION_KEYS_ENV).is_some() => {
            storage::EncryptionKeys::from_env(ENCRYPTION_KEYS_ENV)
        }
        None => return Ok(None),
    };
    keys.map(Some).map_err(StartError::Keys)
}

/// The sessions' abuse limits from the configuration.
fn abuse_limits(config: &Config) -> chat::AbuseLimits {
    chat::AbuseLimits {
        send_per_connection: config.connection_send_rate(),
        send_per_user: config.user_send_rate(),
        close_after: config.rate_limited_close_after,
        connections_per_user: config.connections_per_user_max,
    }
}

/// The token key: the configured secret, or in dev mode the data directory's.
fn token_key(config: &Config) -> Result<TokenKey, StartError> {
    let secret = match &config.token_secret {
        Some(s) => s.clone(),
        None => crate::dev::load_or_create_secret(&config.data_dir)
            .map_err(|e| StartError::Secret(e.to_string()))?,
    };
    TokenKey::new(secret.as_bytes()).map_err(|e| StartError::Secret(e.to_string()))
}

/// The push forwarder, when pushd is configured.
#[derive(Debug)]
struct Push {
    shared: Arc<PushShared>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Starts the push forwarder if `push_socket` is set.
fn start_push(config: &Config, store: &Store, shards: u16) -> Result<Option<Push>, StartError> {
    let Some(socket) = config.push_socket.clone() else {
        return Ok(None);
    };
    let (shared, rx) = PushShared::new(shards);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = forwarder::start(ForwarderInit {
        store: store.clone(),
        socket,
        window: config.push_coalesce,
        shards,
        shared: shared.clone(),
        rx,
        stop: stop.clone(),
    })
    .map_err(StartError::Spawn)?;
    Ok(Some(Push {
        shared,
        stop,
        thread,
    }))
}

impl Server {
    /// Validates `config`, opens the store, and starts every shard.
    pub fn start(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        let tokens = token_key(&config)?;
        let shards = config.shard_count();
        let (store, reads) = open_store(&config, shards)?;
        let mut links = router::mesh(shards, config.router_queue_depth).into_iter();
        let listeners = bind(config.listen, shards)?;
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let shutdown = Arc::new(Shutdown::new(shards));
        let config = Arc::new(config);
        let stats = ShardStats::for_shards(shards);
        let push = start_push(&config, &store, shards)?;
        let hub_push = push
            .as_ref()
            .map(|p| (p.shared.clone(), config.push_coalesce));
        let ips = crate::limits::IpLimits::new(config.connections_per_ip_max);
        let mut threads = Vec::new();
        for (id, listener) in (0..shards).zip(listeners) {
            let link = links.next().expect("the mesh has a link per shard");
            let shard = ShardInit {
                id,
                config: config.clone(),
                tokens: tokens.clone(),
                shutdown: shutdown.clone(),
                ips: ips.clone(),
                chat: HubInit {
                    link,
                    stats: stats.clone(),
                    drop_delivery_every: config.dev_drop_delivery_every,
                    store: store.clone(),
                    reads: reads.handle(),
                    limits: crate::conv::OwnerLimits {
                        group_members_max: config.group_members_max,
                        groups_per_user_max: config.groups_per_user_max,
                        ..crate::conv::OwnerLimits::default()
                    },
                    push: hub_push.clone(),
                    abuse: abuse_limits(&config),
                },
            };
            threads.push(spawn_shard(shard, listener)?);
        }
        let admin = announce(
            addr,
            shards,
            &config,
            crate::metrics::Sources {
                stats,
                push: push.as_ref().map(|p| p.shared.clone()),
                store: store.clone(),
                shutdown: shutdown.clone(),
            },
        );
        Ok(Server {
            addr,
            shutdown,
            threads,
            store,
            reads,
            admin,
            push,
        })
    }

    /// The bound public address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound admin address, if the admin listener runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
    }

    /// A handle that stops the server when [`Shutdown::request`]ed.
    pub fn shutdown_handle(&self) -> Arc<Shutdown> {
        self.shutdown.clone()
    }

    /// Waits for every shard to stop (after a shutdown request), then moves
    /// the store's memtables to disk so the next start replays no journal.
    pub fn wait(self) {
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
        if let Some(admin) = self.admin {
            admin.stop();
        }
        if let Some(push) = self.push {
            // Jobs not yet acknowledged stay in the outbox for the next run.
            push.stop.store(true, Ordering::Release);
            if push.thread.join().is_err() {
                tracing::error!("the push forwarder panicked");
            }
        }
        drop(self.reads);
        if let Err(e) = self.store.flush() {
            tracing::warn!(cause = %e, "final store flush failed; the journal will be replayed");
        }
        tracing::info!("stopped");
    }
}

/// Runs a shard on a new thread.
fn spawn_shard(
    shard: ShardInit,
    listener: std::net::TcpListener,
) -> Result<JoinHandle<()>, StartError> {
    let id = shard.id;
    std::thread::Builder::new()
        .name(format!("shard-{id}"))
        .spawn(move || {
            let span = tracing::info_span!("shard", id);
            let _enter = span.enter();
            if let Err(e) = shard::run(shard, listener) {
                tracing::error!(cause = %e, "shard failed");
            }
        })
        .map_err(StartError::Spawn)
}

/// Logs `listening`, then starts the admin listener: its own `admin
/// listening` line comes after, so tools that look for the first
/// `listening addr=` line find the public address.
fn announce(
    addr: SocketAddr,
    shards: u16,
    config: &Config,
    sources: crate::metrics::Sources,
) -> Option<Admin> {
    tracing::info!(%addr, shards, durability = %config.durability, dev = config.dev, "listening");
    if let Some(every) = config.dev_drop_delivery_every {
        tracing::warn!(every, "dev fault injection: dropping live deliveries");
    }
    if let Some(socket) = &config.push_socket {
        tracing::info!(socket = %socket.display(), coalesce = ?config.push_coalesce, "push notifications through pushd");
    }
    config
        .admin_listen
        .and_then(|addr| start_admin(addr, sources))
}

/// Starts the admin listener; a port that cannot be bound (another server
/// on this host has it) costs the metrics, not the server.
fn start_admin(addr: SocketAddr, sources: crate::metrics::Sources) -> Option<Admin> {
    match Admin::start(addr, sources) {
        Ok(admin) => {
            tracing::info!(addr = %admin.local_addr(), "admin listening");
            Some(admin)
        }
        Err(e) => {
            tracing::warn!(admin_addr = %addr, cause = %e, "cannot bind the admin address; serving no metrics");
            None
        }
    }
}

/// Binds `shards` listeners to one address with `SO_REUSEPORT`, so the kernel
/// spreads connections over the shards. With port 0 the first bind picks the
/// port and the others reuse it.
fn bind(addr: SocketAddr, shards: u16) -> Result<Vec<std::net::TcpListener>, StartError> {
    let err = |source| StartError::Listen { addr, source };
    let mut listeners: Vec<std::net::TcpListener> = Vec::new();
    let mut bound = addr;
    for _ in 0..shards {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        socket.set_reuse_port(true).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        socket.bind(&bound.into()).map_err(err)?;
        socket.listen(LISTEN_BACKLOG).map_err(err)?;
        let listener: std::net::TcpListener = socket.into();
        if listeners.is_empty() {
            bound = listener.local_addr().map_err(err)?;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}
