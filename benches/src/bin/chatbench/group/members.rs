//! The online members' connections: a few threads, each an epoll loop
//! over its share of non-blocking sockets (bound to 127.0.0.2 ..=
//! 127.0.0.254 in turn), connecting at most [`IN_FLIGHT_MAX`] at a time,
//! then reading every socket until told to stop. `member.rs` handles
//! what each socket delivers.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use protocol::DeviceId;
use rustix::event::{Timespec, epoll};
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::member::{Ctx, Member, MemberReport, State, sync_frame};
use super::setup::{Group, TOKEN_TTL, joined_seq, member_user};
use super::{GroupOptions, STEP};
use crate::handshake;
use crate::pairs::peer::Shared;
use crate::server::Server;

/// Connections one thread has between connect and `synced` at once, so
/// that the server's accept queue never overflows (MEASURED.md).
const IN_FLIGHT_MAX: usize = 128;

/// Longest epoll wait, so that a thread notices stop, abort and timeouts.
const WAIT_SLICE: Duration = Duration::from_millis(20);

/// How often a thread looks for members stuck before `synced`.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Bytes one `read` takes at most.
const READ_BYTES: usize = 64 * 1024;

/// Events one epoll wait returns at most.
const EVENTS_MAX: usize = 1024;

/// Source addresses 127.0.0.2 ..= 127.0.0.254.
const SOURCES: usize = 253;

/// Failures kept for the error message.
const FAILURES_SHOWN: usize = 10;

/// What the member threads tell the main thread.
#[derive(Debug)]
pub struct Board {
    /// Members synced.
    ready: AtomicUsize,
    /// Members with every expected group message.
    completed: AtomicUsize,
    /// Group messages every member must get; `u64::MAX` until known.
    expected: AtomicU64,
    stop: AtomicBool,
    failed: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Board {
    fn new() -> Board {
        Board {
            ready: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            expected: AtomicU64::new(u64::MAX),
            stop: AtomicBool::new(false),
            failed: AtomicUsize::new(0),
            failures: Mutex::new(Vec::new()),
        }
    }

    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::Relaxed)
    }

    /// Tells the members how many group messages to wait for.
    pub fn expect(&self, count: u64) {
        self.expected.store(count, Ordering::Relaxed);
    }

    fn expected(&self) -> Option<u64> {
        Some(self.expected.load(Ordering::Relaxed)).filter(|&n| n != u64::MAX)
    }

    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() < FAILURES_SHOWN {
            failures.push(why);
        }
    }

    /// Fails if any member has.
    pub fn check(&self) -> Result<()> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        bail!(
            "{failed} online members failed; the first:\n  {}",
            failures.join("\n  ")
        )
    }
}

/// The running member threads.
#[derive(Debug)]
pub struct Members {
    board: Arc<Board>,
    handles: Vec<JoinHandle<Result<Vec<MemberReport>>>>,
    online: usize,
    started: Instant,
}

/// What every member thread needs to know.
#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    secret: Vec<u8>,
    conv: protocol::ConvId,
    base: u64,
    connect_timeout: Duration,
}

/// Starts `--threads` threads connecting the online members.
pub fn start(
    server: &Server,
    shared: &Arc<Shared>,
    group: Group,
    options: &GroupOptions,
) -> Result<Members> {
    let target = Arc::new(Target {
        addr: server.addr(),
        secret: server.secret().to_vec(),
        conv: group.conv,
        base: group.base,
        connect_timeout: options.connect_timeout,
    });
    let board = Arc::new(Board::new());
    let online: Vec<usize> = options.online_members().collect();
    let threads = options.threads.min(online.len());
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let members = (t..online.len())
            .step_by(threads)
            .map(|p| {
                let index = online[p];
                #[expect(clippy::cast_possible_truncation, reason = "below 253")]
                let source = Ipv4Addr::new(127, 0, 0, 2 + (p % SOURCES) as u8);
                Member::new(member_user(index), joined_seq(index), source)
            })
            .collect();
        let poller = Poller::new(shared.clone(), board.clone(), target.clone(), members)?;
        let handle = std::thread::Builder::new()
            .name(format!("members-{t}"))
            .spawn(move || poller.run())
            .context("spawning a member thread")?;
        handles.push(handle);
    }
    Ok(Members {
        board,
        handles,
        online: online.len(),
        started: Instant::now(),
    })
}

