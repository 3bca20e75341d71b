//! The storage crate against SQLite, side by side in one criterion group per
//! measurement so that the report shows the ratio.
//!
//! - `append/<durability>/<batch>`: group commit. For fjall, one iteration
//!   submits `batch` single-message write requests to the store's writer and
//!   waits for their `batch` completions; for SQLite it runs one transaction of
//!   `batch` messages. Both write the message and its dedupe record, at each
//!   conversation's next seq, over 1,000 conversations. Throughput is in
//!   messages.
//! - `catchup_50`, `history_page`, `latest_50`: reads of 50 messages (after a
//!   seq, before a seq, newest) from a conversation and position drawn at
//!   random per iteration, in stores prefilled with 200,000 messages over
//!   1,000 conversations. fjall is measured twice: `fjall` with its memtables
//!   flushed to on-disk tables (the state of all but the newest writes of a
//!   running server) and `fjall_memtable` with the prefill still in memory.
//!
//! Every store lives in a temporary directory (`TMPDIR`, which must be on the
//! disk under test: on a tmpfs fsync is free).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use benches::{Corpus, Post, SqliteStore};
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use crossbeam_channel::Receiver;
use protocol::{ConvId, Message, Seq};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use storage::{ChannelSink, Completion, Config, Durability, Op, Store, WriteRequest};

/// Conversations the messages are spread over.
const CONVS: usize = 1_000;
/// Messages in the stores the reads run against (200 per conversation).
const READ_PREFILL: usize = 200_000;
/// Messages per prefill write.
const PREFILL_CHUNK: usize = 1_000;
/// Messages per read.
const PAGE: usize = 50;
const BATCHES: [usize; 3] = [1, 64, 256];
const SEED: u64 = 0x5eed;

/// How long the writer waits for the rest of a batch. The bench sets
/// `batch_ops_max` to the batch size, so the writer commits the moment the
/// last request of the batch arrives: one iteration is exactly one commit, as
/// one SQLite transaction is. Only a stalled submitter lets the linger run
/// out. (With the default linger of zero a burst of 256 submits, ~10 µs, also
/// landed in one commit in a probe here, because it beats the writer's
/// wake-up; the linger makes that certain rather than likely.)
const LINGER: Duration = Duration::from_millis(50);

fn append_op(post: Post) -> Op {
    Op::Append {
        msg: post.msg,
        dedupe: Some(post.cmid),
    }
}

/// Submits single-message requests to a store and waits for their completions.
struct Appender {
    store: Store,
    sink: Arc<ChannelSink>,
    done: Receiver<Completion>,
}

impl Appender {
    fn open(path: &Path, durability: Durability, batch: usize) -> Appender {
        let mut config = Config::new(path).durability(durability);
        config.batch_ops_max = batch;
        config.batch_linger = LINGER;
        let store = Store::open(config).expect("a new store opens in a temporary directory");
        let (tx, done) = crossbeam_channel::unbounded();
        Appender {
            store,
            sink: Arc::new(ChannelSink(tx)),
            done,
        }
    }

    /// One request per post, ticketed with the post's unique client id.
    fn requests(&self, posts: Vec<Post>) -> Vec<WriteRequest> {
        posts
            .into_iter()
            .map(|post| {
                let ticket = post.cmid.0;
                WriteRequest::new(vec![append_op(post)], ticket, self.sink.clone())
            })
            .collect()
    }

    /// Submits every request, then waits until all of them are committed.
    fn append(&self, requests: Vec<WriteRequest>) {
        let n = requests.len();
        for req in requests {
            self.store
                .submit(req)
                .expect("the writer runs until the store drops");
        }
        for _ in 0..n {
            let done = self
                .done
                .recv()
                .expect("the writer completes every request it takes");
            done.result
                .expect("an append at its conversation's next seq is accepted");
        }
    }

    /// Checks that every conversation ends at the corpus's last seq and
    /// reports how many requests each commit held.
    fn verify(&self, corpus: &Corpus, bench: &str) {
        for index in 0..corpus.convs() {
            let (conv, last) = corpus.last(index);
            let stored = self
                .store
                .last_seq(conv)
                .expect("reads of a healthy store work");
            assert_eq!(stored, last, "{bench}: conversation {conv} lost appends");
        }
        let stats = self.store.stats();
        let requests = stats.requests.load(std::sync::atomic::Ordering::Relaxed);
        let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "{bench}/fjall: {requests} requests in {batches} commits ({} per commit)",
            requests / batches.max(1)
        );
    }
}

