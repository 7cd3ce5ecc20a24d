//! `GET /files/<id>`: a stored file, streamed a chunk at a time, with a
//! strong ETag (its id), `Range` for seeking in audio and video, and the
//! headers that keep an uploaded file from ever acting as part of the page.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;

use super::media;
use crate::http::{admit, refuse, reject, AppState};
use crate::protocol::{is_file_id, Code, File, Rejection};
use crate::store::{Log, StoreError, CHUNK_BYTES};

/// A file's content never changes (its id is its hash): browsers keep it.
pub const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// Whatever a file holds, it runs no script and loads nothing, even when
/// opened on its own in a tab: a unique origin, no sources.
pub const FILE_CSP: &str = "sandbox; default-src 'none'";

/// `Content-Disposition` for a file: `inline` for what the page shows
/// (raster images, audio, video), a download under its name for the rest.
pub fn disposition(file: &File) -> String {
    if media::is_inline(&file.media_type) {
        "inline".to_owned()
    } else {
        format!(
            "attachment; filename*=UTF-8''{}",
            percent_encode(&file.name)
        )
    }
}

/// RFC 8187 encoding of a header parameter: every byte but the
/// attribute characters as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

/// The part of a file a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    /// Bytes `start..=end`.
    Range(u64, u64),
    /// No byte of the file is in the range asked for.
    Unsatisfiable,
}

/// Reads a `Range` header for a file of `size` bytes. One range is
/// served; a header that is not one byte range (several ranges, another
/// unit, a syntax error) is ignored, as RFC 9110 allows, and the whole
/// file is sent.
fn part(range: Option<&str>, size: u64) -> Part {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Part::Whole;
    };
    if spec.contains(',') {
        return Part::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Part::Whole;
    };
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                Part::Unsatisfiable
            } else {
                Part::Range(size.saturating_sub(suffix), size - 1)
            }
        }
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if end.is_some_and(|end| end < start) {
                return Part::Whole;
            }
            if start >= size {
                return Part::Unsatisfiable;
            }
            Part::Range(start, end.map_or(size - 1, |end| end.min(size - 1)))
        }
        _ => Part::Whole,
    }
}

/// True when an `If-None-Match` header names this ETag (or `*`); weak
/// comparison, as RFC 9110 asks for this header.
fn none_match(header: Option<&str>, etag: &str) -> bool {
    header.is_some_and(|list| {
        list.split(',').any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        })
    })
}

fn not_found() -> HttpResponse {
    reject(
        StatusCode::NOT_FOUND,
        &Rejection::new(
            Code::NotFound,
            "there is no such file: it was never uploaded, or it was removed \
             with the messages that carried it",
        ),
    )
}

pub async fn download(
    request: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = admit(&request, &state.guard) {
        return refuse(refusal);
    }
    let id = id.into_inner();
    if !is_file_id(&id) {
        return not_found();
    }
    let log = state.log.clone();
    let asked = id.clone();
    let file = match web::block(move || log.files().file(&asked)).await {
        Ok(Ok(Some(file))) => file,
        Ok(Ok(None)) => return not_found(),
        Ok(Err(error)) => {
            log::error!("reading file {id} failed: {error}");
            return reject(
                StatusCode::SERVICE_UNAVAILABLE,
                &Rejection::new(Code::StorageError, "the file could not be read"),
            );
        }
        Err(_) => {
            return reject(
                StatusCode::SERVICE_UNAVAILABLE,
                &Rejection::new(Code::Unavailable, "the board is shutting down"),
            )
        }
    };
    let etag = format!("\"{}\"", file.id);
    let headers = request.headers();
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let mut response = HttpResponse::build(StatusCode::OK);
    response
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, FILE_CSP))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    if none_match(text(header::IF_NONE_MATCH), &etag) {
        return response.status(StatusCode::NOT_MODIFIED).finish();
    }
    // A Range applies only to the content the client has: If-Range names
    // it by ETag (a date never matches, the content has none).
    let range = match text(header::IF_RANGE) {
        Some(validator) if validator.trim() != etag => None,
        _ => text(header::RANGE),
    };
    let (start, end) = match part(range, file.size) {
        Part::Whole => (0, file.size.saturating_sub(1)),
        Part::Range(start, end) => {
            response.status(StatusCode::PARTIAL_CONTENT).insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", file.size),
            ));
            (start, end)
        }
        Part::Unsatisfiable => {
            return response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .insert_header((header::CONTENT_RANGE, format!("bytes */{}", file.size)))
                .finish();
        }
    };
    response
        .insert_header((header::CONTENT_TYPE, file.media_type.as_str()))
        .insert_header((header::CONTENT_DISPOSITION, disposition(&file)));
    if file.size == 0 {
        return response.finish();
    }
    let length = end - start + 1;
    response
        .no_chunking(length)
        .streaming(chunks(state.log.clone(), file.id, start, end))
}

