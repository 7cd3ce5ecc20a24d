//! [`SqliteLog`]: the board's history in one SQLite file.
//!
//! SQLite runs in WAL mode with one connection for the writer and one for
//! readers, so reading history never waits for a commit.
//!
//! Schema version 6 (`PRAGMA user_version = 6`), tagged with
//! `PRAGMA application_id` so that a foreign database is refused:
//! - `messages(id INTEGER PRIMARY KEY, name TEXT, message TEXT, time
//!   INTEGER, edited INTEGER, key TEXT, sender TEXT)`: the messages not
//!   deleted, in their current form; `key` is the SHA-256 of the author key,
//!   `sender` the address the post came from (for blocks).
//! - `changes(id INTEGER PRIMARY KEY, change INTEGER, deleted INTEGER)`:
//!   each edited or deleted message's latest change, indexed by `change`,
//!   for clients resuming after it.
//! - `cids(cid TEXT PRIMARY KEY, id INTEGER, time INTEGER)`: the clients'
//!   ids of the last day's posts.
//! - `blocks(sender TEXT PRIMARY KEY, until INTEGER)`: blocked senders.
//! - `settings(name TEXT PRIMARY KEY, value TEXT)`: the login cookie's
//!   `secret` and the `operator` secret.
//! - `search_index`: the FTS5 index of `messages`, written in the same
//!   transaction as every edit and deletion of a message in it; new posts
//!   join it a few hundred at a time, between the writer's batches (see
//!   [`BACKLOG_STEP`] and `search`).
//! - `search_progress(indexed_to INTEGER)`: one row, how far the index goes.
//! - `messages.files`: the files a message carries, as the JSON list its
//!   frames show (`NULL` for none).
//! - `files(handle INTEGER PRIMARY KEY, id TEXT UNIQUE, name TEXT, size
//!   INTEGER, type TEXT, time INTEGER)`: each stored file by its SHA-256
//!   `id`, and each upload in progress (`id` still `NULL`); `time` is when
//!   its upload began or, for a file, when it was last uploaded.
//! - `file_chunks(file, seq, data BLOB)`: the content, in chunks of
//!   `CHUNK_BYTES`, in the same file as the messages, so a copy of the file
//!   is a whole backup.
//! - `file_refs(file, message)`: which message carries which file; a file
//!   goes with the last message carrying it.
//!
//! Versions 1 to 6 are upgraded in place on open; gaining the search index
//! (from version 4 or older) reads every message once, with a progress line
//! on stderr for a large file.
//!
//! Deleted means gone from the file: the writer runs with `secure_delete`,
//! which overwrites a deleted row (and an edited message's old text) with
//! zeros, and after every commit that deleted or edited a message it
//! checkpoints the WAL into the file and truncates it, so the old page
//! images in the WAL go too. Removed files go the same way.
//!
//! Files are written by uploads on actix's blocking pool, through the
//! writer's connection (and its lock) a chunk per transaction, so a post
//! waits for at most one chunk's write; they are read through the reading
//! connection.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{
    check_import_order, judge, same_secret, Appended, Denied, Done, Event, FileStore, Log, Op,
    Outcome, StoreError, Stored, Tidy, UploadId, CID_MEMORY_MS, CID_PRUNE_EVERY_MS, PIECE_BYTES,
};
use crate::files;
use crate::protocol::{File, Message};
use crate::search::{self, Found, Query, CREATE_INDEX, CREATE_PROGRESS, MERGE_WHEN_IDLE};

/// "LNBD": marks a SQLite file as a lanboard database.
const APPLICATION_ID: i64 = 0x4c4e_4244;
const SCHEMA_VERSION: i64 = 7;

/// Posts the writer indexes in one go between batches, once that many wait
/// (or once the oldest has waited [`BACKLOG_WAIT`]): enough to make
/// indexing cheap, few enough that a post arriving meanwhile waits a few
/// milliseconds, and that a search indexes the backlog for itself as fast.
const BACKLOG_STEP: i64 = 512;
/// How long the writer lets a backlog smaller than a step wait.
const BACKLOG_WAIT: Duration = Duration::from_millis(100);
/// A backlog the commit itself indexes: only reached when posts never stop
/// coming long enough for the writer to do it between batches.
const BACKLOG_MOST: i64 = 8 * BACKLOG_STEP;

/// WAL pages after which a commit copies the WAL back into the file: every
/// 8,000 pages instead of SQLite's 1,000 makes checkpoints rarer on a busy
/// board, for a WAL file of at most about 32 MiB.
const WAL_AUTOCHECKPOINT: i64 = 8000;

/// History in one SQLite file.
pub struct SqliteLog {
    path: PathBuf,
    writer: Mutex<Writing>,
    reader: Mutex<Connection>,
    /// Held for the life of the log so a second lanboard on the same file is
    /// refused instead of interleaving ids with ours. An OS file lock is used
    /// rather than SQLite's exclusive locking mode, which would also lock out
    /// our own reader connection and `lanboard export`.
    _lock: Option<std::fs::File>,
    /// The file's schema version: older than [`SCHEMA_VERSION`] only when
    /// opened to read (export), which reads it as it is.
    version: i64,
}

/// The writer's connection, and when it last forgot old cids.
struct Writing {
    conn: Connection,
    cids_pruned_at: i64,
    /// True while a commit removed text that a checkpoint has not yet
    /// cleared out of the WAL (a reader held it up): the next commit tries again.
    unscrubbed: bool,
    /// Where the search index stands (`search_progress`).
    indexed_to: i64,
    /// Posts after `indexed_to`, and since when the oldest of them waits.
    backlog: i64,
    backlog_since: Instant,
    /// Bytes of the stored files and the uploads in progress.
    files_bytes: u64,
}

/// How long a commit waits for the disk (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// A commit is written to the OS before anyone hears of the message: it
    /// survives a crash or `kill -9` of lanboard, but the last commits before a
    /// power cut or OS crash may be lost (the file itself never corrupts).
    Normal,
    /// Every commit also waits for the disk (fsync): messages survive a power
    /// cut too, at the cost of a disk flush (often milliseconds) per commit.
    Full,
}

/// How a [`SqliteLog`] is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The server, or import: creates the file, takes the single-writer lock.
    Write,
    /// Export: reads a file that a running board may be writing.
    Read,
}

