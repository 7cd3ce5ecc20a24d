//! `lanboard export` and `lanboard import`: the history as JSON Lines, one
//! message a line, a backup anyone can read and a way to move a board.

use std::io::{BufRead, Write};
use std::path::Path;

use crate::protocol::Message;
use crate::store::{Access, SqliteLog, StoreError, SyncMode};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: not a lanboard message ({source})")]
    BadLine {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{0} does not exist; nothing to export")]
    Missing(String),
}

/// Writes every message of the board in `data` to `out`, oldest first.
pub fn export(data: &Path, out: &mut impl Write) -> Result<usize, TransferError> {
    if !data.exists() {
        return Err(TransferError::Missing(data.display().to_string()));
    }
    let log = SqliteLog::open(data, Access::Read, SyncMode::Normal)?;
    let mut count = 0;
    log.for_each(|message| {
        count += 1;
        // A message serialises to one line: JSON strings escape newlines.
        serde_json::to_writer(&mut *out, &message)?;
        out.write_all(b"\n")
    })?;
    out.flush().map_err(|source| TransferError::Read {
        path: "<stdout>".into(),
        source,
    })?;
    Ok(count)
}

/// Loads the JSON Lines in `input` into the empty board in `data`.
pub fn import(input: impl BufRead, name: &str, data: &Path) -> Result<usize, TransferError> {
    let mut messages = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line.map_err(|source| TransferError::Read {
            path: name.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let message: Message =
            serde_json::from_str(&line).map_err(|source| TransferError::BadLine {
                path: name.to_owned(),
                line: index + 1,
                source,
            })?;
        messages.push(message);
    }
    let log = SqliteLog::open(data, Access::Write, SyncMode::Full)?;
    Ok(log.import(&messages)?)
}
