//! Full-text search over a board's whole history.
//!
//! Every store searches the same way: an FTS5 index (`search_index`) over
//! the `name` and `message` columns of a `messages(id, name, message, time,
//! edited)` table, written by [`add`] and [`remove`] in the same transaction
//! as each write to a message. Where that table lives differs:
//! - a SQLite board's own file: the index is written in the same
//!   transaction as every edit and deletion, and takes in new posts a few
//!   hundred at a time ([`catch_up`]); the posts it has not taken in yet
//!   (the backlog) are searched by indexing them for that one query
//!   ([`find_with_backlog`]), so a search never disagrees with the messages;
//! - a Redis board: every node keeps an [`Index`] of its own, a SQLite file
//!   filled from the stream and kept current by reading it (`index.rs`);
//! - a memory board: an [`Index`] in memory, written with every commit.
//!
//! Words are split and compared by FTS5's `unicode61` tokenizer with
//! diacritics removed: case- and accent-insensitive, punctuation and
//! symbols separate words. The index runs with FTS5's `secure-delete`, so a
//! deleted or edited message's old words leave the index's pages instead
//! of waiting there for a merge; with SQLite's own `secure_delete` those
//! pages are zeroed.
//!
//! Highlights come from FTS5's `highlight()`, with two control characters
//! (which posts and edits never hold: `protocol` strips them) as marks,
//! turned into character offsets: the server never makes HTML.

mod index;
mod query;

pub use index::Index;
pub use query::{Query, QueryError, MAX_QUERY_CHARS, MAX_TERMS};

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::protocol::Message;

/// How every index splits and folds words, and its prefix indexes.
///
/// Prefix indexes of the first 1, 2 and 3 characters make the word being
/// typed one lookup even when it starts many common words (`the` is the
/// start of `then`, `there`, `these`...: without them a query ending in it
/// merges all their lists, 90 ms at a million messages); a fourth one cost
/// more on every post than it saved.
macro_rules! words {
    () => {
        "
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '1 2 3'"
    };
}

/// The index over an existing `messages` table. Made empty: [`fill`] puts
/// the existing messages in; from then on [`add`] and [`remove`] keep it
/// (or, on a SQLite board, [`catch_up`] for posts). Not triggers: each
/// statement a trigger runs is a savepoint, at which FTS5 writes out what it
/// gathered, which makes indexing three times slower.
///
/// Each commit that writes the index writes a small segment of it; merging
/// 16 of them at a time rather than FTS5's 4 halves what indexing costs. A
/// SQLite board's writer does not merge in its commits at all
/// ([`MERGE_WHEN_IDLE`]), but between them.
pub const CREATE_INDEX: &str = concat!(
    "
CREATE VIRTUAL TABLE search_index USING fts5(
    name, message,
    content = 'messages', content_rowid = 'id',",
    words!(),
    ");
INSERT INTO search_index (search_index, rank) VALUES ('secure-delete', 1);
INSERT INTO search_index (search_index, rank) VALUES ('automerge', 16);"
);

/// For an index whose writer merges while it is idle ([`merge_some`]): no
/// merging inside commits, 16 segments merged at a time when idle too
/// (rather than the `merge` command's 4), and FTS5's own merge inside a
/// commit (at `crisismerge` segments on one level) put off to 64, which
/// the idle merging keeps the index from reaching unless posts never pause.
pub const MERGE_WHEN_IDLE: &str =
    "INSERT INTO search_index (search_index, rank) VALUES ('automerge', 0);
INSERT INTO search_index (search_index, rank) VALUES ('usermerge', 16);
INSERT INTO search_index (search_index, rank) VALUES ('crisismerge', 64);";

/// A SQLite board's record of how far its index has come: every message
/// with an id up to `indexed_to` is in the index, in its current form, and
/// none after it is. Those after it are the backlog.
///
/// Why a backlog: each commit that writes the index also writes a new
/// segment of it, and merging those segments is most of what indexing
/// costs. Taking posts in a few hundred at a time ([`catch_up`]) instead of
/// in every commit of a busy board's writer costs a third as much, and a
/// busy board's writer shares its core with the fan-out.
pub const CREATE_PROGRESS: &str = "CREATE TABLE search_progress (indexed_to INTEGER NOT NULL);";

/// Where [`search_progress`](CREATE_PROGRESS) stands.
pub fn indexed_to(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT indexed_to FROM search_progress")?
        .query_row([], |row| row.get(0))
}

/// What [`catch_up`] did: how far the index now goes (unchanged when the
/// backlog was empty), and how many messages it indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaughtUp {
    pub indexed_to: i64,
    pub indexed: i64,
}

