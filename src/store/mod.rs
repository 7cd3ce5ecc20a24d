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
pub use sqlite::{operator_secret_in, Access, SqliteLog, SyncMode};

use crate::protocol::{Draft, File, Message};
use crate::search::{Found, Query};

/// How long a client's `cid` is remembered: a resend within this time is
/// answered with the original message instead of being stored again.
pub const CID_MEMORY_MS: i64 = 24 * 60 * 60 * 1000;

/// How often the local stores sweep out cids older than [`CID_MEMORY_MS`]:
/// not on every append, which would walk a whole day of cids per batch.
/// (Redis expires them by itself.)
const CID_PRUNE_EVERY_MS: i64 = 10 * 60 * 1000;

/// What [`Log::tidy`] leaves to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tidy {
    /// Nothing: wait for the next op.
    Done,
    /// Another step, as soon as no op is waiting.
    More,
    /// Another step after this long, unless an op comes first.
    After(std::time::Duration),
}

/// The durable, totally ordered history of one board.
///
/// Posts, edits and deletions take their ids from one counter, so the ids
/// of messages may have gaps: an edit or deletion's id is its `change`, its
/// place in the board's one order. Reads return messages in their current
/// form (edited text and `edited`), never a deleted one.
pub trait Log: Send + Sync + 'static {
    /// Carries out `ops` in order, all in one transaction, and answers each:
    /// a post gets the next id (or, for a `cid` stored in the last day, the
    /// original message); an edit or deletion the next id as its change,
    /// when the key allows it; a block its end. A refused op refuses only
    /// itself. When this returns, what was done survives a crash of the
    /// process, and deleted text is gone from the store's content.
    fn commit(&self, ops: Vec<Op>, time: i64) -> Result<Vec<Outcome>, StoreError>;
    /// Stores the drafts in order: [`Log::commit`] of posts only, for
    /// imports and tests. A refused post fails the call.
    fn append(&self, drafts: Vec<Draft>, time: i64) -> Result<Vec<Appended>, StoreError> {
        self.commit(drafts.into_iter().map(Op::Post).collect(), time)?
            .into_iter()
            .map(|outcome| match outcome {
                Ok(Done::Posted(appended)) => Ok(appended),
                Ok(other) => Err(StoreError::Refused(format!("{other:?}"))),
                Err(denied) => Err(StoreError::Refused(format!("{denied:?}"))),
            })
            .collect()
    }
    /// Up to `limit` messages with an id larger than `id`, oldest first.
    fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The (up to) `limit` newest messages with an id smaller than `id`, oldest first.
    fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// Every message whose latest change (edit or deletion) is after `id`,
    /// up to `limit` of them, in the order of those changes: each as
    /// [`Event::Edited`] in its current form or [`Event::Deleted`].
    fn changes(&self, id: u64, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// The last id given out (to a post or a change), 0 for an empty board.
    fn last_id(&self) -> Result<u64, StoreError>;
    /// The newest (up to) `limit` messages in their current form, with an
    /// id below `before`, that match `query`: never a deleted message, nor
    /// an edited one by a word it no longer has.
    fn search(&self, query: &Query, before: u64, limit: usize) -> Result<Found, StoreError>;
    /// Housekeeping the writer does while no op is waiting, one short step
    /// at a time (indexing posts for search, merging the index).
    fn tidy(&self) -> Result<Tidy, StoreError> {
        Ok(Tidy::Done)
    }
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
    /// The operator secret, kept in the store so every process serving the
    /// board knows it: `fresh` (random) unless the board already has one.
    fn operator_secret(&self, fresh: &str) -> Result<String, StoreError>;
    /// Replaces the operator secret: links with the old one stop working.
    fn rotate_operator_secret(&self, fresh: &str) -> Result<(), StoreError>;
    /// The board's files, kept in the same store as its messages.
    fn files(&self) -> &dyn FileStore;
}

