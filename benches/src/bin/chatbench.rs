//! `chatbench`: an end-to-end benchmark of a `switchboard` server, written
//! against docs/PROTOCOL.md only.
//!
//! It starts the server itself (`--dev`, a fresh temporary data directory,
//! port 0) so that it knows the pid to read CPU time and RSS from
//! `/proc/<pid>`, and stops it at the end, also on failure. The modes:
//!
//! - `pairs` (`pairs.rs`, `peer.rs`): users in pairs, each sender
//!   posting into the direct conversation with its receiver over its own
//!   blocking connection and thread. Reports delivered messages per second,
//!   send→ack and send→deliver latency (HDR histograms), server CPU per
//!   delivered message, and fails unless every receiver got exactly seqs
//!   1..=N of its conversation.
//! - `idle` (`idle.rs`, `handshake.rs`): server RSS per idle,
//!   authenticated WebSocket, with hand-written upgrades on a few threads.
//! - `group` (`group.rs`, `group/`): group fan-out: a group of many
//!   members, some online on non-blocking sockets driven by a few epoll
//!   threads, one member posting on a schedule, next to `pairs`-style 1:1
//!   traffic; send→last-member latency, and the pairs' latency without and
//!   with the group's traffic.
//! - `push` (`push.rs`): push notifications to offline devices through
//!   `pushd` and its mock provider (both started here too): jobs per
//!   second to the provider, coalescing, delivery latency (engine job
//!   creation → provider accepted), server and pushd CPU per job.
//!
//! `server.rs` runs the server process; `conn.rs` is the pairs bench's
//! WebSocket (also the group's sender's); `handshake.rs` the hand-written
//! client side of the protocol; `stats.rs` holds the histograms.
//! Each run prints a human-readable report, then one JSON line.

// A binary's root sits in src/bin/, next to other binaries' files; its own
// modules live in src/bin/chatbench/.
#[path = "chatbench/conn.rs"]
mod conn;
#[path = "chatbench/group.rs"]
mod group;
#[path = "chatbench/handshake.rs"]
mod handshake;
#[path = "chatbench/idle.rs"]
mod idle;
#[path = "chatbench/pairs.rs"]
mod pairs;
#[path = "chatbench/push.rs"]
mod push;
#[path = "chatbench/server.rs"]
mod server;
#[path = "chatbench/stats.rs"]
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use protocol::Encoding;