/// Indexes up to `most` messages of the backlog, those with ids after
/// `after` (where the index stands), oldest first, and records how far the
/// index now goes.
pub fn catch_up(conn: &Connection, after: i64, most: i64) -> rusqlite::Result<CaughtUp> {
    let upto: Option<i64> = conn
        .prepare_cached(
            "SELECT max(id) FROM (SELECT id FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2)",
        )?
        .query_row(params![after, most], |row| row.get(0))?;
    let Some(upto) = upto else {
        return Ok(CaughtUp {
            indexed_to: after,
            indexed: 0,
        });
    };
    let indexed = conn
        .prepare_cached(
            "INSERT INTO search_index (rowid, name, message)
             SELECT id, name, message FROM messages WHERE id > ?1 AND id <= ?2",
        )?
        .execute(params![after, upto])?;
    conn.prepare_cached("UPDATE search_progress SET indexed_to = ?1")?
        .execute([upto])?;
    Ok(CaughtUp {
        indexed_to: upto,
        indexed: indexed as i64,
    })
}

/// Pages one step of [`merge_some`] writes at most: a few milliseconds, so
/// a post arriving meanwhile hardly waits.
const MERGE_STEP_PAGES: i64 = 64;

/// Merges some of the index's small segments (each commit writes one);
/// true if there is more to merge.
pub fn merge_some(conn: &Connection) -> rusqlite::Result<bool> {
    let before = conn.total_changes();
    conn.execute(
        "INSERT INTO search_index (search_index, rank) VALUES ('merge', ?1)",
        [MERGE_STEP_PAGES],
    )?;
    // FTS5's rule: a step that changed fewer than two rows found nothing to do.
    Ok(conn.total_changes() - before >= 2)
}

/// Indexes message `id`, stored with this name and text.
pub fn add(conn: &Connection, id: i64, name: &str, message: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO search_index (rowid, name, message) VALUES (?1, ?2, ?3)")?
        .execute(params![id, name, message])?;
    Ok(())
}

/// Takes message `id` out of the index: `name` and `message` must be what
/// it was indexed with (the index keeps no copy of them).
pub fn remove(conn: &Connection, id: i64, name: &str, message: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO search_index (search_index, rowid, name, message)
         VALUES ('delete', ?1, ?2, ?3)",
    )?
    .execute(params![id, name, message])?;
    Ok(())
}

/// How many messages [`fill`] indexes between two progress reports.
pub const FILL_STEP: i64 = 50_000;

/// Puts every message of the `messages` table into a freshly made index
/// with an empty [`search_progress`](CREATE_PROGRESS), in steps, calling
/// `progress(done, total)` after each: existing files gain the index this
/// way on their first start with search.
pub fn fill(conn: &Connection, mut progress: impl FnMut(i64, i64)) -> rusqlite::Result<()> {
    let total: i64 = conn.query_row("SELECT count(*) FROM messages", [], |row| row.get(0))?;
    conn.execute("INSERT INTO search_progress (indexed_to) VALUES (0)", [])?;
    let (mut after, mut done) = (0i64, 0i64);
    loop {
        let step = catch_up(conn, after, FILL_STEP)?;
        if step.indexed == 0 {
            return Ok(());
        }
        done += step.indexed;
        after = step.indexed_to;
        progress(done, total);
    }
}

/// One message found, with where the query matched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    #[serde(flatten)]
    pub message: Message,
    pub highlights: Highlights,
}

/// Matched words as `[start, end)` offsets in Unicode scalar values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Highlights {
    pub name: Vec<[usize; 2]>,
    pub message: Vec<[usize; 2]>,
}

/// A page of results, newest first, and whether older ones match too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub hits: Vec<Hit>,
    pub more: bool,
}

/// Where `highlight()` opens and closes a match.
const OPEN: char = '\u{1}';
const CLOSE: char = '\u{2}';

/// The newest (up to) `limit` messages with an id below `before` that
/// match `query`, searched in `conn`'s `search_index`.
pub fn find(
    conn: &Connection,
    query: &Query,
    before: u64,
    limit: usize,
) -> rusqlite::Result<Found> {
    find_in(
        conn,
        "main.search_index",
        query,
        before,
        limit,
        Files::Absent,
    )
}

/// Whether the `messages` a search reads carry the messages' files: a SQLite
/// board's do; an [`Index`]'s copy holds only what is searched, and its
/// owner brings the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Files {
    Column,
    Absent,
}

