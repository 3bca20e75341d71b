//! One shard: a pinned thread with its own `io_uring` runtime and its own
//! `SO_REUSEPORT` listener on the public port. Shards share nothing mutable.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use protocol::token::TokenKey;
use slab::Slab;

use crate::chat::{Hub, HubInit};
use crate::config::Config;
use crate::metrics::ShardStats;
use crate::shutdown::Shutdown;

/// What a shard thread starts from; everything in it can cross threads.
pub(crate) struct ShardInit {
    pub id: u16,
    pub config: Arc<Config>,
    pub tokens: TokenKey,
    pub shutdown: Arc<Shutdown>,
    /// Open connections per client address, shared by every shard.
    pub ips: Arc<crate::limits::IpLimits>,
    pub chat: HubInit,
}

/// Everything a shard's tasks share. Lives on the shard's thread only.
pub(crate) struct Shard {
    pub id: u16,
    pub config: Arc<Config>,
    pub tokens: TokenKey,
    pub shutdown: Arc<Shutdown>,
    /// The shard's one read buffer: connections wait for readiness with no
    /// buffer of their own and read into this one, borrowing it only between
    /// two awaits.
    pub scratch: RefCell<Vec<u8>>,
    /// Open connections, for the connection limit and shutdown.
    pub conns: RefCell<Slab<Rc<ConnHandle>>>,
    /// Chat sessions homed here and conversations owned here.
    pub chat: Hub,
    pub ips: Arc<crate::limits::IpLimits>,
}

/// What other tasks on the shard can do to a connection: ask it to close,
/// ask it to ping, and wake it. The shard's heartbeat sweep reads
/// `last_heard`, so no connection needs a timer of its own.
pub(crate) struct ConnHandle {
    closing: Cell<bool>,
    notified: Cell<bool>,
    waker: Cell<Option<Waker>>,
    /// When the connection last received bytes (a WebSocket connection only;
    /// `None` during the HTTP phase, which has its own timeout).
    last_heard: Cell<Option<Instant>>,
    /// A ping has been asked for and not yet answered by any byte.
    pinged: Cell<bool>,
    ping_due: Cell<bool>,
    idle: Cell<bool>,
    /// When the connection's token expires (seconds since the Unix epoch;
    /// 0: never), checked by the sweep.
    expires: Cell<u64>,
    expired: Cell<bool>,
}

impl Default for ConnHandle {
    fn default() -> ConnHandle {
        ConnHandle {
            closing: Cell::new(false),
            notified: Cell::new(false),
            waker: Cell::new(None),
            last_heard: Cell::new(None),
            pinged: Cell::new(false),
            ping_due: Cell::new(false),
            idle: Cell::new(false),
            expires: Cell::new(0),
            expired: Cell::new(false),
        }
    }
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("closing", &self.closing.get())
            .finish_non_exhaustive()
    }
}

impl ConnHandle {
    /// Asks the connection to close with 1001 (going away).
    pub fn close(&self) {
        self.closing.set(true);
        self.notify();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// The connection received bytes: it is alive.
    pub fn heard(&self, now: Instant) {
        self.last_heard.set(Some(now));
        self.pinged.set(false);
    }

    /// Whether the sweep asked for a ping since the last call.
    pub fn take_ping_due(&self) -> bool {
        self.ping_due.replace(false)
    }

    /// Whether the sweep found the connection idle past the idle timeout.
    pub fn is_idle(&self) -> bool {
        self.idle.get()
    }

    /// Closes the connection with 4001 once `unix_secs` (its token's expiry)
    /// has come.
    pub fn expire_at(&self, unix_secs: u64) {
        self.expires.set(unix_secs);
    }

    /// Whether the sweep found the connection's token expired.
    pub fn is_expired(&self) -> bool {
        self.expired.get()
    }

    /// The heartbeat check of one connection at `now` (`unix` in seconds).
    fn sweep(&self, now: Instant, unix: u64, interval: Duration, idle_timeout: Duration) {
        let Some(heard) = self.last_heard.get() else {
            return;
        };
        let expires = self.expires.get();
        if expires != 0 && unix >= expires && !self.expired.get() {
            self.expired.set(true);
            self.notify();
            return;
        }
        let quiet = now.saturating_duration_since(heard);
        if quiet >= idle_timeout {
            self.idle.set(true);
            self.notify();
        } else if quiet >= interval && !self.pinged.get() {
            self.pinged.set(true);
            self.ping_due.set(true);
            self.notify();
        }
    }

    /// Wakes the connection's task (it has frames to write or must close).
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Completes when [`ConnHandle::notify`] was called since the last time.
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| {
            if self.notified.replace(false) {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await;
    }
}

/// Removes a connection from its shard's table when dropped.
pub(crate) struct ConnGuard {
    shard: Rc<Shard>,
    key: usize,
    pub handle: Rc<ConnHandle>,
    /// The connection's place in the per-address count (it moves with the
    /// connection when it is handed to another shard).
    pub ip: Option<crate::limits::IpSlot>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut conns = self.shard.conns.borrow_mut();
        conns.remove(self.key);
        ShardStats::set(&self.shard.chat.stats().connections, conns.len());
    }
}

impl Shard {
    /// Registers a new connection, or `None` at the connection limit.
    pub fn admit(self: &Rc<Shard>) -> Option<ConnGuard> {
        let mut conns = self.conns.borrow_mut();
        if conns.len() >= self.config.connections_per_shard_max {
            return None;
        }
        let handle = Rc::new(ConnHandle::default());
        if self.shutdown.is_requested() {
            handle.close();
        }
        let key = conns.insert(handle.clone());
        ShardStats::set(&self.chat.stats().connections, conns.len());
        Some(ConnGuard {
            shard: self.clone(),
            key,
            handle,
            ip: None,
        })
    }

