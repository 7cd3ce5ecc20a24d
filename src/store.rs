//! The board's history: a durable, totally ordered log of messages.
//!
//! [`Log`] is the seam between the board and where its history lives. Two
//! logs implement it: [`SqliteLog`], one SQLite file (the default,
//! `lanboard.db` in the working directory, or `--data PATH`), and
//! [`MemoryLog`] (`--memory`), which forgets everything on exit as the
//! original board did.
//!
//! Threading: every method blocks. The board calls `append` only from its
//! single writer thread (see `writer.rs`) and the read methods from actix's
//! blocking pool, never on an async worker. SQLite runs in WAL mode with one
//! connection for the writer and one for readers, so reading history never
//! waits for a commit.
//!
//! Schema version 1 (`PRAGMA user_version = 1`), tagged with
//! `PRAGMA application_id` so that a foreign database is refused:
//! `messages(id INTEGER PRIMARY KEY, name TEXT, message TEXT, time INTEGER)`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use rusqlite::{params, Connection, OpenFlags};

use crate::protocol::{Draft, Message};

/// The durable, totally ordered history of one board.
pub trait Log: Send + Sync + 'static {
    /// Stores the drafts in order, giving them the next ids, all or none. When
    /// this returns, the messages survive a crash of the process.
    fn append(&self, drafts: Vec<Draft>, time: i64) -> Result<Vec<Message>, StoreError>;
    /// Up to `limit` messages with an id larger than `id`, oldest first.
    fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The (up to) `limit` newest messages with an id smaller than `id`, oldest first.
    fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError>;
    /// The id of the newest message, 0 for an empty board.
    fn last_id(&self) -> Result<u64, StoreError>;
    /// Where the history lives, for the startup banner.
    fn describe(&self) -> String;
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
}

/// "LNBD": marks a SQLite file as a lanboard database.
const APPLICATION_ID: i64 = 0x4c4e_4244;
const SCHEMA_VERSION: i64 = 1;

/// History in one SQLite file.
pub struct SqliteLog {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    /// Held for the life of the log so a second lanboard on the same file is
    /// refused instead of interleaving ids with ours. An OS file lock is used
    /// rather than SQLite's exclusive locking mode, which would also lock out
    /// our own reader connection and `lanboard export`.
    _lock: Option<File>,
}

/// How long a commit waits for the disk (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncMode {
    /// A commit is written to the OS before anyone hears of the message: it
    /// survives a crash or `kill -9` of lanboard, but the last commits before a
    /// power cut or OS crash may be lost (the file itself never corrupts).
    #[default]
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
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Ok(SqliteLog {
            path,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            _lock: lock,
        })
    }

    /// Loads exported messages, keeping their ids and times, into an empty board.
    pub fn import(&self, messages: &[Message]) -> Result<usize, StoreError> {
        if self.last_id()? != 0 {
            return Err(StoreError::NotEmpty);
        }
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
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for m in messages {
                insert.execute(params![m.id as i64, m.name, m.message, m.time])?;
            }
        }
        tx.commit()?;
        Ok(messages.len())
    }

    /// Every message, oldest first, handed to `each` one at a time so a large
    /// board is exported without holding it all in memory.
    pub fn for_each(
        &self,
        mut each: impl FnMut(Message) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let conn = self.reader.lock();
        let mut select =
            conn.prepare("SELECT id, name, message, time FROM messages ORDER BY id")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            each(read_message(row)?).map_err(|source| StoreError::Io {
                path: PathBuf::from("<stdout>"),
                source,
            })?;
        }
        Ok(())
    }
}

const INSERT: &str = "INSERT INTO messages (id, name, message, time) VALUES (?1, ?2, ?3, ?4)";

fn take_lock(path: &Path) -> Result<File, StoreError> {
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
    // Migrations from older schema versions go here, one step at a time.
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
        // flush) run on the writer thread between commits; every 8,000
        // pages instead of SQLite's 1,000 makes them rarer on a busy board,
        // for a WAL file of at most about 32 MiB.
        conn.execute_batch("PRAGMA wal_autocheckpoint=8000")?;
        if conn.is_readonly("main")? {
            return Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
                reason: "the file or its folder is read-only".into(),
            });
        }
    }
    Ok(())
}

fn create_schema(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let result = conn.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE messages (
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             message TEXT NOT NULL,
             time INTEGER NOT NULL
         );
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
    fn append(&self, drafts: Vec<Draft>, time: i64) -> Result<Vec<Message>, StoreError> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |row| {
            row.get(0)
        })?;
        let mut stored = Vec::with_capacity(drafts.len());
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for (draft, id) in drafts.into_iter().zip(last as u64 + 1..) {
                insert.execute(params![id as i64, draft.name(), draft.message(), time])?;
                stored.push(draft.into_message(id, time));
            }
        }
        tx.commit()?;
        Ok(stored)
    }

    fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        collect(
            &self.reader.lock(),
            "SELECT id, name, message, time FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
            id,
            limit,
        )
    }

    fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let mut messages = collect(
            &self.reader.lock(),
            "SELECT id, name, message, time FROM messages WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            id,
            limit,
        )?;
        messages.reverse();
        Ok(messages)
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        let conn = self.reader.lock();
        let last: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |row| {
            row.get(0)
        })?;
        Ok(last as u64)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// History in memory only, lost on exit (`--memory`).