/// Readies a SQLite board's reading connection for [`find_with_backlog`]:
/// its temporary index, kept in memory.
pub fn prepare_backlog(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(concat!(
        "PRAGMA temp_store = MEMORY;
         CREATE VIRTUAL TABLE temp.search_backlog USING fts5(name, message,",
        words!(),
        ");"
    ))
}

/// [`find`] for a SQLite board whose index has a backlog: the messages
/// after `indexed_to` are indexed for this one query in the connection's
/// temporary index ([`prepare_backlog`], emptied afterwards), and found
/// there before the index is searched for older ones. The caller reads in
/// one transaction, so `indexed_to` and the messages agree.
pub fn find_with_backlog(
    conn: &Connection,
    query: &Query,
    indexed_to: i64,
    before: u64,
    limit: usize,
) -> rusqlite::Result<Found> {
    let before_id = i64::try_from(before).unwrap_or(i64::MAX);
    let backlog = conn
        .prepare_cached(
            "INSERT INTO temp.search_backlog (rowid, name, message)
             SELECT id, name, message FROM main.messages WHERE id > ?1 AND id < ?2",
        )?
        .execute(params![indexed_to, before_id])?;
    if backlog == 0 {
        return find_in(
            conn,
            "main.search_index",
            query,
            before,
            limit,
            Files::Column,
        );
    }
    let found = find_in(
        conn,
        "temp.search_backlog",
        query,
        before,
        limit,
        Files::Column,
    );
    // Emptied at once: deleted text must not wait in memory for the next query.
    conn.execute_batch("DELETE FROM temp.search_backlog")?;
    let mut found = found?;
    if !found.more {
        // With no room left, this still tells whether older messages match.
        let older = find_in(
            conn,
            "main.search_index",
            query,
            (indexed_to + 1) as u64,
            limit - found.hits.len(),
            Files::Column,
        )?;
        found.hits.extend(older.hits);
        found.more = older.more;
    }
    Ok(found)
}

fn find_in(
    conn: &Connection,
    table: &str,
    query: &Query,
    before: u64,
    limit: usize,
    files: Files,
) -> rusqlite::Result<Found> {
    let Some(expression) = query.expression() else {
        return Ok(Found::default());
    };
    let name = table.rsplit('.').next().unwrap_or(table);
    let files = match files {
        Files::Column => "m.files",
        Files::Absent => "NULL",
    };
    let mut select = conn.prepare_cached(&format!(
        "SELECT m.id, m.name, m.message, m.time, m.edited,
                highlight({name}, 0, char(1), char(2)),
                highlight({name}, 1, char(1), char(2)), {files}
         FROM {table} JOIN main.messages m ON m.id = {name}.rowid
         WHERE {name} MATCH ?1 AND {name}.rowid < ?2
         ORDER BY {name}.rowid DESC LIMIT ?3"
    ))?;
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    let rows = select.query_map(params![expression, before, limit as i64 + 1], |row| {
        let message = Message {
            id: row.get::<_, i64>(0)? as u64,
            name: row.get(1)?,
            message: row.get(2)?,
            time: row.get(3)?,
            edited: row.get(4)?,
            files: crate::files::from_column(row, 7)?,
        };
        let name: String = row.get(5)?;
        let text: String = row.get(6)?;
        Ok(Hit {
            highlights: Highlights {
                name: spans(&name, &message.name),
                message: spans(&text, &message.message),
            },
            message,
        })
    })?;
    let mut hits = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let more = hits.len() > limit;
    hits.truncate(limit);
    Ok(Found { hits, more })
}

/// The offsets of the marked stretches of `marked`, which is `original`
/// with [`OPEN`] and [`CLOSE`] around each match; none if the two do not
/// agree (text that held the marks itself, from an import).
fn spans(marked: &str, original: &str) -> Vec<[usize; 2]> {
    let mut spans = Vec::new();
    let mut at = 0;
    let mut start = None;
    let mut plain = String::with_capacity(original.len());
    for c in marked.chars() {
        match c {
            OPEN => start = Some(at),
            CLOSE => {
                if let Some(start) = start.take() {
                    spans.push([start, at]);
                }
            }
            c => {
                plain.push(c);
                at += 1;
            }
        }
    }
    if plain == original {
        spans
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_count_characters_not_bytes() {
        assert_eq!(
            spans("🎉 \u{1}Café\u{2} au \u{1}lait\u{2}", "🎉 Café au lait"),
            [[2, 6], [10, 14]]
        );
    }

    #[test]
    fn spans_that_disagree_with_the_text_are_dropped() {
        assert_eq!(spans("\u{1}a\u{2}", "b"), Vec::<[usize; 2]>::new());
    }
}
