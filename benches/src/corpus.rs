//! [`Corpus`]: a deterministic stream of chat messages for benches.

use protocol::{ClientMsgId, Content, ConvId, DeviceId, Message, MsgId, Seq, UnixMillis, UserId};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// The length of every generated body, in bytes: a typical short chat line.
pub const BODY_BYTES: usize = 100;

/// Distinct bodies generated up front, so that making a message costs one
/// clone rather than a string build.
const BODIES: usize = 1024;

/// Senders are drawn from this many users, each with this many devices.
const USERS: u64 = 10_000;
const DEVICES_PER_USER: u64 = 3;

/// A plausible send timestamp (2023-11-14); ids and timestamps count up from here.
const TS_START: u64 = 1_700_000_000_000;

/// English-like words, so that bodies compress like chat text rather than
/// like random bytes (fjall compresses its blocks, SQLite does not).
const WORDS: &[&str] = &[
    "the", "a", "to", "and", "you", "I", "it", "is", "that", "for", "on", "we", "are", "be", "at",
    "can", "this", "have", "will", "not", "just", "see", "so", "meeting", "tomorrow", "tonight",
    "lunch", "call", "thanks", "sure", "maybe", "later", "sounds", "good", "ok", "let", "me",
    "know", "when", "where", "what", "time", "running", "late", "sorry", "great", "idea", "send",
    "the", "file", "please", "review", "deploy", "done", "fixed", "bug", "coffee", "train",
];

/// One message as its sender posts it: the message at its conversation's next
/// seq, and the client message id the send carried (recorded for dedupe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Post {
    pub msg: Message,
    pub cmid: ClientMsgId,
}

/// Generates [`Post`]s to conversations chosen uniformly at random, keeping
/// each conversation's last seq so that every conversation's seqs are
/// contiguous from 1. Two corpora with the same arguments generate the same
/// stream.
#[derive(Debug)]
pub struct Corpus {
    rng: SmallRng,
    /// The last seq handed out, per conversation index.
    last: Vec<Seq>,
    bodies: Vec<String>,
    posted: u64,
}

impl Corpus {
    /// A corpus over `convs` conversations, none of which has a message yet.
    pub fn new(convs: usize, seed: u64) -> Corpus {
        assert!(convs > 0);
        let mut rng = SmallRng::seed_from_u64(seed);
        let bodies = (0..BODIES).map(|_| body(&mut rng)).collect();
        Corpus {
            rng,
            last: vec![Seq::ZERO; convs],
            bodies,
            posted: 0,
        }
    }

    /// The id of the conversation at `index` (a group conversation).
    pub fn conv(index: usize) -> ConvId {
        ConvId::group(u64::try_from(index).expect("a usize fits in a u64") + 1)
    }

    /// How many conversations the corpus posts to.
    pub fn convs(&self) -> usize {
        self.last.len()
    }

    /// The conversation at `index` and the last seq posted to it.
    pub fn last(&self, index: usize) -> (ConvId, Seq) {
        (Corpus::conv(index), self.last[index])
    }

    /// Messages posted so far.
    pub fn posted(&self) -> u64 {
        self.posted
    }

    /// The next message, to a random conversation at its next seq.
    pub fn post(&mut self) -> Post {
        let index = self.rng.random_range(0..self.last.len());
        let seq = self.last[index].next();
        self.last[index] = seq;
        self.posted += 1;
        let user = self.rng.random_range(1..=USERS);
        let device = self.rng.random_range(1..=DEVICES_PER_USER);
        let body = self
            .bodies
            .choose(&mut self.rng)
            .expect("the body pool is not empty")
            .clone();
        Post {
            msg: Message {
                conv: Corpus::conv(index),
                seq,
                id: MsgId(self.posted),
                from: UserId(user),
                device: DeviceId(device),
                ts: UnixMillis(TS_START + self.posted),
                content: Content::Text(body),
            },
            cmid: ClientMsgId(self.posted),
        }
    }

    /// The next `n` messages.
    pub fn posts(&mut self, n: usize) -> Vec<Post> {
        (0..n).map(|_| self.post()).collect()
    }
}

/// A text body of exactly [`BODY_BYTES`] bytes made of words.
fn body(rng: &mut SmallRng) -> String {
    let mut s = String::with_capacity(BODY_BYTES + 16);
    while s.len() < BODY_BYTES {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS.choose(rng).expect("the word list is not empty"));
    }
    s.truncate(BODY_BYTES);
    s
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn seqs_are_contiguous_per_conversation() {
        let mut corpus = Corpus::new(7, 1);
        let mut last = std::collections::HashMap::new();
        for post in corpus.posts(1000) {
            let prev = last
                .insert(post.msg.conv, post.msg.seq)
                .unwrap_or(Seq::ZERO);
            assert_eq!(post.msg.seq, prev.next());
        }
        let total: u64 = (0..corpus.convs()).map(|i| corpus.last(i).1.0).sum();
        assert_eq!(total, corpus.posted());
    }

    #[test]
    fn bodies_have_the_promised_length() {
        let mut corpus = Corpus::new(3, 2);
        for post in corpus.posts(100) {
            let Content::Text(text) = post.msg.content else {
                panic!("the corpus posts text only");
            };
            assert_eq!(text.len(), BODY_BYTES);
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = Corpus::new(10, 3);
        let mut b = Corpus::new(10, 3);
        assert_eq!(a.posts(50), b.posts(50));
    }
}