impl SqliteLog {
    pub fn open(path: &Path, access: Access, sync: SyncMode) -> Result<SqliteLog, StoreError> {
        let path = path.to_path_buf();
        let lock = match access {
            Access::Write => Some(take_lock(&path)?),
            Access::Read => None,
        };
        let flags = match access {
            Access::Write => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let writer = Connection::open_with_flags(&path, flags)?;
        check_or_create_schema(&writer, &path, access, sync)?;
        // Export may read a file an older lanboard wrote, left as it was.
        let version: i64 = writer.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let (indexed_to, backlog) = if version >= 6 {
            let indexed_to = search::indexed_to(&writer)?;
            let backlog = writer.query_row(
                "SELECT count(*) FROM messages WHERE id > ?1",
                [indexed_to],
                |row| row.get(0),
            )?;
            (indexed_to, backlog)
        } else {
            (0, 0)
        };
        let files_bytes = if version >= 7 && access == Access::Write {
            // Uploads cut off by a stop are never finished: drop them.
            writer.execute_batch(
                "BEGIN;
                 DELETE FROM file_chunks WHERE file IN (SELECT handle FROM files WHERE id IS NULL);
                 DELETE FROM files WHERE id IS NULL;
                 COMMIT;",
            )?;
            writer.query_row("SELECT coalesce(sum(size), 0) FROM files", [], |row| {
                row.get::<_, i64>(0)
            })? as u64
        } else {
            0
        };
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        search::prepare_backlog(&reader)?;
        Ok(SqliteLog {
            path,
            writer: Mutex::new(Writing {
                conn: writer,
                cids_pruned_at: 0,
                unscrubbed: false,
                indexed_to,
                backlog,
                backlog_since: Instant::now(),
                files_bytes,
            }),
            reader: Mutex::new(reader),
            _lock: lock,
            version,
        })
    }
}

impl SqliteLog {
    /// The columns [`read_message`] reads, as this file has them.
    fn columns(&self) -> &'static str {
        if self.version < 4 {
            "id, name, message, time, NULL, NULL"
        } else if self.version < 7 {
            "id, name, message, time, edited, NULL"
        } else {
            MESSAGE
        }
    }
}

const INSERT: &str = "INSERT INTO messages (id, name, message, time, edited, key, sender, files)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// The columns [`read_message`] reads, in its order.
const MESSAGE: &str = "id, name, message, time, edited, files";

/// The last id given out: a post's, or a change's (which outlives a
/// deleted message's row).
const LAST_ID: &str = "SELECT max(coalesce((SELECT max(id) FROM messages), 0),
                          coalesce((SELECT max(change) FROM changes), 0))";

fn take_lock(path: &Path) -> Result<std::fs::File, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
        Err(e) if e.raw_os_error() == Some(30) => {
            // EROFS: the file system itself is mounted read-only.
            return Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
        Err(e) => return Err(io(e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

fn check_or_create_schema(
    conn: &Connection,
    path: &Path,
    access: Access,
    sync: SyncMode,
) -> Result<(), StoreError> {
    let not_lanboard = || StoreError::NotLanboard {
        path: path.to_path_buf(),
    };
    // Reading the header is the first thing that touches the file: a file
    // that is not SQLite at all fails here with SQLITE_NOTADB.
    let application_id: i64 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => not_lanboard(),
            _ => e.into(),
        })?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
    if application_id == 0 && version == 0 && tables == 0 {
        if access == Access::Read {
            return Err(not_lanboard());
        }
        create_schema(conn, path)?;
    } else if application_id != APPLICATION_ID {
        return Err(not_lanboard());
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    // Migrations from older schema versions, every step in one transaction.
    // Adding columns only writes the schema, not the rows, so it is instant
    // at any size. A reader (export) of an old file reads it as it is.
    if access == Access::Write && (5..SCHEMA_VERSION).contains(&version) {
        // Version 5 indexed every post in its own commit: all are in.
        let progress = if version == 5 {
            format!(
                "{CREATE_PROGRESS} {MERGE_WHEN_IDLE}
                 INSERT INTO search_progress (indexed_to)
                     SELECT coalesce(max(id), 0) FROM messages;"
            )
        } else {
            String::new()
        };
        conn.execute_batch(&format!(
            "BEGIN; {progress} {ADD_FILES}
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
    } else if access == Access::Write && (1..SCHEMA_VERSION).contains(&version) {
        let cids = if version < 2 { CREATE_CIDS } else { "" };
        let settings = if version < 3 { CREATE_SETTINGS } else { "" };
        let moderation = if version < 4 { ADD_MODERATION } else { "" };
        conn.execute_batch(&format!(
            "BEGIN; {cids} {settings} {moderation} {CREATE_INDEX} {MERGE_WHEN_IDLE} {CREATE_PROGRESS} {ADD_FILES}"
        ))?;
        let filled = search::fill(conn, |done, total| {
            if total > search::FILL_STEP {
                eprintln!(
                    "lanboard: {}: indexing messages for search, {done} of {total}",
                    path.display()
                );
            }
        });
        if let Err(error) = filled {
            conn.execute_batch("ROLLBACK")?;
            return Err(error.into());
        }
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))?;
    }
    if access == Access::Write {
        // WAL lets readers (and `lanboard export`) run beside the writer.
        // Every commit is written to the WAL before the writer thread
        // publishes or acks, so an acked message survives a killed process;
        // `--sync full` also waits for the disk, for power cuts.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
                reason: format!("could not switch to WAL (journal mode is {mode})"),
            });
        }
        conn.execute_batch(match sync {
            SyncMode::Normal => "PRAGMA synchronous=NORMAL",
            SyncMode::Full => "PRAGMA synchronous=FULL",
        })?;
        // Checkpoints (copying the WAL back into the file, with a disk
        // flush) run on the writer thread between commits.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
        // Deleted rows and replaced text are overwritten with zeros, not
        // left in free space: see the module documentation.
        conn.execute_batch("PRAGMA secure_delete=ON")?;
        // The checkpoint after a deletion waits this long for a reader.
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        if conn.is_readonly("main")? {
            return Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
                reason: "the file or its folder is read-only".into(),
            });
        }
    }
    Ok(())
}

const CREATE_CIDS: &str = "CREATE TABLE cids (
    cid TEXT PRIMARY KEY,
    id INTEGER NOT NULL,
    time INTEGER NOT NULL
) WITHOUT ROWID;";

const CREATE_SETTINGS: &str = "CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;";