#[derive(Default)]
pub struct MemoryLog {
    messages: RwLock<Vec<Message>>,
}

impl Log for MemoryLog {
    fn append(&self, drafts: Vec<Draft>, time: i64) -> Result<Vec<Message>, StoreError> {
        let mut messages = self.messages.write();
        let last = messages.last().map_or(0, |m| m.id);
        let stored: Vec<Message> = drafts
            .into_iter()
            .zip(last + 1..)
            .map(|(draft, id)| draft.into_message(id, time))
            .collect();
        messages.extend(stored.iter().cloned());
        Ok(stored)
    }

    fn after(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let messages = self.messages.read();
        let start = messages.partition_point(|m| m.id <= id);
        Ok(messages[start..].iter().take(limit).cloned().collect())
    }

    fn before(&self, id: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let messages = self.messages.read();
        let end = messages.partition_point(|m| m.id < id);
        Ok(messages[end.saturating_sub(limit)..end].to_vec())
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        Ok(self.messages.read().last().map_or(0, |m| m.id))
    }

    fn describe(&self) -> String {
        "memory only (lost when lanboard stops)".into()
    }
}

#[cfg(test)]
mod tests {
    //! One conformance suite, run against every [`Log`].
    use super::*;
    use crate::protocol::Limits;

    fn drafts(texts: &[&str]) -> Vec<Draft> {
        texts
            .iter()
            .map(|t| Draft::new("n", t, Limits::default()).unwrap())
            .collect()
    }

    fn ids(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.id).collect()
    }

    fn conformance(log: &dyn Log) {
        assert_eq!(log.last_id().unwrap(), 0);
        let first = log.append(drafts(&["a", "b", "c"]), 10).unwrap();
        assert_eq!(ids(&first), [1, 2, 3]);
        let second = log.append(drafts(&["d", "e"]), 11).unwrap();
        assert_eq!(ids(&second), [4, 5], "ids strictly increase across appends");
        assert_eq!(second[1].message, "e");
        assert_eq!(log.last_id().unwrap(), 5);
        assert_eq!(ids(&log.after(0, 100).unwrap()), [1, 2, 3, 4, 5]);
        assert_eq!(ids(&log.after(2, 2).unwrap()), [3, 4]);
        assert_eq!(ids(&log.after(5, 10).unwrap()), Vec::<u64>::new());
        assert_eq!(ids(&log.before(5, 2).unwrap()), [3, 4]);
        assert_eq!(ids(&log.before(u64::MAX, 3).unwrap()), [3, 4, 5]);
        assert_eq!(ids(&log.before(1, 10).unwrap()), Vec::<u64>::new());
        assert_eq!(log.before(3, 10).unwrap(), first[..2].to_vec());
    }

    #[test]
    fn memory_log_conforms() {
        conformance(&MemoryLog::default());
    }

    #[test]
    fn sqlite_log_conforms() {
        let dir = tempfile::tempdir().unwrap();
        conformance(
            &SqliteLog::open(&dir.path().join("b.db"), Access::Write, SyncMode::Normal).unwrap(),
        );
    }

    #[test]
    fn sqlite_log_keeps_everything_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let written = SqliteLog::open(&path, Access::Write, SyncMode::Normal)
            .unwrap()
            .append(drafts(&["x", "y"]), 1)
            .unwrap();
        let log = SqliteLog::open(&path, Access::Write, SyncMode::Normal).unwrap();
        assert_eq!(log.after(0, 10).unwrap(), written);
        assert_eq!(ids(&log.append(drafts(&["z"]), 2).unwrap()), [3]);
    }

    #[test]
    fn a_second_writer_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let _first = SqliteLog::open(&path, Access::Write, SyncMode::Normal).unwrap();
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

    #[test]
    fn import_keeps_ids_and_only_fills_an_empty_board() {
        let dir = tempfile::tempdir().unwrap();
        let source = MemoryLog::default();
        source.append(drafts(&["a", "b"]), 7).unwrap();
        let mut exported = source.after(0, 10).unwrap();
        exported[1].id = 40;
        let log =
            SqliteLog::open(&dir.path().join("b.db"), Access::Write, SyncMode::Normal).unwrap();
        assert_eq!(log.import(&exported).unwrap(), 2);
        assert_eq!(log.after(0, 10).unwrap(), exported);
        assert_eq!(ids(&log.append(drafts(&["c"]), 8).unwrap()), [41]);
        assert!(matches!(log.import(&exported), Err(StoreError::NotEmpty)));
    }
}
