//! The web client, compiled into the binary, and the handler that serves it.
//!
//! Files under `assets/` are embedded by rust-embed (also in debug builds, so
//! every build is self-contained); `build.rs` makes cargo rebuild when one is
//! added or changed. Each response carries its content type and a strong
//! ETag from the file's SHA-256, so browsers revalidate cheaply and never run
//! a stale client after an upgrade.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "assets/"]
struct Assets;

/// The page's Content-Security-Policy: only the board's own scripts, styles
/// and sockets; no inline script, no plugins, no framing by other sites.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; media-src 'self' data:; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Serves `assets/<path>`, `index.html` for `/`.
pub async fn serve(request: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let path = path.into_inner();
    let path = match path.as_str() {
        "" | "wall" => "index.html",
        other => other,
    };
    file(&request, path)
}

/// Serves one embedded file, or 404.
pub fn file(request: &HttpRequest, path: &str) -> HttpResponse {
    let Some(file) = Assets::get(path) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(format!("no such page: /{path}\n"));
    };
    let etag = format!(
        "\"{}\"",
        crate::protocol::hex(&file.metadata.sha256_hash()[..16])
    );
    let fresh = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        // Revalidate every time: file names carry no hash, so a cached copy
        // could otherwise outlive an upgrade of the binary.
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return response.finish();
    }
    let mime = file.metadata.mimetype();
    let content_type = if mime.starts_with("text/") || mime.ends_with("javascript") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        ))
        .body(file.data.into_owned())
}
