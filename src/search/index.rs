//! [`Index`]: a search index of its own, for a board whose messages are
//! not in a SQLite file of this process: a Redis board (each node keeps
//! one, filled from the stream) or a memory board.
//!
//! It is a SQLite database holding the messages in their current form and
//! the FTS5 index over them (see the module above), plus how far into the
//! board's order it is (`position`) and which of the board's histories
//! (`epoch`) that is. By default the database is SQLite's private temporary
//! file, removed as it is opened, so the copy of the board is gone with the
//! process however it ends; `--search-index PATH` keeps it in a file
//! instead, so a restarted node only reads what it missed.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::{Found, Query, CREATE_INDEX};
use crate::store::{Event, StoreError};

/// "LNBS": marks a SQLite file as a lanboard search index.
const APPLICATION_ID: i64 = 0x4c4e_4253;
const SCHEMA_VERSION: i64 = 1;

/// A search index kept beside the board's own store.
pub struct Index {
    conn: Mutex<Connection>,
    /// Set when the file was opened from `--search-index`.
    kept: bool,
}

impl Index {
    /// An index in SQLite's private temporary file, gone when this process is.
    pub fn temporary() -> Result<Index, StoreError> {
        let conn = Connection::open("")?;
        // The file goes with the process, so there is nothing to recover
        // after a crash: the rollback journal stays in memory and nothing is
        // synced. Otherwise every commit (one per batch of posts) would
        // write, sync and truncate a journal file, which cost a --memory
        // board with one post in flight half of its posts per second.
        conn.execute_batch("PRAGMA journal_mode=MEMORY; PRAGMA synchronous=OFF;")?;
        Index::new(conn, false)
    }

    /// The index kept in the file at `path`, made there if there is none.
    /// A file that is not a lanboard search index is refused.
    pub fn open(path: &Path) -> Result<Index, StoreError> {
        let conn = Connection::open(path)?;
        let id: i64 = conn
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) => StoreError::NotLanboard {
                    path: path.to_path_buf(),
                },
                _ => e.into(),
            })?;
        let tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
        if (id != APPLICATION_ID && (id != 0 || tables != 0))
            || conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))?
                > SCHEMA_VERSION
        {
            return Err(StoreError::NotLanboard {
                path: path.to_path_buf(),
            });
        }
        // A copy that can always be made again: a commit only needs to
        // reach the OS, not the disk.
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
        Index::new(conn, true)
    }

    fn new(conn: Connection, kept: bool) -> Result<Index, StoreError> {
        conn.execute_batch("PRAGMA secure_delete=ON")?;
        let made: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'messages'",
            [],
            |row| row.get(0),
        )?;
        if made == 0 {
            conn.execute_batch(&format!(
                "BEGIN;
                 CREATE TABLE messages (
                     id INTEGER PRIMARY KEY,
                     name TEXT NOT NULL,
                     message TEXT NOT NULL,
                     time INTEGER NOT NULL,
                     edited INTEGER
                 );
                 CREATE TABLE state (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                 {CREATE_INDEX}
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {SCHEMA_VERSION};
                 COMMIT;"
            ))?;
        }
        Ok(Index {
            conn: Mutex::new(conn),
            kept,
        })
    }

    /// True when the index is kept in a file across restarts.
    pub fn is_kept(&self) -> bool {
        self.kept
    }

    /// How far into the board's order the index is, and for which epoch.
    pub fn position(&self) -> Result<(u64, Option<String>), StoreError> {
        let conn = self.conn.lock();
        let read = |name: &str| -> Result<Option<String>, StoreError> {
            Ok(conn
                .query_row("SELECT value FROM state WHERE name = ?1", [name], |row| {
                    row.get(0)
                })
                .optional()?)
        };
        let position = read("position")?.and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok((position, read("epoch")?))
    }

    /// Forgets every message: the board began anew as `epoch`.
    pub fn start_over(&self, epoch: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM messages", [])?;
        tx.execute(
            "INSERT INTO search_index (search_index) VALUES ('delete-all')",
            [],
        )?;
        set_state(&tx, "position", "0")?;
        set_state(&tx, "epoch", epoch)?;
        tx.commit()?;
        scrub(&conn);
        Ok(())
    }

    /// Applies the board's events, in order, up to `position`, in one
    /// transaction. Applying an event again does no harm: a post or edit
    /// replaces the message with its current form, a deletion removes it.
    pub fn apply(&self, events: &[Event], position: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut removed = false;
        for event in events {
            match event {
                Event::Posted(message) | Event::Edited { message, .. } => {
                    let id = message.id as i64;
                    removed |= forget(&tx, id)?;
                    tx.prepare_cached(
                        "INSERT INTO messages (id, name, message, time, edited)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        id,
                        message.name,
                        message.message,
                        message.time,
                        message.edited
                    ])?;
                    super::add(&tx, id, &message.name, &message.message)?;
                }
                Event::Deleted { id, .. } => {
                    removed |= forget(&tx, *id as i64)?;
                }
            }
        }
        set_state(&tx, "position", &position.to_string())?;
        tx.commit()?;
        if removed && self.kept {
            scrub(&conn);
        }
        Ok(())
    }

    /// See [`super::find`].
    pub fn find(&self, query: &Query, before: u64, limit: usize) -> Result<Found, StoreError> {
        Ok(super::find(&self.conn.lock(), query, before, limit)?)
    }
}

/// Removes message `id` and its words, if the index has it; true if it had.
fn forget(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    let held: Option<(String, String)> = conn
        .prepare_cached("SELECT name, message FROM messages WHERE id = ?1")?
        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((name, message)) = held else {
        return Ok(false);
    };
    super::remove(conn, id, &name, &message)?;
    conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?
        .execute([id])?;
    Ok(true)
}

fn set_state(conn: &Connection, name: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR REPLACE INTO state (name, value) VALUES (?1, ?2)")?
        .execute(params![name, value])?;
    Ok(())
}

/// Clears removed text out of a kept file's WAL, as the SQLite store does
/// (`secure_delete` has zeroed it in the file itself).
fn scrub(conn: &Connection) {
    if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        log::warn!("could not clear removed text out of the search index's WAL: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_index_keeps_its_journal_in_memory_and_still_commits() {
        let index = Index::temporary().expect("a temporary index");
        let mode: String = index
            .conn
            .lock()
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("the journal mode");
        assert_eq!(mode, "memory");
        index.apply(&[], 7).expect("an empty batch commits");
        assert_eq!(index.position().expect("the position").0, 7);
    }
}