/// Bytes of file content per chunk: the unit files are written, stored and
/// read in, so an upload or download holds a chunk or two in memory, never
/// a whole file.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Bytes of a piece of a chunk as downloads read and send it: under
/// glibc's mmap threshold (128 KiB, fixed in `main.rs`), so the buffers a
/// download goes through come from the heap and are reused, rather than
/// each mapped, faulted in and unmapped again.
pub const PIECE_BYTES: usize = 64 * 1024;

/// An upload in progress, from [`FileStore::begin_upload`] on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadId(pub u64);

/// What [`FileStore::finish_upload`] made of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// New content, stored now.
    New(File),
    /// The board already held the same content: the upload's chunks are
    /// dropped and this, the file stored before, stands for it.
    Existing(File),
}

/// The board's files: content in chunks of [`CHUNK_BYTES`], written while
/// it streams in and read a chunk at a time.
///
/// Messages refer to files by id; [`Log::commit`] records which message
/// carries which file, and a deletion removes the files no other message
/// carries, in its own transaction. A file no message carries is removed by
/// [`FileStore::remove_orphans`] once its upload is old enough.
///
/// Threading: every method blocks, and is called from actix's blocking
/// pool or a command's own thread, never on an async worker.
pub trait FileStore: Send + Sync {
    /// Starts an upload at `time` (ms).
    fn begin_upload(&self, time: i64) -> Result<UploadId, StoreError>;
    /// Appends chunk number `seq` (from 0, at most [`CHUNK_BYTES`]) to the
    /// upload; refused with [`StoreError::FilesFull`] when the board's
    /// files, stored and being uploaded, would pass `quota` bytes.
    fn write_chunk(
        &self,
        upload: UploadId,
        seq: u32,
        bytes: &[u8],
        quota: u64,
    ) -> Result<(), StoreError>;
    /// Ends an upload whose chunks make up `file` (its id is the SHA-256
    /// of what was written). Content already stored is kept once: the
    /// upload's chunks go, and an unreferenced file's hour starts again.
    fn finish_upload(&self, upload: UploadId, file: &File, time: i64)
        -> Result<Stored, StoreError>;
    /// Drops an upload that will not be finished, and its chunks.
    fn abort_upload(&self, upload: UploadId) -> Result<(), StoreError>;
    /// The stored file with this id.
    fn file(&self, id: &str) -> Result<Option<File>, StoreError>;
    /// Chunk number `seq` of file `id`; `None` once the file is gone.
    fn read_chunk(&self, id: &str, seq: u32) -> Result<Option<Vec<u8>>, StoreError>;
    /// [`FileStore::read_chunk`] in pieces of at most [`PIECE_BYTES`], for
    /// a store that can read them so (one piece, the chunk, otherwise).
    fn read_pieces(&self, id: &str, seq: u32) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        Ok(self.read_chunk(id, seq)?.map(|chunk| vec![chunk]))
    }
    /// Removes every file no message carries whose upload finished before
    /// `before` (ms), and uploads begun before it and never finished;
    /// returns how many files went.
    fn remove_orphans(&self, before: i64) -> Result<usize, StoreError>;
    /// Bytes of all stored files and uploads in progress.
    fn used_bytes(&self) -> Result<u64, StoreError>;
    /// Housekeeping an upload leaves, done once it is answered rather than
    /// inside its chunks' writes (SQLite copies the WAL the chunks went
    /// through back into its file).
    fn after_upload(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One request to the log's writing end.
#[derive(Debug, Clone)]
pub enum Op {
    Post(Draft),
    /// New text for a message; only the key that posted it may edit it.
    Edit {
        id: u64,
        message: String,
        key: String,
    },
    /// The key that posted the message, or the operator secret, deletes it.
    Delete {
        id: u64,
        key: String,
    },
    /// With the operator secret: refuses posts from the address message
    /// `id` came from for `minutes`.
    Block {
        id: u64,
        minutes: u64,
        key: String,
    },
}

impl Op {
    /// The message an edit, deletion or block is about; `None` for a post.
    pub fn target(&self) -> Option<u64> {
        match self {
            Op::Post(_) => None,
            Op::Edit { id, .. } | Op::Delete { id, .. } | Op::Block { id, .. } => Some(*id),
        }
    }
}

/// What an [`Op`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Posted(Appended),
    Edited { message: Message, change: u64 },
    Deleted { id: u64, change: u64, by: Actor },
    Blocked { id: u64, until: i64 },
}

