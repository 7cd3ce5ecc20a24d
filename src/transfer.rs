//! `lanboard export` and `lanboard import`: the history as JSON Lines, one
//! message a line, a backup anyone can read and a way to move a board.
//! With `--files DIR`, the board's files go beside it, one file a file
//! named by its id: a message line refers to its files by id, name, size
//! and type.

use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use crate::protocol::{File, Message};
use crate::store::{
    Access, FileStore, Log, RedisLog, RedisTarget, SqliteLog, StoreError, SyncMode, CHUNK_BYTES,
};

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
    #[error(
        "message {message} carries files: give the folder `lanboard export --files DIR` \
         wrote them to with --files DIR"
    )]
    FilesNeeded { message: u64 },
    #[error("{path}: {reason}")]
    BadFile { path: String, reason: String },
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

/// Writes every message of the board at `place` to `out`, oldest first,
/// and with `files` each file the messages carry into that folder, named
/// by its id.
pub fn export(
    place: &Place,
    out: &mut impl Write,
    files: Option<&Path>,
) -> Result<usize, TransferError> {
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
    if let Some(dir) = files {
        std::fs::create_dir_all(dir).map_err(|source| TransferError::Read {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut written = HashSet::new();
    let mut count = 0;
    let mut after = 0;
    loop {
        let page = log.after(after, EXPORT_PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for message in &page {
            if let Some(dir) = files {
                for file in &message.files {
                    if written.insert(file.id.clone()) {
                        write_file(log.files(), file, dir)?;
                    }
                }
            }
            // A message serialises to one line: JSON strings escape newlines.
            serde_json::to_writer(&mut *out, message).map_err(|e| write_error(e.into()))?;
            out.write_all(b"\n").map_err(write_error)?;
        }
        count += page.len();
    }
    out.flush().map_err(write_error)?;
    Ok(count)
}

/// Writes the content of `file` into `dir`/<id>, a chunk at a time: first
/// under a temporary name, so a cut-off export leaves no short file that
/// looks whole.
fn write_file(store: &dyn FileStore, file: &File, dir: &Path) -> Result<(), TransferError> {
    let path = dir.join(&file.id);
    let partial = dir.join(format!("{}.partial", file.id));
    let failed = |source| TransferError::Read {
        path: partial.display().to_string(),
        source,
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(failed)?);
    let mut size = 0u64;
    let mut seq = 0;
    while size < file.size {
        let Some(chunk) = store.read_chunk(&file.id, seq)? else {
            // Removed while exporting (its message deleted meanwhile): the
            // line still names it, and an import says which file is missing.
            eprintln!(
                "lanboard: file {} ({}) was removed while exporting; it is not in {}",
                file.id,
                file.name,
                dir.display()
            );
            drop(out);
            let _ = std::fs::remove_file(&partial);
            return Ok(());
        };
        out.write_all(&chunk).map_err(failed)?;
        size += chunk.len() as u64;
        seq += 1;
    }
    out.into_inner()
        .map_err(|e| failed(e.into_error()))?
        .sync_all()
        .map_err(failed)?;
    std::fs::rename(&partial, &path).map_err(failed)
}

/// Stores the file `file` names from `dir`/<id> in `store`, checking that
/// its content is what the id says.
fn read_file(store: &dyn FileStore, file: &File, dir: &Path) -> Result<(), TransferError> {
    let path = dir.join(&file.id);
    let bad = |reason: String| TransferError::BadFile {
        path: path.display().to_string(),
        reason,
    };
    let mut input = std::fs::File::open(&path).map_err(|e| bad(e.to_string()))?;
    let now = crate::writer::now_ms();
    let upload = store.begin_upload(now)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut head = Vec::new();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut size = 0u64;
    let mut seq = 0;
    let result = loop {
        let mut filled = 0;
        while filled < CHUNK_BYTES {
            match input.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    store.abort_upload(upload)?;
                    return Err(bad(e.to_string()));
                }
            }
        }
        if filled == 0 {
            break Ok(());
        }
        digest.update(&chunk[..filled]);
        if head.len() < crate::files::media::HEAD_BYTES {
            head.extend_from_slice(&chunk[..filled.min(crate::files::media::HEAD_BYTES)]);
        }
        if let Err(error) = store.write_chunk(upload, seq, &chunk[..filled], u64::MAX) {
            break Err(error.into());
        }
        size += filled as u64;
        seq += 1;
    };
    let id = crate::protocol::hex(digest.finish().as_ref());
    let checked = result.and_then(|()| {
        if id != file.id {
            Err(bad(format!(
                "its content is not file {} (SHA-256 {id})",
                file.id
            )))
        } else if size != file.size {
            Err(bad(format!(
                "{size} bytes, where the export says {}",
                file.size
            )))
        } else {
            Ok(())
        }
    });
    if let Err(error) = checked {
        store.abort_upload(upload)?;
        return Err(error);
    }
    // The type is checked against the content again, as for an upload.
    let stored = File {
        media_type: crate::files::media::settle(Some(&file.media_type), &head),
        ..file.clone()
    };
    store.finish_upload(upload, &stored, now)?;
    Ok(())
}

/// Loads the JSON Lines in `input` into the empty board at `place`, and
/// the files its messages carry from `files`.
pub fn import(
    input: impl BufRead,
    name: &str,
    place: &Place,
    files: Option<&Path>,
) -> Result<usize, TransferError> {
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
    let carried: Vec<&File> = {
        let mut seen = HashSet::new();
        messages
            .iter()
            .flat_map(|m| &m.files)
            .filter(|f| seen.insert(&f.id))
            .collect()
    };
    let dir = match (files, messages.iter().find(|m| !m.files.is_empty())) {
        (None, Some(message)) => {
            return Err(TransferError::FilesNeeded {
                message: message.id,
            })
        }
        (dir, _) => dir,
    };
    let log: Box<dyn Log> = match place {
        Place::File(data) => Box::new(SqliteLog::open(data, Access::Write, SyncMode::Full)?),
        Place::Redis(target) => Box::new(RedisLog::open(target)?),
    };
    if log.last_id()? != 0 {
        return Err(StoreError::NotEmpty.into());
    }
    if let Some(dir) = dir {
        for file in carried {
            read_file(log.files(), file, dir)?;
        }
    }
    Ok(log.import(&messages)?)
}