impl Members {
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Waits until every member is synced; returns the time it took.
    pub fn wait_ready(&self, server: &mut Server, shared: &Shared) -> Result<Duration> {
        let mut next_check = Instant::now();
        loop {
            self.board.check()?;
            let ready = self.board.ready.load(Ordering::Relaxed);
            if ready == self.online {
                return Ok(self.started.elapsed());
            }
            shared.check(Instant::now()).with_context(|| {
                format!(
                    "waiting for the online members to sync: {ready} of {} synced",
                    self.online
                )
            })?;
            if Instant::now() >= next_check {
                server.check_alive()?;
                next_check = Instant::now() + Duration::from_secs(1);
            }
            std::thread::sleep(STEP);
        }
    }

    /// Stops the threads and returns every member's report.
    pub fn stop(self) -> Result<Vec<MemberReport>> {
        self.board.stop.store(true, Ordering::Relaxed);
        let mut reports = Vec::with_capacity(self.online);
        for handle in self.handles {
            let mut some = handle
                .join()
                .unwrap_or_else(|_| Err(anyhow!("a member thread panicked")))?;
            reports.append(&mut some);
        }
        Ok(reports)
    }
}

/// One member thread.
struct Poller {
    shared: Arc<Shared>,
    board: Arc<Board>,
    target: Arc<Target>,
    epoll: OwnedFd,
    members: Vec<Member>,
    /// The next member to connect.
    next: usize,
    in_flight: usize,
    expected: Option<u64>,
    sync_frame: Vec<u8>,
    scratch: Vec<u8>,
}

impl Poller {
    fn new(
        shared: Arc<Shared>,
        board: Arc<Board>,
        target: Arc<Target>,
        members: Vec<Member>,
    ) -> Result<Poller> {
        Ok(Poller {
            shared,
            board,
            target,
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll_create")?,
            members,
            next: 0,
            in_flight: 0,
            expected: None,
            sync_frame: sync_frame(),
            scratch: vec![0; READ_BYTES],
        })
    }