/// Version 4: what moderation needs (see the module documentation).
const ADD_MODERATION: &str = "ALTER TABLE messages ADD COLUMN edited INTEGER;
ALTER TABLE messages ADD COLUMN key TEXT;
ALTER TABLE messages ADD COLUMN sender TEXT;
CREATE TABLE changes (
    id INTEGER PRIMARY KEY,
    change INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE INDEX changes_in_order ON changes (change);
CREATE TABLE blocks (
    sender TEXT PRIMARY KEY,
    until INTEGER NOT NULL
) WITHOUT ROWID;";

/// Version 7: files (see the module documentation).
const ADD_FILES: &str = "ALTER TABLE messages ADD COLUMN files TEXT;
CREATE TABLE files (
    handle INTEGER PRIMARY KEY,
    id TEXT UNIQUE,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    type TEXT NOT NULL,
    time INTEGER NOT NULL
);
CREATE TABLE file_chunks (
    file INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (file, seq)
);
CREATE TABLE file_refs (
    file TEXT NOT NULL,
    message INTEGER NOT NULL,
    PRIMARY KEY (file, message)
) WITHOUT ROWID;";

/// The `settings` row that keys the login cookie.
const SECRET: &str = "secret";
/// The `settings` row that holds the operator secret.
const OPERATOR: &str = "operator";

fn create_schema(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let result = conn.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE messages (
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             message TEXT NOT NULL,
             time INTEGER NOT NULL
         );
         {CREATE_CIDS}
         {CREATE_SETTINGS}
         {ADD_MODERATION}
         {CREATE_INDEX}
         {MERGE_WHEN_IDLE}
         {CREATE_PROGRESS}
         INSERT INTO search_progress (indexed_to) VALUES (0);
         {ADD_FILES}
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    ));
    match result {
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) => {
            Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
        other => Ok(other?),
    }
}

fn read_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: row.get::<_, i64>(0)? as u64,
        name: row.get(1)?,
        message: row.get(2)?,
        time: row.get(3)?,
        edited: row.get(4)?,
        files: files::from_column(row, 5)?,
    })
}