    /// Every sweep period, asks quiet connections for a ping and closes idle
    /// ones: one timer per shard instead of one per connection (a monoio
    /// sleep is 640 bytes). Runs until shutdown.
    pub async fn heartbeat_sweep(self: Rc<Shard>) {
        let (interval, idle) = (self.config.heartbeat_interval, self.config.idle_timeout);
        let period = (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        while !self.shutdown.is_requested() {
            monoio::time::sleep(period).await;
            let (now, unix) = (Instant::now(), crate::conn::unix_now());
            for (_, c) in self.conns.borrow().iter() {
                c.sweep(now, unix, interval, idle);
            }
        }
    }

    /// After accepting stopped: refuses new sends, lets the sends in flight
    /// commit and their acks and deliveries reach every shard (for at most
    /// half the grace period), then asks every connection to close and
    /// waits for them up to the rest of it.
    pub async fn drain(&self) {
        let start = std::time::Instant::now();
        let settle_by = start + self.config.shutdown_grace / 2;
        self.chat.stop_sends();
        while !self.chat.is_quiet() && std::time::Instant::now() < settle_by {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        self.shutdown.quiesce();
        while !self.shutdown.all_quiesced() && std::time::Instant::now() < settle_by {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        for (_, c) in self.conns.borrow().iter() {
            c.close();
        }
        let deadline = start + self.config.shutdown_grace;
        while !self.conns.borrow().is_empty() && std::time::Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.conns.borrow().len();
        if left > 0 {
            tracing::warn!(
                left,
                "connections still open after the shutdown grace period"
            );
        }
    }
}

impl Shard {
    fn new(init: ShardInit) -> Shard {
        let read_bytes = init.config.read_buffer_bytes;
        Shard {
            id: init.id,
            config: init.config,
            tokens: init.tokens,
            shutdown: init.shutdown,
            scratch: RefCell::new(vec![0; read_bytes]),
            conns: RefCell::new(Slab::new()),
            chat: Hub::new(init.chat),
            ips: init.ips,
        }
    }
}

/// Runs a shard on the calling thread until shutdown.
pub(crate) fn run(init: ShardInit, listener: std::net::TcpListener) -> std::io::Result<()> {
    let id = init.id;
    let shard = Shard::new(init);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if let Err(e) = monoio::utils::bind_to_cpu_set([usize::from(id) % cores]) {
        tracing::warn!(shard = id, cause = ?e, "cannot pin shard thread; running unpinned");
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .build()?;
    rt.block_on(async move {
        let listener = monoio::net::TcpListener::from_std(listener)?;
        let shard = Rc::new(shard);
        monoio::spawn(shard.clone().heartbeat_sweep());
        monoio::spawn(crate::chat::pump(shard.clone()));
        crate::accept::accept_loop(&shard, &listener).await;
        drop(listener);
        shard.drain().await;
        Ok(())
    })
}