/// Runs `iters` iterations of untimed `prepare` then timed `run`.
fn timed<T>(iters: u64, mut prepare: impl FnMut() -> T, mut run: impl FnMut(T)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = prepare();
        let start = Instant::now();
        run(input);
        total += start.elapsed();
    }
    total
}

fn append_group(c: &mut Criterion, durability: Durability, batch: usize) {
    let name = format!("append/{durability}/{batch}");
    let mut group = c.benchmark_group(&name);
    group.throughput(Throughput::Elements(batch as u64));
    // Appends get slower as the store grows (the memtable fills, flushes
    // start). Flat sampling gives each sample the same number of iterations,
    // so the estimate is a plain mean over the run rather than a slope fitted
    // to a drifting cost.
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    if durability == Durability::Fsync {
        // Each iteration costs at least one fdatasync (~190 µs here).
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(3));
    } else {
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(2));
    }
    {
        let dir = tempfile::tempdir().expect("the temporary directory is writable");
        let appender = Appender::open(&dir.path().join("fjall"), durability, batch);
        let mut corpus = Corpus::new(CONVS, SEED);
        group.bench_function("fjall", |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || appender.requests(corpus.posts(batch)),
                    |reqs| appender.append(reqs),
                )
            });
        });
        appender.verify(&corpus, &name);
    }
    {
        let dir = tempfile::tempdir().expect("the temporary directory is writable");
        let mut sqlite = SqliteStore::open(&dir.path().join("sqlite.db"), durability)
            .expect("a new SQLite database opens in a temporary directory");
        let mut corpus = Corpus::new(CONVS, SEED);
        group.bench_function("sqlite", |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || corpus.posts(batch),
                    |posts| {
                        sqlite
                            .append(&posts)
                            .expect("an append at its conversation's next seq is accepted");
                    },
                )
            });
        });
        let count = sqlite.count().expect("reads of a healthy database work");
        assert_eq!(count, corpus.posted(), "{name}: SQLite lost appends");
    }
    group.finish();
}

fn append(c: &mut Criterion) {
    for durability in [Durability::Fsync, Durability::Os, Durability::None] {
        for batch in BATCHES {
            append_group(c, durability, batch);
        }
    }
}

/// Draws the conversation and position of each read. Every contender gets a
/// picker with the same seed, so they run the same sequence of reads.
struct Picker {
    rng: SmallRng,
    lasts: Vec<(ConvId, Seq)>,
}

impl Picker {
    fn new(corpus: &Corpus) -> Picker {
        let lasts: Vec<_> = (0..corpus.convs()).map(|i| corpus.last(i)).collect();
        for (conv, last) in &lasts {
            assert!(last.0 > PAGE as u64, "{conv} holds fewer than a page");
        }
        Picker {
            rng: SmallRng::seed_from_u64(SEED),
            lasts,
        }
    }

    fn conv(&mut self) -> (ConvId, Seq) {
        self.lasts[self.rng.random_range(0..self.lasts.len())]
    }

    /// A conversation and a seq with at least a page of messages after it.
    fn after(&mut self) -> (ConvId, Seq) {
        let (conv, last) = self.conv();
        (conv, Seq(self.rng.random_range(0..=last.0 - PAGE as u64)))
    }

    /// A conversation and a seq with at least a page of messages before it.
    fn before(&mut self) -> (ConvId, Seq) {
        let (conv, last) = self.conv();
        (
            conv,
            Seq(self.rng.random_range(PAGE as u64 + 1..=last.0 + 1)),
        )
    }
}

/// The benched reads, each done the same way on both sides.
#[derive(Clone, Copy, Debug)]
enum Read {
    /// `messages_after`: `WHERE conv = ? AND seq > ? ORDER BY seq LIMIT 50`.
    Catchup,
    /// `messages_before`: `WHERE conv = ? AND seq < ? ORDER BY seq DESC LIMIT 50`.
    HistoryPage,
    /// `messages_latest`: `WHERE conv = ? ORDER BY seq DESC LIMIT 50`.
    Latest,
}