fn collect(
    conn: &Connection,
    sql: &str,
    id: u64,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    let mut select = conn.prepare_cached(sql)?;
    let id = i64::try_from(id).unwrap_or(i64::MAX);
    let rows = select.query_map(params![id, limit as i64], read_message)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Log for SqliteLog {
    fn commit(&self, ops: Vec<Op>, time: i64) -> Result<Vec<Outcome>, StoreError> {
        let mut writing = self.writer.lock();
        let prune = time - writing.cids_pruned_at > CID_PRUNE_EVERY_MS;
        let (was_indexed_to, was_backlog) = (writing.indexed_to, writing.backlog);
        let tx = writing
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if prune {
            tx.execute("DELETE FROM cids WHERE time <= ?1", [time - CID_MEMORY_MS])?;
            tx.execute("DELETE FROM blocks WHERE until <= ?1", [time])?;
        }
        let mut batch = Batch {
            tx: &tx,
            time,
            indexed_to: was_indexed_to,
            posted: 0,
            // Cached statements: every commit asks, and parsing the SQL
            // showed in the writer's profile.
            last: tx
                .prepare_cached(LAST_ID)?
                .query_row([], |row| row.get(0))?,
            operator: tx
                .prepare_cached("SELECT value FROM settings WHERE name = ?1")?
                .query_row([OPERATOR], |row| row.get(0))
                .optional()?
                .unwrap_or_default(),
            removed_text: false,
            freed: 0,
        };
        let outcomes = ops
            .into_iter()
            .map(|op| batch.apply(op))
            .collect::<Result<Vec<_>, _>>()?;
        let removed_text = batch.removed_text;
        let freed = batch.freed;
        let mut backlog = was_backlog + batch.posted;
        let mut indexed_to = was_indexed_to;
        if backlog >= BACKLOG_MOST {
            indexed_to = search::catch_up(&tx, indexed_to, i64::MAX)?.indexed_to;
            backlog = 0;
        }
        tx.commit()?;
        if prune {
            writing.cids_pruned_at = time;
        }
        if was_backlog == 0 && backlog > 0 {
            writing.backlog_since = Instant::now();
        }
        writing.backlog = backlog;
        writing.indexed_to = indexed_to;
        writing.files_bytes = writing.files_bytes.saturating_sub(freed);
        if removed_text || writing.unscrubbed {
            writing.unscrubbed = !scrub_wal(&writing.conn);
        }
        Ok(outcomes)
    }

    fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        collect(
            &self.reader.lock(),
            &format!(
                "SELECT {} FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
                self.columns()
            ),
            id,
            limit,
        )
    }

    fn changes(&self, id: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        if self.version < 4 {
            return Ok(Vec::new());
        }
        let conn = self.reader.lock();
        let mut select = conn.prepare_cached(&format!(
            "SELECT c.change, c.deleted, m.id, m.name, m.message, m.time, m.edited, c.id, {}
             FROM changes c LEFT JOIN messages m ON m.id = c.id
             WHERE c.change > ?1 ORDER BY c.change LIMIT ?2",
            if self.version < 7 { "NULL" } else { "m.files" }
        ))?;
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        let rows = select.query_map(params![id, limit as i64], |row| {
            let change = row.get::<_, i64>(0)? as u64;
            let deleted: bool = row.get(1)?;
            let present: Option<i64> = row.get(2)?;
            Ok(match present {
                Some(_) if !deleted => Event::Edited {
                    message: Message {
                        id: row.get::<_, i64>(2)? as u64,
                        name: row.get(3)?,
                        message: row.get(4)?,
                        time: row.get(5)?,
                        edited: row.get(6)?,
                        files: files::from_column(row, 8)?,
                    },
                    change,
                },
                _ => Event::Deleted {
                    id: row.get::<_, i64>(7)? as u64,
                    change,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let mut messages = collect(
            &self.reader.lock(),
            &format!(
                "SELECT {} FROM messages WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
                self.columns()
            ),
            id,
            limit,
        )?;
        messages.reverse();
        Ok(messages)
    }

    fn search(&self, query: &Query, before: u64, limit: usize) -> Result<Found, StoreError> {
        if self.version < 6 {
            return Ok(Found::default());
        }
        let conn = self.reader.lock();
        // One read transaction: where the index stands and the messages
        // after it are seen as one commit left them.
        let tx = conn.unchecked_transaction()?;
        let indexed_to = search::indexed_to(&tx)?;
        Ok(search::find_with_backlog(
            &tx, query, indexed_to, before, limit,
        )?)
    }

    /// Indexes the backlog once a step's worth waits, or once it has
    /// waited [`BACKLOG_WAIT`], and merges the index's segments: a step at
    /// a time.
    fn tidy(&self) -> Result<Tidy, StoreError> {
        let mut writing = self.writer.lock();
        let waited = writing.backlog_since.elapsed();
        let due = writing.backlog >= BACKLOG_STEP || waited >= BACKLOG_WAIT;
        if writing.backlog > 0 && due {
            let tx = writing.conn.unchecked_transaction()?;
            let step = search::catch_up(&tx, writing.indexed_to, BACKLOG_STEP)?;
            tx.commit()?;
            writing.indexed_to = step.indexed_to;
            // The count only errs high (a deleted post stays in it), and a
            // step short of full means nothing is left.
            writing.backlog = if step.indexed < BACKLOG_STEP {
                0
            } else {
                writing.backlog - step.indexed
            };
            writing.backlog_since = Instant::now();
            return Ok(Tidy::More);
        }
        Ok(if search::merge_some(&writing.conn)? {
            Tidy::More
        } else if writing.backlog > 0 {
            Tidy::After(BACKLOG_WAIT - waited)
        } else {
            Tidy::Done
        })
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        let query = if self.version < 4 {
            "SELECT coalesce(max(id), 0) FROM messages"
        } else {
            LAST_ID
        };
        let last: i64 = self.reader.lock().query_row(query, [], |row| row.get(0))?;
        Ok(last as u64)
    }

    fn import(&self, messages: &[Message]) -> Result<usize, StoreError> {
        check_import_order(messages)?;
        if self.last_id()? != 0 {
            return Err(StoreError::NotEmpty);
        }
        let mut writing = self.writer.lock();
        let after = writing.indexed_to;
        let tx = writing.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for m in messages {
                let none: Option<&str> = None;
                for file in &m.files {
                    if stored_file(&tx, &file.id)?.is_none() {
                        return Err(StoreError::MissingFile {
                            message: m.id,
                            id: file.id.clone(),
                        });
                    }
                }
                insert.execute(params![
                    m.id as i64,
                    m.name,
                    m.message,
                    m.time,
                    m.edited,
                    none,
                    none,
                    files::to_column(&m.files)
                ])?;
                refer(&tx, m.id as i64, &m.files)?;
            }
        }
        let indexed_to = search::catch_up(&tx, after, i64::MAX)?.indexed_to;
        tx.commit()?;
        writing.indexed_to = indexed_to;
        writing.backlog = 0;
        // Into the file itself: a copy of the file alone then holds the
        // board, and the next start has no WAL the size of it to replay.
        writing
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(messages.len())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// Kept in the file, so a login survives a restart of the board.
    fn shared_secret(&self, fresh: &str) -> Result<String, StoreError> {
        setting(&self.writer.lock().conn, SECRET, fresh)
    }

    fn operator_secret(&self, fresh: &str) -> Result<String, StoreError> {
        setting(&self.writer.lock().conn, OPERATOR, fresh)
    }

    fn rotate_operator_secret(&self, fresh: &str) -> Result<(), StoreError> {
        rotate(&self.writer.lock().conn, fresh)
    }

    fn files(&self) -> &dyn FileStore {
        self
    }
}

/// Writes chunk `seq` of `upload` in a transaction of its own.
fn write_chunk_in(
    conn: &mut Connection,
    upload: UploadId,
    seq: u32,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    // Only into an upload still in progress: one dropped meanwhile (its
    // client went away, or it was swept) takes no more chunks.
    let live: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM files WHERE handle = ?1 AND id IS NULL)")?
        .query_row([upload.0 as i64], |row| row.get(0))?;
    if !live {
        return Err(StoreError::Refused("the upload was dropped".into()));
    }
    // The row is made with a zeroblob, which SQLite writes as zeroed
    // pages without a buffer of its size (a bound parameter, or a
    // zeroblob passed through a SELECT, is first copied into a record
    // as large as the chunk: a block mapped, zeroed and unmapped for
    // every chunk), and the content then goes straight into the pages
    // with blob I/O.
    tx.prepare_cached("INSERT INTO file_chunks (file, seq, data) VALUES (?1, ?2, zeroblob(?3))")?
        .execute(params![upload.0 as i64, seq, bytes.len() as i64])?;
    let rowid = tx.last_insert_rowid();
    let mut blob = tx.blob_open(rusqlite::MAIN_DB, "file_chunks", "data", rowid, false)?;
    blob.write_all_at(bytes, 0)?;
    drop(blob);
    tx.commit()?;
    Ok(())
}

/// The stored file `id`, if the board holds it.
fn stored_file(conn: &Connection, id: &str) -> Result<Option<File>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id, name, size, type FROM files WHERE id = ?1")?
        .query_row([id], |row| {
            Ok(File {
                id: row.get(0)?,
                name: row.get(1)?,
                size: row.get::<_, i64>(2)? as u64,
                media_type: row.get(3)?,
            })
        })
        .optional()?)
}

/// Records that message `message` carries `files`.
fn refer(conn: &Connection, message: i64, files: &[File]) -> Result<(), StoreError> {
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO file_refs (file, message) VALUES (?1, ?2)")?;
    for file in files {
        insert.execute(params![file.id, message])?;
    }
    Ok(())
}

/// Removes file `id` when no message carries it; returns the bytes freed.
fn remove_if_unreferenced(conn: &Connection, id: &str) -> Result<u64, StoreError> {
    let carried: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM file_refs WHERE file = ?1)")?
        .query_row([id], |row| row.get(0))?;
    if carried {
        return Ok(0);
    }
    let found: Option<(i64, i64)> = conn
        .prepare_cached("SELECT handle, size FROM files WHERE id = ?1")?
        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((handle, size)) = found else {
        return Ok(0);
    };
    drop_chunks(conn, handle)?;
    conn.prepare_cached("DELETE FROM files WHERE handle = ?1")?
        .execute([handle])?;
    Ok(size as u64)
}

/// Deletes the chunks of file or upload `handle`; returns their bytes.
fn drop_chunks(conn: &Connection, handle: i64) -> Result<u64, StoreError> {
    let bytes: i64 = conn
        .prepare_cached("SELECT coalesce(sum(length(data)), 0) FROM file_chunks WHERE file = ?1")?
        .query_row([handle], |row| row.get(0))?;
    conn.prepare_cached("DELETE FROM file_chunks WHERE file = ?1")?
        .execute([handle])?;
    Ok(bytes as u64)
}

impl FileStore for SqliteLog {
    fn begin_upload(&self, time: i64) -> Result<UploadId, StoreError> {
        let writing = self.writer.lock();
        writing
            .conn
            .prepare_cached(
                "INSERT INTO files (id, name, size, type, time) VALUES (NULL, '', 0, '', ?1)",
            )?
            .execute([time])?;
        Ok(UploadId(writing.conn.last_insert_rowid() as u64))
    }

    fn write_chunk(
        &self,
        upload: UploadId,
        seq: u32,
        bytes: &[u8],
        quota: u64,
    ) -> Result<(), StoreError> {
        let mut writing = self.writer.lock();
        let after = writing.files_bytes.saturating_add(bytes.len() as u64);
        if after > quota {
            return Err(StoreError::FilesFull { quota });
        }
        // No checkpoint inside a chunk's commit: copying the WAL back (and
        // its two disk flushes) would fall on whichever chunk crossed the
        // WAL's bound; `after_upload` does it once the upload is answered.
        writing.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let written = write_chunk_in(&mut writing.conn, upload, seq, bytes);
        writing
            .conn
            .pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
        written?;
        writing.files_bytes = after;
        Ok(())
    }

    fn finish_upload(
        &self,
        upload: UploadId,
        file: &File,
        time: i64,
    ) -> Result<Stored, StoreError> {
        let mut writing = self.writer.lock();
        let tx = writing.conn.transaction()?;
        let stored = if let Some(existing) = stored_file(&tx, &file.id)? {
            let freed = drop_chunks(&tx, upload.0 as i64)?;
            tx.prepare_cached("DELETE FROM files WHERE handle = ?1")?
                .execute([upload.0 as i64])?;
            // Uploaded again for a post to come: its hour starts again.
            tx.prepare_cached(
                "UPDATE files SET time = ?2 WHERE id = ?1
                 AND NOT EXISTS (SELECT 1 FROM file_refs WHERE file = ?1)",
            )?
            .execute(params![file.id, time])?;
            tx.commit()?;
            writing.files_bytes = writing.files_bytes.saturating_sub(freed);
            Stored::Existing(existing)
        } else {
            let named = tx
                .prepare_cached(
                    "UPDATE files SET id = ?2, name = ?3, size = ?4, type = ?5, time = ?6
                     WHERE handle = ?1 AND id IS NULL",
                )?
                .execute(params![
                    upload.0 as i64,
                    file.id,
                    file.name,
                    file.size as i64,
                    file.media_type,
                    time
                ])?;
            if named == 0 {
                return Err(StoreError::Refused("the upload was dropped".into()));
            }
            tx.commit()?;
            Stored::New(file.clone())
        };
        Ok(stored)
    }

    fn abort_upload(&self, upload: UploadId) -> Result<(), StoreError> {
        let mut writing = self.writer.lock();
        let tx = writing.conn.transaction()?;
        let freed = drop_chunks(&tx, upload.0 as i64)?;
        tx.prepare_cached("DELETE FROM files WHERE handle = ?1 AND id IS NULL")?
            .execute([upload.0 as i64])?;
        tx.commit()?;
        writing.files_bytes = writing.files_bytes.saturating_sub(freed);
        Ok(())
    }

    fn file(&self, id: &str) -> Result<Option<File>, StoreError> {
        if self.version < 7 {
            return Ok(None);
        }
        stored_file(&self.reader.lock(), id)
    }

    fn read_chunk(&self, id: &str, seq: u32) -> Result<Option<Vec<u8>>, StoreError> {
        if self.version < 7 {
            return Ok(None);
        }
        Ok(self
            .reader
            .lock()
            .prepare_cached(
                "SELECT c.data FROM files f JOIN file_chunks c ON c.file = f.handle
                 WHERE f.id = ?1 AND c.seq = ?2",
            )?
            .query_row(params![id, seq], |row| row.get(0))
            .optional()?)
    }

    /// Reads the chunk straight from its pages with SQLite's blob I/O, a
    /// piece at a time, so no buffer of a whole chunk is made.
    fn read_pieces(&self, id: &str, seq: u32) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        if self.version < 7 {
            return Ok(None);
        }
        let reader = self.reader.lock();
        let found: Option<(i64, i64)> = reader
            .prepare_cached(
                "SELECT c.rowid, length(c.data) FROM files f JOIN file_chunks c ON c.file = f.handle
                 WHERE f.id = ?1 AND c.seq = ?2",
            )?
            .query_row(params![id, seq], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let Some((rowid, length)) = found else {
            return Ok(None);
        };
        // One read transaction: the chunk cannot go between its pieces.
        let tx = reader.unchecked_transaction()?;
        let blob = tx.blob_open(rusqlite::MAIN_DB, "file_chunks", "data", rowid, true)?;
        let length = length as usize;
        let mut pieces = Vec::with_capacity(length.div_ceil(PIECE_BYTES));
        let mut at = 0;
        while at < length {
            let mut piece = vec![0u8; PIECE_BYTES.min(length - at)];
            blob.read_at_exact(&mut piece, at)?;
            at += piece.len();
            pieces.push(piece);
        }
        drop(blob);
        tx.commit()?;
        Ok(Some(pieces))
    }

    fn remove_orphans(&self, before: i64) -> Result<usize, StoreError> {
        let mut writing = self.writer.lock();
        let tx = writing.conn.transaction()?;
        let gone: Vec<(i64, bool)> = tx
            .prepare_cached(
                "SELECT handle, id IS NOT NULL FROM files f WHERE time < ?1
                 AND NOT EXISTS (SELECT 1 FROM file_refs r WHERE r.file = f.id)",
            )?
            .query_map([before], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut freed = 0;
        for (handle, _) in &gone {
            freed += drop_chunks(&tx, *handle)?;
            tx.prepare_cached("DELETE FROM files WHERE handle = ?1")?
                .execute([handle])?;
        }
        tx.commit()?;
        writing.files_bytes = writing.files_bytes.saturating_sub(freed);
        if !gone.is_empty() {
            // As for deleted messages: the content goes from the WAL too.
            writing.unscrubbed = !scrub_wal(&writing.conn);
        }
        Ok(gone.iter().filter(|(_, finished)| *finished).count())
    }

    fn used_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.writer.lock().files_bytes)
    }

    fn after_upload(&self) -> Result<(), StoreError> {
        let writing = self.writer.lock();
        writing
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// The value of setting `name`, made `fresh` if it has none yet.
fn setting(conn: &Connection, name: &str, fresh: &str) -> Result<String, StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO settings (name, value) VALUES (?1, ?2)",
        params![name, fresh],
    )?;
    Ok(conn.query_row(
        "SELECT value FROM settings WHERE name = ?1",
        [name],
        |row| row.get(0),
    )?)
}

