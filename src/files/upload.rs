//! `POST /api/files?name=<file name>`: an upload streamed into the store a
//! chunk at a time, hashed on the way, so that a file of the largest size
//! allowed costs the server a few hundred KiB of memory, not its size.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;

use super::{clean_name, media, FilesConfig};
use crate::http::{admit, peer_ip, refuse, reject, AppState};
use crate::protocol::{Code, File, Rejection};
use crate::store::{Log, StoreError, Stored, UploadId, CHUNK_BYTES};
use crate::writer::now_ms;

#[derive(Deserialize)]
pub struct UploadQuery {
    name: Option<String>,
}

/// The answer to an upload over `--max-file-bytes`.
fn too_large(limit: u64) -> HttpResponse {
    reject(
        StatusCode::PAYLOAD_TOO_LARGE,
        &Rejection::new(
            Code::TooLarge,
            format!("the file is larger than this board takes ({limit} bytes)"),
        ),
    )
}

/// The answer to an upload that would pass `--max-files-bytes`.
fn files_full(quota: u64) -> HttpResponse {
    reject(
        StatusCode::INSUFFICIENT_STORAGE,
        &Rejection::new(
            Code::FilesFull,
            format!(
                "the board's files are full ({quota} bytes in all); \
                 files go when the messages carrying them are deleted"
            ),
        ),
    )
}

fn storage_failed(error: &StoreError) -> HttpResponse {
    log::error!("storing an upload failed: {error}");
    let (code, text) = if error.is_unavailable() {
        (
            Code::StorageUnavailable,
            "the board's storage cannot be reached right now; upload the file again in a moment",
        )
    } else {
        (
            Code::StorageError,
            "the file could not be stored; try again",
        )
    };
    reject(StatusCode::SERVICE_UNAVAILABLE, &Rejection::new(code, text))
}

/// Runs a blocking store call on actix's blocking pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    web::block(call)
        .await
        .unwrap_or_else(|_| Err(StoreError::Panicked("the blocking pool is gone".into())))
}

/// An upload that is dropped from the store unless it is finished: a
/// client that goes away mid-upload leaves no chunks behind.
struct Staged {
    log: Arc<dyn Log>,
    upload: Option<UploadId>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            let log = self.log.clone();
            // Off the async worker; if even that fails, the sweep for
            // uploads never finished removes the chunks within the hour.
            actix_web::rt::task::spawn_blocking(move || {
                if let Err(error) = log.files().abort_upload(upload) {
                    log::warn!("dropping an unfinished upload failed: {error}");
                }
            });
        }
    }
}

/// `POST /api/files`: admits the upload, streams its body into the store,
/// and answers with the File.
pub async fn upload(
    request: HttpRequest,
    query: Result<web::Query<UploadQuery>, actix_web::Error>,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let name = match admit_upload(&request, query, &state).await {
        Ok(name) => name,
        Err(response) => return response,
    };
    let log = state.log.clone();
    let files = log.clone();
    let began = now_ms();
    let mut staged = match blocking(move || files.files().begin_upload(began)).await {
        Ok(upload) => Staged {
            log: log.clone(),
            upload: Some(upload),
        },
        Err(error) => return storage_failed(&error),
    };
    let upload = staged.upload.expect("set just above");
    let received = match receive(&mut payload, &log, upload, state.files).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    let claimed = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let file = File {
        id: received.id,
        name,
        size: received.size,
        media_type: media::settle(claimed, &received.head),
    };
    let files = log.clone();
    let finished = now_ms();
    let stored = match blocking(move || files.files().finish_upload(upload, &file, finished)).await
    {
        Ok(stored) => stored,
        Err(error) => return storage_failed(&error),
    };
    // Finished: the chunks belong to a file (or are gone already).
    staged.upload = None;
    // After the answer: nothing waits for it.
    actix_web::rt::task::spawn_blocking(move || {
        if let Err(error) = log.files().after_upload() {
            log::warn!("tidying up after an upload failed: {error}");
        }
    });
    match stored {
        Stored::New(file) => {
            log::info!(
                "{}: stored file {} ({} bytes, {})",
                crate::http::peer(&request),
                file.id,
                file.size,
                file.media_type
            );
            HttpResponse::Created().json(file)
        }
        Stored::Existing(file) => HttpResponse::Ok().json(file),
    }
}