/// Who deleted a message, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Author,
    Operator,
}

/// Why an [`Op`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The key is not the one that posted the message, nor (where it would
    /// do) the operator secret.
    Forbidden,
    /// No such message: never posted, or deleted (a resend of a deleted
    /// post's `cid` too).
    NotFound,
    /// The sender's address is blocked until then (ms).
    Blocked { until: i64 },
    /// A post names a file the store does not hold: never uploaded, or
    /// removed (an hour after its upload with no message to carry it).
    UnknownFile { id: String },
}

/// One op's answer.
pub type Outcome = Result<Done, Denied>;

impl Done {
    /// What the board's clients learn of it, if anything.
    pub fn event(&self) -> Option<Event> {
        match self {
            Done::Posted(Appended::New(message)) => Some(Event::Posted(message.clone())),
            Done::Posted(Appended::Repeat(_)) | Done::Blocked { .. } => None,
            Done::Edited { message, change } => Some(Event::Edited {
                message: message.clone(),
                change: *change,
            }),
            Done::Deleted { id, change, .. } => Some(Event::Deleted {
                id: *id,
                change: *change,
            }),
        }
    }
}

/// A committed change to the board, in the board's one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Posted(Message),
    /// Message `message.id` now reads so, since change `change`.
    Edited {
        message: Message,
        change: u64,
    },
    Deleted {
        id: u64,
        change: u64,
    },
}

impl Event {
    /// The event's id in the board's order: the post's id or the change's.
    pub fn position(&self) -> u64 {
        match self {
            Event::Posted(message) => message.id,
            Event::Edited { change, .. } | Event::Deleted { change, .. } => *change,
        }
    }
}

/// True when two secrets (or their hashes) are equal; compared in constant time.
pub fn same_secret(given: &str, secret: &str) -> bool {
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// The rules of who may do what, for the stores that check them in Rust
/// (Redis checks the same in its script): `stored` is `None` when the
/// message `op` is about does not exist, else the key hash kept with it
/// (if any); `operator` is the secret. A block is judged before the message
/// is looked for, so that only the operator learns which ids exist.
pub fn judge(op: &Op, stored: Option<Option<&str>>, operator: &str) -> Result<Actor, Denied> {
    if let Op::Block { key, .. } = op {
        if !same_secret(key, operator) {
            return Err(Denied::Forbidden);
        }
    }
    let stored_key = stored.ok_or(Denied::NotFound)?;
    let (given, operator_may) = match op {
        Op::Post(_) => return Ok(Actor::Author),
        Op::Edit { key, .. } => (key, false),
        Op::Delete { key, .. } => (key, true),
        Op::Block { .. } => return Ok(Actor::Operator),
    };
    if stored_key.is_some_and(|stored| same_secret(&crate::protocol::key_hash(given), stored)) {
        Ok(Actor::Author)
    } else if operator_may && same_secret(given, operator) {
        Ok(Actor::Operator)
    } else {
        Err(Denied::Forbidden)
    }
}

/// What a shared store's live feed needs from whoever serves its messages
/// (the board implements it): the store's tail publishes through this and
/// nothing else, so the store depends on no module above it.
pub trait Follower: Send + Sync + 'static {
    /// Committed events, in the board's order, newer than any published before.
    fn publish(&self, events: &[Event]);
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
    crate::protocol::hex(&bytes)
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
    /// A post that `Log::append` could not store (blocked, or a resend of
    /// a deleted post).
    #[error("the store refused it: {0}")]
    Refused(String),
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
    /// An upload would take the board's files past `--max-files-bytes`.
    #[error("the board's files would pass their quota of {quota} bytes")]
    FilesFull { quota: u64 },
    /// Messages to import carry a file the board does not hold.
    #[error("message {message} carries file {id}, which the board does not hold")]
    MissingFile { message: u64, id: String },
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
