//! [`SqliteLog`]: the board's history in one SQLite file.
//!
//! SQLite runs in WAL mode with one connection for the writer and one for
//! readers, so reading history never waits for a commit.
//!
//! Schema version 3 (`PRAGMA user_version = 3`), tagged with
//! `PRAGMA application_id` so that a foreign database is refused:
//! `messages(id INTEGER PRIMARY KEY, name TEXT, message TEXT, time INTEGER)`,
//! `cids(cid TEXT PRIMARY KEY, id INTEGER, time INTEGER)`, the clients'
//! ids of the last day's posts, and `settings(name TEXT PRIMARY KEY, value
//! TEXT)`, which keeps the login cookie's `secret` across restarts. Versions
//! 1 (no `cids`) and 2 (no `settings`) are upgraded in place on open.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{check_import_order, Appended, Log, StoreError, CID_MEMORY_MS, CID_PRUNE_EVERY_MS};
use crate::protocol::{Draft, Message};

/// "LNBD": marks a SQLite file as a lanboard database.
const APPLICATION_ID: i64 = 0x4c4e_4244;
const SCHEMA_VERSION: i64 = 3;

/// History in one SQLite file.
pub struct SqliteLog {
    path: PathBuf,
    writer: Mutex<Writing>,
    reader: Mutex<Connection>,
    /// Held for the life of the log so a second lanboard on the same file is
    /// refused instead of interleaving ids with ours. An OS file lock is used
    /// rather than SQLite's exclusive locking mode, which would also lock out
    /// our own reader connection and `lanboard export`.
    _lock: Option<File>,
}

/// The writer's connection, and when it last forgot old cids.
struct Writing {
    conn: Connection,
    cids_pruned_at: i64,
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
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Ok(SqliteLog {
            path,
            writer: Mutex::new(Writing {
                conn: writer,
                cids_pruned_at: 0,
            }),
            reader: Mutex::new(reader),
            _lock: lock,
        })
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
    // Migrations from older schema versions, every step in one transaction.
    // A reader (export) needs none of them: it only reads `messages`.
    if access == Access::Write && (1..SCHEMA_VERSION).contains(&version) {
        let cids = if version < 2 { CREATE_CIDS } else { "" };
        conn.execute_batch(&format!(
            "BEGIN; {cids} {CREATE_SETTINGS} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
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

const CREATE_CIDS: &str = "CREATE TABLE cids (
    cid TEXT PRIMARY KEY,
    id INTEGER NOT NULL,
    time INTEGER NOT NULL
) WITHOUT ROWID;";

const CREATE_SETTINGS: &str = "CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;";

/// The `settings` row that keys the login cookie.
const SECRET: &str = "secret";

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
    fn append(&self, drafts: Vec<Draft>, time: i64) -> Result<Vec<Appended>, StoreError> {
        let mut writing = self.writer.lock();
        let prune = time - writing.cids_pruned_at > CID_PRUNE_EVERY_MS;
        let tx = writing
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if prune {
            tx.execute("DELETE FROM cids WHERE time <= ?1", [time - CID_MEMORY_MS])?;
        }
        let mut last: i64 =
            tx.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |row| {
                row.get(0)
            })?;
        let mut appended = Vec::with_capacity(drafts.len());
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            let mut remember = tx.prepare_cached(
                "INSERT OR REPLACE INTO cids (cid, id, time) VALUES (?1, ?2, ?3)",
            )?;
            let mut original = tx.prepare_cached(
                "SELECT m.id, m.name, m.message, m.time FROM cids c JOIN messages m ON m.id = c.id
                 WHERE c.cid = ?1 AND c.time > ?2",
            )?;
            for draft in drafts {
                if let Some(cid) = draft.cid() {
                    let earlier = original
                        .query_row(params![cid, time - CID_MEMORY_MS], read_message)
                        .optional()?;
                    if let Some(message) = earlier {
                        appended.push(Appended::Repeat(message));
                        continue;
                    }
                }
                last += 1;
                insert.execute(params![last, draft.name(), draft.message(), time])?;
                if let Some(cid) = draft.cid() {
                    remember.execute(params![cid, last, time])?;
                }
                appended.push(Appended::New(draft.into_message(last as u64, time)));
            }
        }
        tx.commit()?;
        if prune {
            writing.cids_pruned_at = time;
        }
        Ok(appended)
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

    fn import(&self, messages: &[Message]) -> Result<usize, StoreError> {
        check_import_order(messages)?;
        if self.last_id()? != 0 {
            return Err(StoreError::NotEmpty);
        }
        let mut writing = self.writer.lock();
        let tx = writing.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for m in messages {
                insert.execute(params![m.id as i64, m.name, m.message, m.time])?;
            }
        }
        tx.commit()?;
        Ok(messages.len())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// Kept in the file, so a login survives a restart of the board.
    fn shared_secret(&self, fresh: &str) -> Result<String, StoreError> {
        let writing = self.writer.lock();
        writing.conn.execute(
            "INSERT OR IGNORE INTO settings (name, value) VALUES (?1, ?2)",
            params![SECRET, fresh],
        )?;
        Ok(writing.conn.query_row(
            "SELECT value FROM settings WHERE name = ?1",
            [SECRET],
            |row| row.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            drafts(&["a"]).remove(0).into_message(3, 7),
            drafts(&["b"]).remove(0).into_message(40, 8),
        ];
        assert_eq!(log.import(&exported).unwrap(), 2);
        assert_eq!(log.after(0, 10).unwrap(), exported);
        assert_eq!(ids(&log.append(drafts(&["c"]), 9).unwrap()), [41]);
        assert!(matches!(log.import(&exported), Err(StoreError::NotEmpty)));
    }
}