/// The checks an upload passes before its body is read: Origin,
/// passphrase, rate, the declared size against both limits. Returns the
/// cleaned file name.
async fn admit_upload(
    request: &HttpRequest,
    query: Result<web::Query<UploadQuery>, actix_web::Error>,
    state: &AppState,
) -> Result<String, HttpResponse> {
    admit(request, &state.guard).map_err(refuse)?;
    state.guard.allow_post(peer_ip(request)).map_err(refuse)?;
    let limits = state.files;
    let name = match query {
        Ok(query) => clean_name(query.name.as_deref().unwrap_or_default()),
        Err(_) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                &Rejection::new(
                    Code::BadRequest,
                    "name must be the file's name, URL-encoded",
                ),
            ))
        }
    };
    // Refused before a byte of the body is read, when the client says how
    // many are coming.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(size) = declared else {
        return Ok(name);
    };
    if size > limits.max_file_bytes {
        return Err(too_large(limits.max_file_bytes));
    }
    let log = state.log.clone();
    match blocking(move || log.files().used_bytes()).await {
        Ok(used) if used.saturating_add(size) > limits.max_files_bytes => {
            Err(files_full(limits.max_files_bytes))
        }
        Ok(_) => Ok(name),
        Err(error) => Err(storage_failed(&error)),
    }
}

/// What [`receive`] learnt of a body while storing it.
struct Received {
    /// SHA-256 of the body, as hex.
    id: String,
    size: u64,
    /// The body's first [`media::HEAD_BYTES`], for its media type.
    head: Vec<u8>,
}

/// Streams the body into `upload`, a chunk at a time, hashing it on the
/// way; refuses it once it passes `--max-file-bytes` or the board's files
/// their quota.
async fn receive(
    payload: &mut web::Payload,
    log: &Arc<dyn Log>,
    upload: UploadId,
    limits: FilesConfig,
) -> Result<Received, HttpResponse> {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut head = Vec::with_capacity(media::HEAD_BYTES);
    let mut size: u64 = 0;
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    // The buffer of the chunk written last, back from the store for the
    // next: an upload allocates two buffers, not one per chunk.
    let mut spare: Option<Vec<u8>> = None;
    let mut seq: u32 = 0;
    // One chunk is written while the next is read: the store's write and
    // the socket's read overlap, and at most two chunks are held.
    let mut writing: Option<Writing> = None;
    let quota = limits.max_files_bytes;
    while let Some(part) = payload.next().await {
        let part = part.map_err(|_| {
            reject(
                StatusCode::BAD_REQUEST,
                &Rejection::new(Code::BadRequest, "the upload was cut off"),
            )
        })?;
        size += part.len() as u64;
        if size > limits.max_file_bytes {
            return Err(too_large(limits.max_file_bytes));
        }
        digest.update(&part);
        if head.len() < media::HEAD_BYTES {
            let take = (media::HEAD_BYTES - head.len()).min(part.len());
            head.extend_from_slice(&part[..take]);
        }
        let mut rest = &part[..];
        while !rest.is_empty() {
            let take = (CHUNK_BYTES - chunk.len()).min(rest.len());
            chunk.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if chunk.len() == CHUNK_BYTES {
                let next = spare
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES));
                let full = std::mem::replace(&mut chunk, next);
                spare = write(log, &mut writing, upload, seq, full, quota).await?;
                seq += 1;
            }
        }
    }
    if !chunk.is_empty() {
        write(log, &mut writing, upload, seq, chunk, quota).await?;
    }
    if let Some(last) = writing.take() {
        written(last, quota).await?;
    }
    Ok(Received {
        id: crate::protocol::hex(digest.finish().as_ref()),
        size,
        head,
    })
}

/// A chunk's write on the blocking pool; it hands back the chunk's buffer.
type Writing = actix_web::rt::task::JoinHandle<(Result<(), StoreError>, Vec<u8>)>;

/// Starts writing `chunk` as chunk `seq` once the write before it is done;
/// returns that write's buffer, emptied, for the next chunk.
async fn write(
    log: &Arc<dyn Log>,
    writing: &mut Option<Writing>,
    upload: UploadId,
    seq: u32,
    chunk: Vec<u8>,
    quota: u64,
) -> Result<Option<Vec<u8>>, HttpResponse> {
    let returned = match writing.take() {
        Some(previous) => Some(written(previous, quota).await?),
        None => None,
    };
    let log = log.clone();
    *writing = Some(actix_web::rt::task::spawn_blocking(move || {
        let result = log.files().write_chunk(upload, seq, &chunk, quota);
        (result, chunk)
    }));
    Ok(returned)
}

/// Waits for a chunk's write: its buffer, emptied, when it is stored, else
/// the answer.
async fn written(writing: Writing, quota: u64) -> Result<Vec<u8>, HttpResponse> {
    match writing.await {
        Ok((Ok(()), mut buffer)) => {
            buffer.clear();
            Ok(buffer)
        }
        Ok((Err(StoreError::FilesFull { .. }), _)) => Err(files_full(quota)),
        Ok((Err(error), _)) => Err(storage_failed(&error)),
        Err(_) => Err(storage_failed(&StoreError::Panicked(
            "writing a chunk failed".into(),
        ))),
    }
}