    /// Connects the members, then reads until stopped. Returns on stop,
    /// abort or the run's deadline; member failures go to the board.
    fn run(mut self) -> Result<Vec<MemberReport>> {
        let mut events = Vec::with_capacity(EVENTS_MAX);
        let mut next_sweep = Instant::now();
        while !self.board.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self.shared.check(now).is_err() {
                break;
            }
            self.open_more(now);
            events.clear();
            let timeout = Timespec {
                tv_sec: 0,
                tv_nsec: i64::from(WAIT_SLICE.subsec_nanos()),
            };
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&timeout),
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(err) => return Err(std::io::Error::from(err)).context("epoll_wait"),
            }
            for event in &events {
                let i = usize::try_from(event.data.u64()).expect("a member index");
                if let Err(err) = self.on_event(i, event.flags) {
                    self.fail(i, &err);
                }
            }
            if self.in_flight > 0 && Instant::now() >= next_sweep {
                self.sweep(Instant::now());
                next_sweep = Instant::now() + SWEEP_EVERY;
            }
            self.note_expected();
        }
        Ok(self.members.into_iter().map(|m| m.report).collect())
    }

    /// Starts connecting members while fewer than [`IN_FLIGHT_MAX`] are.
    fn open_more(&mut self, now: Instant) {
        while self.in_flight < IN_FLIGHT_MAX && self.next < self.members.len() {
            let i = self.next;
            self.next += 1;
            if let Err(err) = self.connect(i, now) {
                self.fail(i, &err);
            }
        }
    }

    fn connect(&mut self, i: usize, now: Instant) -> Result<()> {
        let m = &mut self.members[i];
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .context("creating a socket")?;
        socket.set_nonblocking(true).context("O_NONBLOCK")?;
        socket.set_tcp_nodelay(true).context("TCP_NODELAY")?;
        socket
            .bind(&SockAddr::from(SocketAddrV4::new(m.source, 0)))
            .context("binding")?;
        match socket.connect(&SockAddr::from(self.target.addr)) {
            Ok(()) => {}
            Err(err)
                if err.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
            Err(err) => return Err(err).context("connecting"),
        }
        let stream = TcpStream::from(socket);
        epoll::add(
            &self.epoll,
            &stream,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::OUT,
        )
        .context("epoll_ctl")?;
        m.stream = Some(stream);
        m.state = State::Connecting;
        m.writing = true;
        m.deadline = Some(now + self.target.connect_timeout);
        self.in_flight += 1;
        Ok(())
    }

    fn on_event(&mut self, i: usize, flags: epoll::EventFlags) -> Result<()> {
        match self.members[i].state {
            State::Waiting | State::Failed => Ok(()),
            State::Connecting => self.connected(i),
            _ => {
                if flags.contains(epoll::EventFlags::OUT) {
                    self.flush(i)?;
                }
                let readable = epoll::EventFlags::IN
                    | epoll::EventFlags::ERR
                    | epoll::EventFlags::HUP
                    | epoll::EventFlags::RDHUP;
                if flags.intersects(readable) {
                    self.read(i)?;
                }
                Ok(())
            }
        }
    }

    /// The connect finished: sends the upgrade request.
    fn connected(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        let stream = m.stream.as_ref().expect("a connecting member has a socket");
        if let Some(err) = SockRef::from(stream).take_error().context("SO_ERROR")? {
            return Err(err).context("connecting");
        }
        let user = m.report.user;
        let token = client::mint_token(&self.target.secret, user, DeviceId(1), TOKEN_TTL);
        m.out
            .extend_from_slice(handshake::upgrade_request(self.target.addr, &token).as_bytes());
        m.state = State::Upgrading;
        self.flush(i)
    }

    fn read(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        let stream = m.stream.as_mut().expect("a connected member has a socket");
        let n = match stream.read(&mut self.scratch) {
            Ok(0) => bail!("the server closed the TCP connection"),
            Ok(n) => n,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                return Ok(());
            }
            Err(err) => return Err(err).context("reading"),
        };
        let arrival_ns = self.shared.now_ns();
        m.buf.extend_from_slice(&self.scratch[..n]);
        let (was_live, was_done) = (m.state == State::Live, m.done);
        let ctx = Ctx {
            conv: self.target.conv,
            base: self.target.base,
            expected: self.expected,
            sync_frame: &self.sync_frame,
        };
        m.on_bytes(&ctx, arrival_ns)?;
        if !was_live && m.state == State::Live {
            self.in_flight -= 1;
            self.board.ready.fetch_add(1, Ordering::Relaxed);
        }
        if !was_done && m.done {
            self.board.completed.fetch_add(1, Ordering::Relaxed);
        }
        self.flush(i)
    }

    /// Writes what `out` holds; watches for writability while some is left.
    fn flush(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        let stream = m.stream.as_mut().expect("a connected member has a socket");
        while !m.out.is_empty() {
            match stream.write(&m.out) {
                Ok(0) => bail!("the socket accepts no more bytes"),
                Ok(n) => {
                    m.out.drain(..n);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err).context("writing"),
            }
        }
        let want = !m.out.is_empty();
        if want != m.writing {
            let mut flags = epoll::EventFlags::IN;
            if want {
                flags |= epoll::EventFlags::OUT;
            }
            let data = epoll::EventData::new_u64(i as u64);
            epoll::modify(&self.epoll, &*stream, data, flags).context("epoll_ctl")?;
            m.writing = want;
        }
        Ok(())
    }

    /// Fails members that are not synced by their deadline.
    fn sweep(&mut self, now: Instant) {
        let timeout = self.target.connect_timeout;
        for i in 0..self.members.len() {
            let m = &self.members[i];
            if m.state.in_flight() && m.deadline.is_some_and(|d| now >= d) {
                let why = anyhow!("not synced within --connect-timeout ({timeout:?})");
                self.fail(i, &why);
            }
        }
    }

    /// Once the main thread knows how many group messages there are,
    /// counts the members that already have them all.
    fn note_expected(&mut self) {
        if self.expected.is_some() {
            return;
        }
        let Some(expected) = self.board.expected() else {
            return;
        };
        self.expected = Some(expected);
        for m in &mut self.members {
            if !m.done && m.state == State::Live && m.report.got.len() as u64 >= expected {
                m.done = true;
                self.board.completed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Closes member `i` and reports why.
    fn fail(&mut self, i: usize, err: &anyhow::Error) {
        let m = &mut self.members[i];
        if m.state.in_flight() {
            self.in_flight -= 1;
        }
        let state = m.state;
        m.state = State::Failed;
        // Closing the socket also takes it out of the epoll set.
        m.stream = None;
        self.board.fail(format!(
            "member user {} (from {}, while {state:?}): {err:#}",
            m.report.user, m.source
        ));
    }
}