fn rotate(conn: &Connection, fresh: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)",
        params![OPERATOR, fresh],
    )?;
    Ok(())
}

/// The operator secret of the board in the file at `path`, which a running
/// lanboard may be serving (`lanboard operator-link`): made if the board
/// has none, replaced by `fresh` when `rotate`. The running board reads the
/// secret in every commit, so a rotation takes effect at once.
pub fn operator_secret_in(path: &Path, fresh: &str, rotate_it: bool) -> Result<String, StoreError> {
    let conn = match SqliteLog::open(path, Access::Write, SyncMode::Normal) {
        // Nobody serves the board: open it as its writer (creating or
        // upgrading the file as a start would).
        Ok(log) => {
            if rotate_it {
                log.rotate_operator_secret(fresh)?;
            }
            return log.operator_secret(fresh);
        }
        Err(StoreError::Locked { .. }) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?,
        Err(other) => return Err(other),
    };
    // A board is running on the file, so it is a current lanboard database;
    // its writer holds the lock, and SQLite's own locking (waited for here)
    // keeps this one small write apart from its commits.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if rotate_it {
        rotate(&conn, fresh)?;
    }
    setting(&conn, OPERATOR, fresh)
}

/// One commit's work: the ops of a batch applied inside its transaction.
struct Batch<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    time: i64,
    /// Where the search index stands: messages after it are not in it.
    indexed_to: i64,
    /// Posts stored so far in this batch.
    posted: i64,
    /// The last id given out so far.
    last: i64,
    operator: String,
    /// True once an op deleted or replaced text, which the WAL still holds.
    removed_text: bool,
    /// Bytes of the files removed with deleted messages.
    freed: u64,
}

