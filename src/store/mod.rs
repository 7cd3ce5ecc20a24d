//! The board's history: a durable, totally ordered log of messages, and the
//! live feed that brings newly committed messages to whoever serves them.
//!
//! [`Log`] is the seam between the board and where its history lives: it
//! persists and reads, and knows nothing of the board. The hub, the writer
//! and the HTTP API only ever see a `dyn Log`. Three logs implement it:
//! - [`SqliteLog`] (`sqlite.rs`): one SQLite file, the default (`lanboard.db`
//!   in the working directory, or `--data PATH`);
//! - [`MemoryLog`] (`memory.rs`): `--memory`, forgets everything on exit as
//!   the original board did;
//! - [`RedisLog`] (`redis.rs`): `--redis URL`, a Redis Stream shared by any
//!   number of lanboard processes.
//!
//! The live feed differs by who may write: SQLite and memory logs have this
//! process as their only writer, so the writer thread publishes each batch it
//! commits ([`Feed::Writer`]); a Redis board has many writers, so every node
//! publishes only what it reads back from the stream ([`Feed::Tail`]), which
//! gives all nodes one order. That tail talks to the board through
//! [`Follower`], the store's own small interface, so the store never names
//! the board: the server starts it when it chooses a Redis store.
//!
//! Threading: every method blocks. `append` is called only from the single
//! writer thread that owns the log's writing end (see `writer.rs`), the read
//! methods from actix's blocking pool, never on an async worker.

mod memory;
mod redis;
mod sqlite;

use std::path::PathBuf;

pub use memory::MemoryLog;
pub use redis::{RedisLog, RedisTarget};
pub use sqlite::{Access, SqliteLog, SyncMode};

use crate::protocol::{Draft, Message};

/// How long a client's `cid` is remembered: a resend within this time is
/// answered with the original message instead of being stored again.
pub const CID_MEMORY_MS: i64 = 24 * 60 * 60 * 1000;

/// How often the local stores sweep out cids older than [`CID_MEMORY_MS`]:
/// not on every append, which would walk a whole day of cids per batch.
/// (Redis expires them by itself.)
const CID_PRUNE_EVERY_MS: i64 = 10 * 60 * 1000;

/// The durable, totally ordered history of one board.
pub trait Log: Send + Sync + 'static {
    /// Stores the drafts in order, giving the new ones the next ids, all or
    /// none. A draft whose `cid` was stored in the last day is not stored
    /// again: its place in the answer holds the original message. When this
    /// returns, the new messages survive a crash of the process.
    fn append(&self, drafts: Vec<Draft>, time: i64) -> Result<Vec<Appended>, StoreError>;
    /// Up to `limit` messages with an id larger than `id`, oldest first.
    fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The (up to) `limit` newest messages with an id smaller than `id`, oldest first.
    fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The id of the newest message, 0 for an empty board.
    fn last_id(&self) -> Result<u64, StoreError>;
    /// Loads exported messages, keeping their ids and times, into an empty
    /// board; returns how many.
    fn import(&self, messages: &[Message]) -> Result<usize, StoreError>;
    /// Where the history lives, for the startup banner.
    fn describe(&self) -> String;
    /// A secret made once for the board and the same for every process
    /// serving it: `fresh` (random) unless the board already has one.
    fn shared_secret(&self, fresh: &str) -> Result<String, StoreError> {
        Ok(fresh.to_owned())
    }
    /// The history's epoch, for a store that can lose its history and begin
    /// anew (Redis): a client that saw another epoch must start over.
    fn epoch(&self) -> Option<String> {
        None
    }
}

/// What a shared store's live feed needs from whoever serves its messages
/// (the board implements it): the store's tail publishes through this and
/// nothing else, so the store depends on no module above it.
pub trait Follower: Send + Sync + 'static {
    /// Committed messages, in id order, newer than any published before.
    fn publish(&self, messages: &[Message]);
    /// The store lost its history and began anew as epoch `epoch`, whose
    /// newest messages (oldest first) are `recent`.
    fn reset(&self, recent: &[Message], epoch: String);
    /// How many of the newest messages [`Follower::reset`] wants.
    fn window(&self) -> usize;
    /// The id of the newest message published: where a feed resumes.
    fn last_id(&self) -> u64;
    /// How many connections this process serves.
    fn local_online(&self) -> usize;
    /// How many connections the store's other processes serve.
    fn set_elsewhere(&self, count: usize);
    /// True once the follower is closed: the feed stops.
    fn is_closed(&self) -> bool;
}

/// How committed messages reach this process's board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// This process is the log's only writer: the writer thread publishes
    /// each batch as soon as it is committed.
    Writer,
    /// Other processes append too: the log's own tail publishes what it
    /// reads back, in log order, to a [`Follower`], and the writer publishes
    /// nothing.
    Tail,
}

/// One draft's fate in [`Log::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, with a new id.
    New(Message),
    /// A resend of a message stored earlier under the same `cid`: the original.
    Repeat(Message),
}

impl Appended {
    pub fn message(&self) -> &Message {
        match self {
            Appended::New(message) | Appended::Repeat(message) => message,
        }
    }

    pub fn into_message(self) -> Message {
        match self {
            Appended::New(message) | Appended::Repeat(message) => message,
        }
    }
}

/// 128 random bits as hex: epochs, node ids and secrets.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // Without OS randomness the time is unique enough for an epoch or node id.
    if getrandom::getrandom(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = now.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that exported messages can be imported: strictly increasing ids.
fn check_import_order(messages: &[Message]) -> Result<(), StoreError> {
    let mut previous = 0;
    for message in messages {
        if message.id <= previous {
            return Err(StoreError::OutOfOrder {
                id: message.id,
                previous,
            });
        }
        previous = message.id;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is not a lanboard database")]
    NotLanboard { path: PathBuf },
    #[error("{path} was written by a newer lanboard (schema version {found}, this one knows up to {known})")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{path} cannot be written: {reason}")]
    ReadOnly { path: PathBuf, reason: String },
    #[error("{path} is in use by another running lanboard")]
    Locked { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the board already has messages; import only into an empty board")]
    NotEmpty,
    #[error("imported messages must have strictly increasing ids (id {id} follows {previous})")]
    OutOfOrder { id: u64, previous: u64 },
    #[error("cannot reach Redis at {url} (--redis): {reason}")]
    RedisUnreachable { url: String, reason: String },
    #[error("Redis at {url} is version {version}; lanboard needs Redis 6.2 or newer")]
    RedisTooOld { url: String, version: String },
    #[error(
        "Redis at {url} has maxmemory-policy {policy}, which could evict the board's messages; \
         set `maxmemory-policy noeviction` (or a volatile-* policy) in redis.conf"
    )]
    RedisMayEvict { url: String, policy: String },
    /// Redis did not answer in time or the connection is down: nothing was
    /// stored by this call as far as lanboard knows; the client may resend.
    #[error("the board's storage is unreachable: {0}")]
    Unavailable(String),
    #[error("Redis error: {0}")]
    Redis(String),
    /// The store failed inside (a bug in it or a library it uses) rather
    /// than answer: nothing is known to be stored.
    #[error("the store failed: {0}")]
    Panicked(String),
    /// The Redis board was just begun and takes posts after this wait.
    #[error("the board is starting; posts are taken in {0:?}")]
    Young(std::time::Duration),
}

impl StoreError {
    /// True when the store could not be reached at all (rather than refusing
    /// the request): the client should try again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