use crate::group::GroupOptions;
use crate::idle::IdleOptions;
use crate::pairs::PairsOptions;
use crate::push::{Platforms, PushOptions};
use crate::server::{Durability, Server, ServerOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// End-to-end benchmark of a Switchboard server it starts itself.
#[derive(Debug, Parser)]
#[command(name = "chatbench")]
struct Cli {
    /// The server binary.
    #[arg(long, default_value = "target/release/switchboard")]
    server: PathBuf,
    /// The server's shard threads.
    #[arg(long, default_value_t = 2)]
    shards: u16,
    /// What an ack means on the server.
    #[arg(long, value_enum, default_value_t = Durability::Fsync)]
    durability: Durability,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Pairs of users messaging over direct conversations: throughput,
    /// latency, server CPU per message.
    Pairs {
        /// Sender/receiver pairs (two connections and threads each).
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Messages each sender posts.
        #[arg(long, default_value_t = 200)]
        messages: u64,
        /// Closed loop: sends each sender keeps unacknowledged at most.
        #[arg(long, default_value_t = 8)]
        window: u64,
        /// Open loop instead: messages per second per sender, latency timed
        /// from each message's scheduled send time.
        #[arg(long)]
        rate: Option<f64>,
        /// Frame encoding of every connection.
        #[arg(long, value_enum, default_value_t = Wire::Binary)]
        encoding: Wire,
        /// Bound on the whole run (connect, sync, send, deliver), in seconds.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// Server memory per idle, authenticated WebSocket.
    Idle {
        /// Connections to hold open (at most 19,000 per process here).
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Threads opening connections, each one at a time.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Connections opened and closed before the first RSS reading.
        #[arg(long, default_value_t = 16)]
        warmup: usize,
        /// Seconds to wait after the last connection before reading RSS.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
        /// Bound on each connection's connect, upgrade and welcome, in seconds.
        #[arg(long, default_value_t = 10.0)]
        connect_timeout: f64,
    },
    /// Group fan-out: one member posting to a large group with many members
    /// online, next to unrelated 1:1 pairs; the pairs' latency without
    /// (phase 1) and with (phase 2) the group's traffic.
    Group(GroupArgs),
    /// Push notifications: messages to offline devices with tokens, through
    /// the engine's outbox, pushd and a mock APNs/FCM (started here too).
    Push(PushArgs),
}

/// `chatbench push`.
#[derive(Debug, clap::Args)]
struct PushArgs {
    /// Receivers (users 2..=N+1), each with one offline device with a token.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Messages the sender (user 1) posts, round-robin over the receivers.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Messages per second, open loop.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// The server's `--push-coalesce` window (`0s`: a job per message).
    #[arg(long, default_value = "0s")]
    coalesce: String,
    /// The mock provider's delay of every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    provider_latency_ms: u64,
    /// The pushd binary [default: `pushd` next to the server binary].
    #[arg(long)]
    pushd: Option<PathBuf>,
    /// Which provider the tokens are for (`mixed`: even users APNs, odd FCM).
    #[arg(long, value_enum, default_value_t = Platforms::Mixed)]
    platform: Platforms,
    /// pushd's provider requests in flight at most, per provider.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// `chatbench group`.
#[derive(Debug, clap::Args)]
struct GroupArgs {
    /// Group size, the sender (its creator) included.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Members besides the sender with a connected, synced device (the
    /// rest are offline).
    #[arg(long, default_value_t = 5_000)]
    online: usize,
    /// Unrelated 1:1 pairs (two connections and threads each).
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Messages per second per pair sender, open loop, in both phases.
    #[arg(long, default_value_t = 20.0)]
    pair_rate: f64,
    /// Group messages per second in phase 2, open loop.
    #[arg(long, default_value_t = 10.0)]
    group_rate: f64,
    /// Seconds of pair traffic before phase 1, not measured (the pairs'
    /// first messages touch cold conversations).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Length of each phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Threads driving the online members' sockets.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Bound on each member's connect, upgrade, welcome and sync, in seconds.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// Bound on the whole run (setup, connects, both phases, delivery), in
    /// seconds.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
}

/// `--encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Wire {
    Binary,
    Json,
}

fn seconds(flag: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("{flag} must be a non-negative number of seconds"))
}

/// The server's options before a bench adds its own.
fn server_options(path: PathBuf, shards: u16, durability: Durability) -> ServerOptions {
    ServerOptions {
        path,
        shards,
        durability,
        env: Vec::new(),
        args: Vec::new(),
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut server_options = server_options(cli.server, cli.shards, cli.durability);
    match cli.bench {
        Bench::Pairs {
            pairs,
            messages,
            window,
            rate,
            encoding,
            timeout,
        } => {
            let options = PairsOptions {
                pairs,
                messages,
                window,
                rate,
                encoding: match encoding {
                    Wire::Binary => Encoding::Binary,
                    Wire::Json => Encoding::Json,
                },
                timeout: seconds("--timeout", timeout)?,
            };
            pairs::check_options(&options)?;
            let mut server = Server::start(&server_options)?;
            pairs::run(&mut server, &options)
        }
        Bench::Idle {
            conns,
            threads,
            warmup,
            settle,
            connect_timeout,
        } => {
            let options = IdleOptions {
                conns,
                threads,
                warmup,
                settle: seconds("--settle", settle)?,
                connect_timeout: seconds("--connect-timeout", connect_timeout)?,
            };
            idle::check_options(&options)?;
            // Transparent huge pages inflate mimalloc's RSS 2-5x for many
            // small idle connections (MEASURED.md).
            server_options
                .env
                .push(("MIMALLOC_ALLOW_THP".to_owned(), "0".to_owned()));
            let mut server = Server::start(&server_options)?;
            idle::run(&mut server, &options)
        }
        Bench::Group(args) => {
            let options = GroupOptions {
                members: args.members,
                online: args.online,
                pairs: args.pairs,
                pair_rate: args.pair_rate,
                group_rate: args.group_rate,
                warmup: seconds("--warmup", args.warmup)?,
                phase: seconds("--seconds", args.seconds)?,
                threads: args.threads,
                connect_timeout: seconds("--connect-timeout", args.connect_timeout)?,
                timeout: seconds("--timeout", args.timeout)?,
            };
            group::check_options(&options)?;
            let mut server = Server::start(&server_options)?;
            group::run(&mut server, &options)
        }
        Bench::Push(args) => push(args, &server_options),
    }
}

fn push(args: PushArgs, server_options: &ServerOptions) -> Result<()> {
    let options = PushOptions {
        users: args.users,
        messages: args.messages,
        rate: args.rate,
        coalesce: args.coalesce,
        provider_latency_ms: args.provider_latency_ms,
        pushd: args
            .pushd
            .unwrap_or_else(|| server_options.path.with_file_name("pushd")),
        platform: args.platform,
        concurrency: args.concurrency,
    };
    push::check_options(&options)?;
    push::run(server_options, &options)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatbench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