impl Batch<'_> {
    fn apply(&mut self, op: Op) -> Result<Outcome, StoreError> {
        let tx = self.tx;
        let time = self.time;
        if let Op::Post(draft) = op {
            if let Some(cid) = draft.cid() {
                let earlier: Option<i64> = tx
                    .prepare_cached("SELECT id FROM cids WHERE cid = ?1 AND time > ?2")?
                    .query_row(params![cid, time - CID_MEMORY_MS], |row| row.get(0))
                    .optional()?;
                if let Some(id) = earlier {
                    let original = tx
                        .prepare_cached(&format!("SELECT {MESSAGE} FROM messages WHERE id = ?1"))?
                        .query_row([id], read_message)
                        .optional()?;
                    return Ok(match original {
                        Some(message) => Ok(Done::Posted(Appended::Repeat(message))),
                        // The post was deleted: a resend must not bring it back.
                        None => Err(Denied::NotFound),
                    });
                }
            }
            let by_operator = draft
                .key()
                .is_some_and(|key| same_secret(key, &self.operator));
            if let (Some(sender), false) = (draft.sender(), by_operator) {
                let until: Option<i64> = tx
                    .prepare_cached("SELECT until FROM blocks WHERE sender = ?1 AND until > ?2")?
                    .query_row(params![sender, time], |row| row.get(0))
                    .optional()?;
                if let Some(until) = until {
                    return Ok(Err(Denied::Blocked { until }));
                }
            }
            let mut files = Vec::with_capacity(draft.files().len());
            for id in draft.files() {
                match stored_file(tx, id)? {
                    Some(file) => files.push(file),
                    None => return Ok(Err(Denied::UnknownFile { id: id.clone() })),
                }
            }
            self.last += 1;
            tx.prepare_cached(INSERT)?.execute(params![
                self.last,
                draft.name(),
                draft.message(),
                time,
                None::<i64>,
                draft.key_hash(),
                draft.sender(),
                files::to_column(&files)
            ])?;
            refer(tx, self.last, &files)?;
            self.posted += 1;
            if let Some(cid) = draft.cid() {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO cids (cid, id, time) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![cid, self.last, time])?;
            }
            return Ok(Ok(Done::Posted(Appended::New(draft.into_message(
                self.last as u64,
                time,
                files,
            )))));
        }
        let id = op.target().expect("posts are handled above");
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        let found: Option<(Message, Option<String>, Option<String>)> = tx
            .prepare_cached(&format!(
                "SELECT {MESSAGE}, key, sender FROM messages WHERE id = ?1"
            ))?
            .query_row([id], |row| {
                Ok((read_message(row)?, row.get(6)?, row.get(7)?))
            })
            .optional()?;
        let stored = found.as_ref().map(|(_, key, _)| key.as_deref());
        let actor = match judge(&op, stored, &self.operator) {
            Ok(actor) => actor,
            Err(denied) => return Ok(Err(denied)),
        };
        let Some((mut message, _, sender)) = found else {
            unreachable!("judge refuses a message that is not found");
        };
        Ok(match op {
            Op::Edit { message: text, .. } => {
                self.last += 1;
                let indexed = id <= self.indexed_to;
                if indexed {
                    search::remove(tx, id, &message.name, &message.message)?;
                }
                tx.prepare_cached("UPDATE messages SET message = ?2, edited = ?3 WHERE id = ?1")?
                    .execute(params![id, text, time])?;
                if indexed {
                    search::add(tx, id, &message.name, &text)?;
                }
                self.changed(id, false)?;
                message.message = text;
                message.edited = Some(time);
                Ok(Done::Edited {
                    message,
                    change: self.last as u64,
                })
            }
            Op::Delete { .. } => {
                self.last += 1;
                if id <= self.indexed_to {
                    search::remove(tx, id, &message.name, &message.message)?;
                }
                tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                    .execute([id])?;
                for file in &message.files {
                    tx.prepare_cached("DELETE FROM file_refs WHERE file = ?1 AND message = ?2")?
                        .execute(params![file.id, id])?;
                    self.freed += remove_if_unreferenced(tx, &file.id)?;
                }
                self.changed(id, true)?;
                Ok(Done::Deleted {
                    id: id as u64,
                    change: self.last as u64,
                    by: actor,
                })
            }
            Op::Block { minutes, .. } => match sender {
                Some(sender) => {
                    let until = time + minutes as i64 * 60_000;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO blocks (sender, until) VALUES (?1, ?2)",
                    )?
                    .execute(params![sender, until])?;
                    Ok(Done::Blocked {
                        id: id as u64,
                        until,
                    })
                }
                // Imported, or posted before senders were kept.
                None => Err(Denied::NotFound),
            },
            Op::Post(_) => unreachable!("posts are handled above"),
        })
    }

    /// Records change `self.last` as message `id`'s latest.
    fn changed(&mut self, id: i64, deleted: bool) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO changes (id, change, deleted) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, self.last, deleted])?;
        self.removed_text = true;
        Ok(())
    }
}

