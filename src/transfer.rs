//! `lanboard export` and `lanboard import`: the history as JSON Lines, one
//! message a line, a backup anyone can read and a way to move a board.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::protocol::Message;
use crate::store::{Access, Log, RedisLog, RedisTarget, SqliteLog, StoreError, SyncMode};

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
    #[error("{0} does not exist: give the running board's file with --data (or its --redis)")]
    NoBoard(String),
}

/// Which board to read or fill.
#[derive(Debug, Clone)]
pub enum Place {
    /// A SQLite file (`--data`).
    File(PathBuf),
    /// A board in Redis (`--redis`, `--redis-prefix`).
    Redis(RedisTarget),
}

impl Place {
    pub fn describe(&self) -> String {
        match self {
            Place::File(path) => path.display().to_string(),
            Place::Redis(target) => format!(
                "Redis at {}, prefix {}",
                target.display_url(),
                target.prefix
            ),
        }
    }
}

/// The board's operator link, `http://<LAN address>:<port>/#operator=<secret>`:
/// the secret kept in the board's store (made now if the board has none,
/// replaced first when `rotate`), after the first address the banner shows.
/// The file may be in use by a running board: a rotation reaches it at once.
pub fn operator_link(place: &Place, port: u16, rotate: bool) -> Result<String, TransferError> {
    let fresh = crate::store::random_token();
    let secret = match place {
        // A mistyped path must not quietly make a new board with a secret
        // of its own, whose link the running board would refuse.
        Place::File(data) if !data.exists() => {
            return Err(TransferError::NoBoard(data.display().to_string()))
        }
        Place::File(data) => crate::store::operator_secret_in(data, &fresh, rotate)?,
        Place::Redis(target) => {
            let log = RedisLog::open(target)?;
            if rotate {
                log.rotate_operator_secret(&fresh)?;
            }
            log.operator_secret(&fresh)?
        }
    };
    let urls = crate::net::share_urls(
        "http",
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        port,
        &crate::net::lan_ipv4_addresses(),
    );
    // share_urls always gives at least the loopback address.
    let base = &urls.first().expect("there is always a local address").url;
    Ok(format!("{base}/#operator={secret}"))
}

/// Messages read from the store at a time while exporting, so a large board
/// is exported without holding it all in memory.
const EXPORT_PAGE: usize = 1000;

/// Writes every message of the board at `place` to `out`, oldest first.
pub fn export(place: &Place, out: &mut impl Write) -> Result<usize, TransferError> {
    let log: Box<dyn Log> = match place {
        Place::File(data) if !data.exists() => {
            return Err(TransferError::Missing(data.display().to_string()))
        }
        // Read access: a running board may keep writing the file meanwhile.
        Place::File(data) => Box::new(SqliteLog::open(data, Access::Read, SyncMode::Normal)?),
        Place::Redis(target) => Box::new(RedisLog::open(target)?),
    };
    let write_error = |source| TransferError::Read {
        path: "<stdout>".into(),
        source,
    };
    let mut count = 0;
    let mut after = 0;
    loop {
        let page = log.after(after, EXPORT_PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for message in &page {
            // A message serialises to one line: JSON strings escape newlines.
            serde_json::to_writer(&mut *out, message).map_err(|e| write_error(e.into()))?;
            out.write_all(b"\n").map_err(write_error)?;
        }
        count += page.len();
    }
    out.flush().map_err(write_error)?;
    Ok(count)
}

/// Loads the JSON Lines in `input` into the empty board at `place`.
pub fn import(input: impl BufRead, name: &str, place: &Place) -> Result<usize, TransferError> {
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
    let log: Box<dyn Log> = match place {
        Place::File(data) => Box::new(SqliteLog::open(data, Access::Write, SyncMode::Full)?),
        Place::Redis(target) => Box::new(RedisLog::open(target)?),
    };
    Ok(log.import(&messages)?)
}