/// The bytes `start..=end` of file `id`, read a chunk at a time on the
/// blocking pool as the socket takes them, and sent in the pieces the
/// store reads it in.
fn chunks(
    log: std::sync::Arc<dyn Log>,
    id: String,
    start: u64,
    end: u64,
) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>> {
    let state = (Some(start), std::collections::VecDeque::new());
    stream::unfold(state, move |(at, mut ready)| {
        let log = log.clone();
        let id = id.clone();
        async move {
            if let Some(piece) = ready.pop_front() {
                return Some((Ok(piece), (at, ready)));
            }
            let at = at?;
            let chunk = CHUNK_BYTES as u64;
            let seq = (at / chunk) as u32;
            let read = web::block(move || log.files().read_pieces(&id, seq)).await;
            let pieces = match read {
                Ok(Ok(Some(pieces))) => pieces,
                // Removed mid-download (its message deleted), or the store
                // failed: the response ends short, and the client sees it
                // did (Content-Length).
                Ok(Ok(None)) => return Some((Err(gone()), (None, ready))),
                Ok(Err(error)) => {
                    log::error!("reading a file failed: {error}");
                    return Some((Err(gone()), (None, ready)));
                }
                Err(_) => return Some((Err(gone()), (None, ready))),
            };
            // The part of this chunk the range wants, cut out of its pieces.
            let mut offset = u64::from(seq) * chunk;
            for piece in pieces {
                let (from, to) = (offset, offset + piece.len() as u64);
                offset = to;
                let (want_from, want_to) = (from.max(at), to.min(end + 1));
                if want_from < want_to {
                    let piece = web::Bytes::from(piece);
                    ready.push_back(
                        piece.slice((want_from - from) as usize..(want_to - from) as usize),
                    );
                }
            }
            let next = offset.min(end + 1);
            let Some(first) = ready.pop_front() else {
                return Some((Err(gone()), (None, ready)));
            };
            Some((Ok(first), ((next <= end).then_some(next), ready)))
        }
    })
}

fn gone() -> actix_web::Error {
    actix_web::error::ErrorGone(StoreError::Unavailable(
        "the file is no longer there".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_range_is_read_and_anything_else_means_the_whole_file() {
        assert_eq!(part(None, 100), Part::Whole);
        assert_eq!(part(Some("bytes=0-9"), 100), Part::Range(0, 9));
        assert_eq!(part(Some("bytes=90-"), 100), Part::Range(90, 99));
        assert_eq!(part(Some("bytes=90-1000"), 100), Part::Range(90, 99));
        assert_eq!(part(Some("bytes=-10"), 100), Part::Range(90, 99));
        assert_eq!(part(Some("bytes=-1000"), 100), Part::Range(0, 99));
        assert_eq!(part(Some("bytes=100-"), 100), Part::Unsatisfiable);
        assert_eq!(part(Some("bytes=-0"), 100), Part::Unsatisfiable);
        assert_eq!(part(Some("bytes=0-1,5-6"), 100), Part::Whole);
        assert_eq!(part(Some("items=0-1"), 100), Part::Whole);
        assert_eq!(part(Some("bytes=5-2"), 100), Part::Whole);
        assert_eq!(part(Some("bytes=x-2"), 100), Part::Whole);
        assert_eq!(part(Some("bytes=+1-2"), 100), Part::Whole);
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_a_star() {
        let etag = "\"abc\"";
        assert!(none_match(Some("\"abc\""), etag));
        assert!(none_match(Some("W/\"abc\""), etag));
        assert!(none_match(Some("\"x\", \"abc\""), etag));
        assert!(none_match(Some("*"), etag));
        assert!(!none_match(Some("\"abd\""), etag));
        assert!(!none_match(None, etag));
    }

    #[test]
    fn only_raster_images_audio_and_video_are_inline_and_names_are_encoded() {
        let file = |name: &str, kind: &str| File {
            id: "0".repeat(64),
            name: name.into(),
            size: 1,
            media_type: kind.into(),
        };
        assert_eq!(disposition(&file("a.png", "image/png")), "inline");
        assert_eq!(disposition(&file("a.mp4", "video/mp4")), "inline");
        assert_eq!(
            disposition(&file("Résumé 1.pdf", "application/pdf")),
            "attachment; filename*=UTF-8''R%C3%A9sum%C3%A9%201.pdf"
        );
        assert_eq!(
            disposition(&file("x.svg", "image/svg+xml")),
            "attachment; filename*=UTF-8''x.svg"
        );
        assert_eq!(
            disposition(&file("\"quoted\";.html", "text/html")),
            "attachment; filename*=UTF-8''%22quoted%22%3B.html"
        );
    }
}