/// Copies the WAL into the file and truncates it, so text that a commit
/// deleted or replaced (zeroed in the file by `secure_delete`) is not left
/// in older page images in the WAL. False when a reader held it up.
fn scrub_wal(conn: &Connection) -> bool {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(0) => true,
        Ok(_) => {
            log::warn!("a reader held up clearing deleted text out of the WAL; retrying at the next commit");
            false
        }
        Err(error) => {
            log::warn!("could not clear deleted text out of the WAL ({error}); retrying at the next commit");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Draft;

    fn drafts(texts: &[&str]) -> Vec<Draft> {
        texts
            .iter()
            .map(|t| Draft::new("n", t, crate::cli::default_config().session.limits).unwrap())
            .collect()
    }

    fn ids(appended: &[Appended]) -> Vec<u64> {
        appended.iter().map(|a| a.message().id).collect()
    }

    fn open(path: &Path) -> SqliteLog {
        SqliteLog::open(path, Access::Write, SyncMode::Normal).unwrap()
    }

    const KEY: &str = "author-key-0123456789";

    /// Posts `texts` with [`KEY`] in one commit.
    fn post(log: &SqliteLog, texts: &[&str]) -> Vec<u64> {
        let keyed = drafts(texts)
            .into_iter()
            .map(|d| d.with_key(Some(KEY.into())))
            .collect();
        ids(&log.append(keyed, 1).unwrap())
    }

    /// Posts "`word` n" for each n in `numbers`, in one commit.
    fn post_numbered(log: &SqliteLog, word: &str, numbers: std::ops::RangeInclusive<i64>) {
        let texts: Vec<String> = numbers.map(|n| format!("{word} {n}")).collect();
        post(log, &texts.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// The ids a search for `q` finds, newest first, all pages.
    fn search(log: &SqliteLog, q: &str) -> Vec<u64> {
        let query = Query::parse(q).unwrap();
        let found = log.search(&query, u64::MAX, 100).unwrap();
        assert!(!found.more);
        found.hits.iter().map(|hit| hit.message.id).collect()
    }

    fn indexed_to(log: &SqliteLog) -> i64 {
        search::indexed_to(&log.reader.lock()).unwrap()
    }

    /// Runs the writer's housekeeping as it would while idle.
    fn tidy_until_done(log: &SqliteLog) {
        loop {
            match log.tidy().unwrap() {
                Tidy::Done => return,
                Tidy::More => {}
                Tidy::After(wait) => std::thread::sleep(wait),
            }
        }
    }

    #[test]
    fn a_post_is_found_while_it_waits_for_the_index_and_after_it_joins() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir.path().join("b.db"));
        assert_eq!(post(&log, &["lunch at noon", "coffee at ten"]), [1, 2]);
        assert_eq!(indexed_to(&log), 0, "a small backlog waits");
        assert_eq!(search(&log, "lunch"), [1]);
        assert_eq!(search(&log, "at"), [2, 1]);
        assert!(
            matches!(log.tidy().unwrap(), Tidy::After(wait) if wait <= BACKLOG_WAIT),
            "the writer waits before it indexes a small backlog"
        );
        tidy_until_done(&log);
        assert_eq!(indexed_to(&log), 2, "the idle writer indexed it");
        assert_eq!(search(&log, "lunch"), [1]);
        assert_eq!(search(&log, "at"), [2, 1]);
    }

    #[test]
    fn the_commit_that_takes_the_backlog_past_its_bound_indexes_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir.path().join("b.db"));
        post_numbered(&log, "note", 1..=10);
        assert_eq!(indexed_to(&log), 0);
        post_numbered(&log, "note", 11..=BACKLOG_MOST);
        assert_eq!(indexed_to(&log), BACKLOG_MOST);
        assert_eq!(search(&log, "4095"), [4095]);
    }

    #[test]
    fn a_step_of_backlog_is_indexed_by_the_next_tidy_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir.path().join("b.db"));
        post_numbered(&log, "note", 1..=BACKLOG_STEP);
        assert_eq!(log.tidy().unwrap(), Tidy::More);
        assert_eq!(indexed_to(&log), BACKLOG_STEP);
    }

    #[test]
    fn pages_run_from_the_backlog_into_the_index_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir.path().join("b.db"));
        post_numbered(&log, "item", 1..=BACKLOG_MOST);
        post_numbered(&log, "item", BACKLOG_MOST + 1..=BACKLOG_MOST + 20);
        assert_eq!(indexed_to(&log), BACKLOG_MOST, "20 wait in the backlog");
        let query = Query::parse("item").unwrap();
        for limit in [1, 7, 20, 21, 100] {
            let (mut seen, mut before) = (Vec::new(), u64::MAX);
            loop {
                let found = log.search(&query, before, limit).unwrap();
                seen.extend(found.hits.iter().map(|hit| hit.message.id));
                if !found.more {
                    break;
                }
                before = *seen.last().unwrap();
            }
            let all: Vec<u64> = (1..=BACKLOG_MOST as u64 + 20).rev().collect();
            assert_eq!(seen, all, "pages of {limit}");
        }
    }

    #[test]
    fn edits_and_deletions_are_searched_right_in_the_index_and_in_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir.path().join("b.db"));
        post(&log, &["alpha one", "alpha two"]);
        tidy_until_done(&log);
        post(&log, &["alpha three", "alpha four"]);
        assert_eq!(indexed_to(&log), 2);
        let edit = |id, text: &str| Op::Edit {
            id,
            message: text.into(),
            key: KEY.into(),
        };
        let delete = |id| Op::Delete {
            id,
            key: KEY.into(),
        };
        let outcomes = log
            .commit(
                vec![
                    edit(1, "beta one"),
                    delete(2),
                    edit(3, "beta three"),
                    delete(4),
                ],
                2,
            )
            .unwrap();
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(search(&log, "alpha"), [] as [u64; 0]);
        assert_eq!(search(&log, "beta"), [3, 1]);
        tidy_until_done(&log);
        assert_eq!(indexed_to(&log), 3);
        assert_eq!(search(&log, "alpha"), [] as [u64; 0]);
        assert_eq!(search(&log, "beta"), [3, 1]);
    }

    #[test]
    fn a_backlog_left_by_a_stop_is_found_after_a_restart_and_then_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let log = open(&path);
        post(&log, &["kept for later"]);
        drop(log);
        let log = open(&path);
        assert_eq!(indexed_to(&log), 0);
        assert_eq!(search(&log, "later"), [1]);
        tidy_until_done(&log);
        assert_eq!(indexed_to(&log), 1);
        assert_eq!(search(&log, "later"), [1]);
    }

    #[test]
    fn a_version_5_file_keeps_its_index_and_records_it_as_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        let log = open(&path);
        post(&log, &["from version five", "and another"]);
        tidy_until_done(&log);
        drop(log);
        // What version 5 wrote: the same file without search_progress
        // and files.
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "DROP TABLE search_progress; {DROP_FILES} PRAGMA user_version = 5;"
            ))
            .unwrap();
        let log = open(&path);
        assert_eq!(schema_version(&log), SCHEMA_VERSION);
        assert_eq!(indexed_to(&log), 2);
        assert_eq!(search(&log, "five"), [1]);
    }

    /// What version 7 added, undone.
    const DROP_FILES: &str = "DROP TABLE files; DROP TABLE file_chunks; DROP TABLE file_refs;
        ALTER TABLE messages DROP COLUMN files;";

    #[test]
    fn a_version_6_file_gains_files_and_keeps_its_messages_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        let log = open(&path);
        post(&log, &["from version six"]);
        tidy_until_done(&log);
        drop(log);
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!("{DROP_FILES} PRAGMA user_version = 6;"))
            .unwrap();
        let log = open(&path);
        assert_eq!(schema_version(&log), SCHEMA_VERSION);
        assert_eq!(search(&log, "six"), [1]);
        let messages = log.after(0, 10).unwrap();
        assert_eq!(messages[0].message, "from version six");
        assert!(messages[0].files.is_empty());
        let upload = log.begin_upload(1).unwrap();
        log.write_chunk(upload, 0, b"now with files", u64::MAX)
            .unwrap();
        let file = File {
            id: crate::protocol::hex(
                ring::digest::digest(&ring::digest::SHA256, b"now with files").as_ref(),
            ),
            name: "f.txt".into(),
            size: 14,
            media_type: "text/plain".into(),
        };
        assert_eq!(
            log.finish_upload(upload, &file, 2).unwrap(),
            Stored::New(file.clone())
        );
        assert_eq!(
            log.read_chunk(&file.id, 0).unwrap().unwrap(),
            b"now with files"
        );
    }

    #[test]
    fn a_second_writer_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let _first = open(&path);
        let second = SqliteLog::open(&path, Access::Write, SyncMode::Normal);
        assert!(matches!(second, Err(StoreError::Locked { .. })));
        // A reader (export) is still welcome.
        assert!(SqliteLog::open(&path, Access::Read, SyncMode::Normal).is_ok());
    }

    #[test]
    fn a_file_that_is_not_a_lanboard_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello, this is not sqlite at all, just some text").unwrap();
        assert!(matches!(
            SqliteLog::open(&text, Access::Write, SyncMode::Normal),
            Err(StoreError::NotLanboard { .. })
        ));
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        assert!(matches!(
            SqliteLog::open(&other, Access::Write, SyncMode::Normal),
            Err(StoreError::NotLanboard { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(&text).unwrap().len(),
            48,
            "left untouched"
        );
    }

    /// Writes a lanboard file as schema `version` wrote it: the messages
    /// table, `tables` of that version, and one message "from version N".
    fn write_old_file(path: &Path, version: i64, tables: &str) {
        Connection::open(path)
            .unwrap()
            .execute_batch(&format!(
                "CREATE TABLE messages (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                     message TEXT NOT NULL, time INTEGER NOT NULL);
                 {tables}
                 INSERT INTO messages VALUES (1, 'ada', 'from version {version}', 5);
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {version};"
            ))
            .unwrap();
    }

    fn schema_version(log: &SqliteLog) -> i64 {
        log.reader
            .lock()
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_version_1_file_is_upgraded_and_keeps_its_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        write_old_file(&path, 1, "");
        let log = open(&path);
        assert_eq!(log.after(0, 10).unwrap()[0].message, "from version 1");
        let cid = |text| {
            vec![
                Draft::new("n", text, crate::cli::default_config().session.limits)
                    .unwrap()
                    .with_cid(Some("c1".into())),
            ]
        };
        assert_eq!(ids(&log.append(cid("new"), 6).unwrap()), [2]);
        assert!(matches!(
            log.append(cid("new"), 7).unwrap()[0],
            Appended::Repeat(_)
        ));
        assert_eq!(schema_version(&log), SCHEMA_VERSION);
    }

    #[test]
    fn a_version_2_file_is_upgraded_and_keeps_its_messages_and_then_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        write_old_file(&path, 2, CREATE_CIDS);
        let log = open(&path);
        assert_eq!(log.after(0, 10).unwrap()[0].message, "from version 2");
        assert_eq!(log.shared_secret("first").unwrap(), "first");
        drop(log);
        let log = open(&path);
        assert_eq!(schema_version(&log), SCHEMA_VERSION);
        assert_eq!(log.shared_secret("second").unwrap(), "first");
    }

    #[test]
    fn the_secret_is_made_once_and_kept_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let log = open(&path);
        assert_eq!(
            log.shared_secret("made at first start").unwrap(),
            "made at first start"
        );
        assert_eq!(log.shared_secret("another").unwrap(), "made at first start");
        drop(log);
        assert_eq!(
            open(&path).shared_secret("after a restart").unwrap(),
            "made at first start"
        );
    }

    #[test]
    fn import_keeps_ids_and_only_fills_an_empty_board() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir.path().join("b.db"));
        let exported = vec![
            drafts(&["a"]).remove(0).into_message(3, 7, Vec::new()),
            drafts(&["b"]).remove(0).into_message(40, 8, Vec::new()),
        ];
        assert_eq!(log.import(&exported).unwrap(), 2);
        assert_eq!(log.after(0, 10).unwrap(), exported);
        assert_eq!(ids(&log.append(drafts(&["c"]), 9).unwrap()), [41]);
        assert!(matches!(log.import(&exported), Err(StoreError::NotEmpty)));
    }
}
