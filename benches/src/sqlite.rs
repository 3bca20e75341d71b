//! [`SqliteStore`]: the SQLite baseline the storage bench compares against.
//!
//! It does the same work as the store for the benched operations: an append
//! writes the message row and the dedupe row in one transaction, after the
//! same seq check (the last seq of each conversation is cached in memory and
//! recovered with one query on first touch, as the store's writer does); a
//! read decodes rows into `protocol::Message`, validating the body's UTF-8 as
//! the store validates its records. It stores text messages only: group
//! events would need a body encoding and are not benched.

use std::collections::HashMap;
use std::path::Path;

use protocol::{Content, ConvId, DeviceId, Message, MsgId, Seq, UnixMillis, UserId};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use storage::Durability;

use crate::corpus::Post;
use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    conv INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id INTEGER NOT NULL,
    sender INTEGER NOT NULL,
    device INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (conv, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe (
    sender INTEGER NOT NULL,
    device INTEGER NOT NULL,
    cmid INTEGER NOT NULL,
    conv INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (sender, device, cmid)
) WITHOUT ROWID;
";

const COLUMNS: &str = "seq, id, sender, device, ts, body";

/// A SQLite database holding messages and dedupe records like the store does.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// The last seq of each conversation appended to (see the module docs).
    last: HashMap<ConvId, Seq>,
}

/// SQLite keeps 64-bit signed integers; ids use all 64 bits (a group
/// conversation id has the high bit set), so they are stored bit for bit.
fn int(v: u64) -> i64 {
    v.cast_signed()
}

fn uint(v: i64) -> u64 {
    v.cast_unsigned()
}

/// The `synchronous` setting that gives the store's `durability` in WAL mode:
/// - `Fsync` → `FULL`: the WAL is synced at every commit; a commit survives a
///   power loss.
/// - `Os` → `NORMAL`: in WAL mode a commit writes the WAL to the OS without
///   syncing it (syncs happen only at checkpoints); a commit survives a crash
///   of the process, not of the machine. (In rollback-journal mode NORMAL
///   would still sync; WAL is what makes it match.)
/// - `None` → `OFF`: SQLite never syncs, not even at checkpoints. It still
///   hands each commit to the OS, a little more than the store's `None`
///   promises (that may keep it in a user-space buffer).
fn synchronous(durability: Durability) -> &'static str {
    match durability {
        Durability::Fsync => "FULL",
        Durability::Os => "NORMAL",
        Durability::None => "OFF",
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` in WAL mode
    /// with `durability` and a page cache as large as the store's default
    /// block cache.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        let conn = Connection::open(path)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        assert_eq!(mode, "wal", "SQLite refused WAL mode");
        conn.pragma_update(None, "synchronous", synchronous(durability))?;
        let cache_kib = storage::Config::new(path).cache_bytes / 1024;
        // A negative cache_size is in KiB rather than pages.
        conn.pragma_update(None, "cache_size", -int(cache_kib))?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn,
            last: HashMap::new(),
        })
    }

    /// Appends `posts` and their dedupe records in one transaction. Refuses
    /// (and rolls back) the whole batch if any seq is not its conversation's
    /// last seq + 1.
    pub fn append(&mut self, posts: &[Post]) -> Result<()> {
        let result = self.append_txn(posts);
        if result.is_err() {
            // The cache may hold seqs of the rolled-back batch; it is rebuilt
            // lazily from the table.
            self.last.clear();
        }
        result
    }

    fn append_txn(&mut self, posts: &[Post]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut last_seq =
                tx.prepare_cached("SELECT MAX(seq) FROM messages WHERE conv = ?1")?;
            let mut message = tx.prepare_cached(
                "INSERT INTO messages (conv, seq, id, sender, device, ts, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut dedupe = tx.prepare_cached(
                "INSERT OR REPLACE INTO dedupe (sender, device, cmid, conv, seq, id, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for Post { msg, cmid } in posts {
                let last = if let Some(&s) = self.last.get(&msg.conv) {
                    s
                } else {
                    let max: Option<i64> = last_seq.query_row([int(msg.conv.0)], |r| r.get(0))?;
                    Seq(max.map_or(0, uint))
                };
                if msg.seq != last.next() {
                    return Err(Error::SeqNotNext {
                        conv: msg.conv,
                        last,
                        got: msg.seq,
                    });
                }
                let Content::Text(text) = &msg.content else {
                    return Err(Error::NotText);
                };
                let (conv, seq, id, ts) = (
                    int(msg.conv.0),
                    int(msg.seq.0),
                    int(msg.id.0),
                    int(msg.ts.0),
                );
                let (sender, device) = (int(msg.from.0), int(msg.device.0));
                message.execute(params![conv, seq, id, sender, device, ts, text.as_bytes()])?;
                dedupe.execute(params![sender, device, int(cmid.0), conv, seq, id, ts])?;
                self.last.insert(msg.conv, msg.seq);
            }
        }
        Ok(tx.commit()?)
    }

    /// Catch-up: up to `limit` messages after `after`, ascending.
    pub fn messages_after(&self, conv: ConvId, after: Seq, limit: usize) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE conv = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        );
        self.query(
            &sql,
            conv,
            params![int(conv.0), int(after.0), limit_param(limit)],
        )
    }

    /// Pagination: the `limit` newest messages before `before`, ascending.
    pub fn messages_before(&self, conv: ConvId, before: Seq, limit: usize) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE conv = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        );
        let mut out = self.query(
            &sql,
            conv,
            params![int(conv.0), int(before.0), limit_param(limit)],
        )?;
        out.reverse();
        Ok(out)
    }

    /// The `limit` newest messages, ascending.
    pub fn messages_latest(&self, conv: ConvId, limit: usize) -> Result<Vec<Message>> {
        let sql =
            format!("SELECT {COLUMNS} FROM messages WHERE conv = ?1 ORDER BY seq DESC LIMIT ?2");
        let mut out = self.query(&sql, conv, params![int(conv.0), limit_param(limit)])?;
        out.reverse();
        Ok(out)
    }

    /// Moves the WAL's pages into the database file, as an idle server's
    /// automatic checkpoints would have, so that reads measure the B-tree.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?;
        Ok(())
    }

    /// Messages stored, in all conversations.
    pub fn count(&self) -> Result<u64> {
        let n = self
            .conn
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get::<_, i64>(0))?;
        Ok(uint(n))
    }

    fn query(
        &self,
        sql: &str,
        conv: ConvId,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Message>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |row| message(row, conv))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Decodes a row of [`COLUMNS`] into the message the store would return.
fn message(row: &Row<'_>, conv: ConvId) -> rusqlite::Result<Message> {
    let body: Vec<u8> = row.get(5)?;
    let text = String::from_utf8(body)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, Type::Blob, Box::new(e)))?;
    Ok(Message {
        conv,
        seq: Seq(uint(row.get(0)?)),
        id: MsgId(uint(row.get(1)?)),
        from: UserId(uint(row.get(2)?)),
        device: DeviceId(uint(row.get(3)?)),
        ts: UnixMillis(uint(row.get(4)?)),
        content: Content::Text(text),
    })
}