impl Read {
    fn name(self) -> &'static str {
        match self {
            Read::Catchup => "catchup_50",
            Read::HistoryPage => "history_page",
            Read::Latest => "latest_50",
        }
    }

    fn fjall(self, store: &Store, picker: &mut Picker) -> Vec<Message> {
        match self {
            Read::Catchup => {
                let (conv, after) = picker.after();
                store.messages_after(conv, after, PAGE)
            }
            Read::HistoryPage => {
                let (conv, before) = picker.before();
                store.messages_before(conv, before, PAGE)
            }
            Read::Latest => store.messages_latest(picker.conv().0, PAGE),
        }
        .expect("reads of a healthy store work")
    }

    fn sqlite(self, db: &SqliteStore, picker: &mut Picker) -> Vec<Message> {
        match self {
            Read::Catchup => {
                let (conv, after) = picker.after();
                db.messages_after(conv, after, PAGE)
            }
            Read::HistoryPage => {
                let (conv, before) = picker.before();
                db.messages_before(conv, before, PAGE)
            }
            Read::Latest => db.messages_latest(picker.conv().0, PAGE),
        }
        .expect("reads of a healthy database work")
    }
}

/// The stores the reads run against, holding the same messages.
struct ReadStores {
    /// Prefilled, closed, memtables flushed to disk, reopened.
    flushed: Store,
    /// Prefilled and left as it was: everything is in the memtable.
    memtable: Store,
    sqlite: SqliteStore,
    corpus: Corpus,
    _dir: tempfile::TempDir,
}

fn prefill_fjall(path: &Path) -> Store {
    let store = Store::open(Config::new(path).durability(Durability::None))
        .expect("a new store opens in a temporary directory");
    let mut corpus = Corpus::new(CONVS, SEED);
    while corpus.posted() < READ_PREFILL as u64 {
        let ops = corpus
            .posts(PREFILL_CHUNK)
            .into_iter()
            .map(append_op)
            .collect();
        store
            .write(ops)
            .expect("an append at its conversation's next seq is accepted");
    }
    store
}

impl ReadStores {
    fn prefill() -> ReadStores {
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("the temporary directory is writable");
        let flushed_path = dir.path().join("fjall-flushed");
        let flushed = prefill_fjall(&flushed_path);
        flushed.flush().expect("a flush to a healthy disk succeeds");
        let memtable = prefill_fjall(&dir.path().join("fjall-memtable"));
        let mut sqlite = SqliteStore::open(&dir.path().join("sqlite.db"), Durability::None)
            .expect("a new SQLite database opens in a temporary directory");
        let mut corpus = Corpus::new(CONVS, SEED);
        while corpus.posted() < READ_PREFILL as u64 {
            sqlite
                .append(&corpus.posts(PREFILL_CHUNK))
                .expect("an append at its conversation's next seq is accepted");
        }
        sqlite
            .checkpoint()
            .expect("a checkpoint of a healthy database works");
        eprintln!(
            "reads: prefilled 3 stores with {READ_PREFILL} messages in {:.1?}",
            started.elapsed()
        );
        let stores = ReadStores {
            flushed,
            memtable,
            sqlite,
            corpus,
            _dir: dir,
        };
        stores.verify();
        stores
    }

    /// Checks that all three stores return the same full pages.
    fn verify(&self) {
        for read in [Read::Catchup, Read::HistoryPage, Read::Latest] {
            let mut pickers = [(); 3].map(|()| Picker::new(&self.corpus));
            for _ in 0..200 {
                let expected = read.sqlite(&self.sqlite, &mut pickers[0]);
                assert_eq!(expected.len(), PAGE, "{read:?} read a short page");
                assert_eq!(read.fjall(&self.flushed, &mut pickers[1]), expected);
                assert_eq!(read.fjall(&self.memtable, &mut pickers[2]), expected);
            }
        }
    }
}

fn read_group(c: &mut Criterion, stores: &ReadStores, read: Read) {
    let mut group = c.benchmark_group(read.name());
    group.sample_size(30);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    bench_fjall_read(&mut group, "fjall", &stores.flushed, stores, read);
    bench_fjall_read(&mut group, "fjall_memtable", &stores.memtable, stores, read);
    let mut picker = Picker::new(&stores.corpus);
    group.bench_function("sqlite", |b| {
        b.iter(|| read.sqlite(&stores.sqlite, &mut picker));
    });
    group.finish();
}

fn bench_fjall_read(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    store: &Store,
    stores: &ReadStores,
    read: Read,
) {
    let mut picker = Picker::new(&stores.corpus);
    group.bench_function(id, |b| b.iter(|| read.fjall(store, &mut picker)));
}

fn reads(c: &mut Criterion) {
    let stores = ReadStores::prefill();
    for read in [Read::Catchup, Read::HistoryPage, Read::Latest] {
        read_group(c, &stores, read);
    }
}

criterion_group!(storage, append, reads);
criterion_main!(storage);
