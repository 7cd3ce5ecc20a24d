//! Full-text search over a board's whole history.
//!
//! Every store searches the same way: an FTS5 index (`search_index`) over
//! the `name` and `message` columns of a `messages(id, name, message, time,
//! edited)` table, written by [`add`] and [`remove`] in the same transaction
//! as each write to a message. Where that table lives differs:
//! - a SQLite board's own file: the index is written in the same
//!   transaction as every post, edit and deletion;
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

/// The index over an existing `messages` table. Made empty: [`fill`] puts
/// the existing messages in; from then on [`add`] and [`remove`] keep it, in
/// the transaction that writes the message. (Not triggers: each statement a
/// trigger runs is a savepoint, at which FTS5 writes out what it gathered,
/// which makes indexing three times slower.)
///
/// Prefix indexes of the first 1, 2 and 3 characters make the word being
/// typed one lookup even when it starts many common words (`the` is the
/// start of `then`, `there`, `these`...: without them a query ending in it
/// merges all their lists, 90 ms at a million messages); a fourth one cost
/// more on every post than it saved. Each commit writes a small segment of
/// the index; merging 16 of them at a time rather than FTS5's 4 halves what
/// indexing costs. A SQLite board's writer does not merge in its commits at
/// all ([`MERGE_WHEN_IDLE`]), but between them.
pub const CREATE_INDEX: &str = "
CREATE VIRTUAL TABLE search_index USING fts5(
    name, message,
    content = 'messages', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '1 2 3'
);
INSERT INTO search_index (search_index, rank) VALUES ('secure-delete', 1);
INSERT INTO search_index (search_index, rank) VALUES ('automerge', 16);";

/// For an index whose writer merges while it is idle ([`merge_some`]): no
/// merging inside commits (FTS5 still merges, whatever this says, once a
/// level holds as many segments as its `crisismerge`).
pub const MERGE_WHEN_IDLE: &str =
    "INSERT INTO search_index (search_index, rank) VALUES ('automerge', 0);";

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

/// Puts every message of the `messages` table into a freshly made index,
/// in steps, calling `progress(done, total)` after each: existing files
/// gain the index this way on their first start with search.
pub fn fill(conn: &Connection, mut progress: impl FnMut(i64, i64)) -> rusqlite::Result<()> {
    let total: i64 = conn.query_row("SELECT count(*) FROM messages", [], |row| row.get(0))?;
    let mut step_end = conn.prepare(
        "SELECT max(id) FROM (SELECT id FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2)",
    )?;
    let mut step = conn.prepare(
        "INSERT INTO search_index (rowid, name, message)
         SELECT id, name, message FROM messages WHERE id > ?1 AND id <= ?2",
    )?;
    let (mut after, mut done) = (0i64, 0i64);
    while let Some(upto) = step_end.query_row(params![after, FILL_STEP], |row| row.get(0))? {
        done += step.execute(params![after, upto])? as i64;
        after = upto;
        progress(done, total);
    }
    Ok(())
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
    let Some(expression) = query.expression() else {
        return Ok(Found::default());
    };
    let mut select = conn.prepare_cached(
        "SELECT m.id, m.name, m.message, m.time, m.edited,
                highlight(search_index, 0, char(1), char(2)),
                highlight(search_index, 1, char(1), char(2))
         FROM search_index JOIN messages m ON m.id = search_index.rowid
         WHERE search_index MATCH ?1 AND search_index.rowid < ?2
         ORDER BY search_index.rowid DESC LIMIT ?3",
    )?;
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    let rows = select.query_map(params![expression, before, limit as i64 + 1], |row| {
        let message = Message {
            id: row.get::<_, i64>(0)? as u64,
            name: row.get(1)?,
            message: row.get(2)?,
            time: row.get(3)?,
            edited: row.get(4)?,
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
