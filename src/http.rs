//! Routes: the page, the WebSocket upgrade and the HTTP API.
//!
//! | route                    | answer                                           |
//! |--------------------------|--------------------------------------------------|
//! | `GET /`, `GET /wall`     | the page                                         |
//! | `GET /ws[?since=<id>[&epoch=<e>]]` | WebSocket, protocol v1 (`ws/upgrade.rs`, `protocol.rs`) |
//! | `GET /api/messages`      | JSON array of messages (`since`, `before`, `limit`); `Lanboard-More` |
//! | `GET /api/messages?around=<id>` | message `id` amid its neighbours; `Lanboard-More`, `Lanboard-Newer` |
//! | `POST /api/messages`     | 201 with the stored message                      |
//! | `PATCH /api/messages/<id>` | 200 with the edited message (`Lanboard-Key`)   |
//! | `DELETE /api/messages/<id>` | 204 (`Lanboard-Key`: author key or operator secret) |
//! | `GET /api/search`        | `{"results": [Hit, ...], "more"}` (`q`, `before`, `limit`) |
//! | `POST /api/files?name=`  | 201 (or 200 if already stored) with the File (`files/upload.rs`) |
//! | `GET /files/<id>`        | a file's content (`files/download.rs`)           |
//! | `GET /api/info`          | the board's addresses and limits                 |
//! | `POST /api/login`        | checks the passphrase, sets the login cookie     |
//! | `GET /api/qr.svg`        | QR code of the first LAN address                 |
//! | `GET /<file>`            | a file of the client                             |

use std::sync::Arc;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::board::Board;
use crate::files::FilesConfig;
use crate::guard::{Guard, Refusal};
use crate::protocol::{self, Code, Draft, Rejection, MAX_PAGE};
use crate::search::Query;
use crate::store::{Appended, Log, Op};
use crate::writer::{self, Writer};
use crate::ws::{SessionConfig, Sessions};

/// Headers on every response, also the upgrade's refusals.
pub const SECURITY_HEADERS: [(&str, &str); 3] = [
    (
        "content-security-policy",
        crate::assets::CONTENT_SECURITY_POLICY,
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

/// What every handler shares (the WebSocket upgrade too).
pub struct AppState {
    pub board: Board,
    pub writer: Writer,
    pub session: SessionConfig,
    /// Addresses to share, for `/api/info`: the `--mdns` name first.
    pub urls: Vec<String>,
    /// The address the QR code encodes (`net::qr_url`).
    pub qr_url: Option<String>,
    pub guard: Arc<Guard>,
    /// The running WebSocket connections.
    pub sessions: Sessions,
    /// The board's store, for its files.
    pub log: Arc<dyn Log>,
    pub files: FilesConfig,
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/ws", web::get().to(not_upgraded))
        .route("/api/messages", web::get().to(list_messages))
        .route("/api/messages", web::post().to(post_message))
        .route("/api/messages/{id}", web::patch().to(edit_message))
        .route("/api/messages/{id}", web::delete().to(delete_message))
        .route("/api/search", web::get().to(search))
        .route("/api/files", web::post().to(crate::files::upload::upload))
        .route(
            "/files/{id}",
            web::get().to(crate::files::download::download),
        )
        .route(
            "/files/{id}",
            web::head().to(crate::files::download::download),
        )
        .route("/api/info", web::get().to(info))
        .route("/api/login", web::post().to(login))
        .route("/api/qr.svg", web::get().to(qr_svg))
        .route("/{path:.*}", web::get().to(crate::assets::serve));
}

/// An HTTP error with the same `{"code","message"}` body as the `error` event.
pub fn reject(status: StatusCode, rejection: &Rejection) -> HttpResponse {
    HttpResponse::build(status).json(rejection.body())
}

pub fn refuse(refusal: Refusal) -> HttpResponse {
    reject(refusal.status, &refusal.rejection)
}

/// The HTTP status of a refusal from the writer.
fn status_of(rejection: &Rejection) -> StatusCode {
    match rejection.code {
        Code::Forbidden | Code::Blocked => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Code::EmptyMessage | Code::MessageTooLong | Code::NameTooLong | Code::BadRequest => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The header that carries the author key (or operator secret) of an edit
/// or a deletion over HTTP.
pub const KEY_HEADER: &str = "lanboard-key";

/// Reads a request body of at most `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, HttpResponse> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            reject(
                StatusCode::BAD_REQUEST,
                &Rejection::new(Code::BadRequest, "the request body could not be read"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                &Rejection::new(
                    Code::TooLarge,
                    format!("the body is larger than {limit} bytes"),
                ),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a request body of at most `limit` bytes that must be JSON.
async fn read_json(payload: web::Payload, limit: usize) -> Result<serde_json::Value, HttpResponse> {
    let body = read_body(payload, limit).await?;
    serde_json::from_slice(&body).map_err(|error| {
        reject(
            StatusCode::BAD_REQUEST,
            &Rejection::new(Code::BadJson, format!("the body is not JSON: {error}")),
        )
    })
}

/// The remote address, for the per-address limits.
pub fn peer_ip(request: &HttpRequest) -> Option<std::net::IpAddr> {
    request.peer_addr().map(|a| a.ip())
}

/// The remote address and port, for the log.
pub fn peer(request: &HttpRequest) -> String {
    request
        .peer_addr()
        .map_or_else(|| "client".to_owned(), |a| a.to_string())
}

/// Runs the checks every API request passes: Origin, then passphrase.
pub fn admit(request: &HttpRequest, guard: &Guard) -> Result<(), Refusal> {
    guard.check_origin(request.headers())?;
    guard.check_auth(request.headers(), peer_ip(request))
}

/// `GET /ws` without the WebSocket upgrade headers (upgrades never reach
/// the routes: see `ws/upgrade.rs`).
async fn not_upgraded() -> HttpResponse {
    reject(
        StatusCode::BAD_REQUEST,
        &Rejection::new(
            Code::BadRequest,
            "/ws is a WebSocket: connect with Upgrade: websocket",
        ),
    )
}

#[derive(Deserialize)]
struct ListQuery {
    since: Option<u64>,
    before: Option<u64>,
    around: Option<u64>,
    limit: Option<usize>,
}

/// What `GET /api/messages` was asked for.
enum Listing {
    Latest,
    After(u64),
    Before(u64),
    Around(u64),
}

impl ListQuery {
    /// The listing asked for, or `None` for a query no listing answers:
    /// `around` with `since` or `before`, an `around` that is no id, a limit
    /// out of range.
    fn listing(&self) -> Option<Listing> {
        if self.limit.is_some_and(|l| !(1..=MAX_PAGE).contains(&l)) {
            return None;
        }
        match (self.since, self.before, self.around) {
            (_, _, Some(0)) => None,
            (None, None, Some(id)) => Some(Listing::Around(id)),
            (_, _, Some(_)) => None,
            (Some(since), _, None) => Some(Listing::After(since)),
            (None, Some(before), None) => Some(Listing::Before(before)),
            (None, None, None) => Some(Listing::Latest),
        }
    }
}

async fn list_messages(
    request: HttpRequest,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = admit(&request, &state.guard) {
        return refuse(refusal);
    }
    let (listing, limit) = match query.as_ref().map(|q| (q.listing(), q.limit)) {
        Ok((Some(listing), limit)) => (listing, limit),
        _ => {
            return reject(
                StatusCode::BAD_REQUEST,
                &Rejection::new(
                    Code::BadRequest,
                    format!(
                        "since, before and around are message ids, and around goes alone; \
                         limit is 1..={MAX_PAGE}"
                    ),
                ),
            )
        }
    };
    let board = state.board.clone();
    let history = board.config().history.min(MAX_PAGE);
    let page = web::block(move || {
        let one_way = match listing {
            Listing::After(since) => board.after(since, limit.unwrap_or(MAX_PAGE)),
            Listing::Before(before) => board.before(before, limit.unwrap_or(history)),
            Listing::Latest => board.latest(limit.unwrap_or(history)),
            // `Lanboard-More` says, as for `before`, whether older ones are left.
            Listing::Around(id) => {
                return board
                    .around(id, limit.unwrap_or(history))
                    .map(|around| (around.page, around.older, Some(around.newer)))
            }
        };
        one_way.map(|(page, more)| (page, more, None))
    })
    .await;
    let flag = |more: bool| if more { "true" } else { "false" };
    match page {
        Ok(Ok((page, more, newer))) => {
            let mut response = HttpResponse::Ok();
            response
                .content_type("application/json")
                .insert_header((protocol::MORE_HEADER, flag(more)));
            if let Some(newer) = newer {
                response.insert_header((protocol::NEWER_HEADER, flag(newer)));
            }
            response.body(protocol::json_array(page.iter().map(|e| e.json())))
        }
        Ok(Err(error)) => {
            log::error!("reading messages failed: {error}");
            reject(
                StatusCode::SERVICE_UNAVAILABLE,
                &Rejection::new(Code::StorageError, "messages could not be read"),
            )
        }
        Err(_) => reject(
            StatusCode::SERVICE_UNAVAILABLE,
            &Rejection::new(Code::Unavailable, "the board is shutting down"),
        ),
    }
}

async fn post_message(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = admit(&request, &state.guard) {
        return refuse(refusal);
    }
    if let Err(refusal) = state.guard.allow_post(peer_ip(&request)) {
        return refuse(refusal);
    }
    let value = match read_json(payload, state.session.max_frame_bytes).await {
        Ok(value) => value,
        Err(response) => return response,
    };
    let draft = match Draft::parse(&value, state.session.limits) {
        Ok(draft) => draft,
        Err(rejection) => {
            log::info!(
                "{}: rejected POST ({}): {}",
                peer(&request),
                rejection.code.as_str(),
                rejection.message
            );
            return reject(StatusCode::BAD_REQUEST, &rejection);
        }
    };
    match state
        .writer
        .post(draft.with_sender(peer_ip(&request)))
        .await
    {
        Ok(Appended::New(message)) => HttpResponse::Created().json(message),
        // A resend of a message already stored (same cid): the original, not a new one.
        Ok(Appended::Repeat(message)) => HttpResponse::Ok().json(message),
        Err(rejection) => reject(status_of(&rejection), &rejection),
    }
}

/// `PATCH /api/messages/<id>` with `{"message": "..."}` and `Lanboard-Key`.
async fn edit_message(
    request: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = admit(&request, &state.guard) {
        return refuse(refusal);
    }
    if let Err(refusal) = state.guard.allow_post(peer_ip(&request)) {
        return refuse(refusal);
    }
    let value = match read_json(payload, state.session.max_frame_bytes).await {
        Ok(value) => value,
        Err(response) => return response,
    };
    let (id, key) = match id_and_key(&request, &id) {
        Ok(found) => found,
        Err(rejection) => return reject(StatusCode::BAD_REQUEST, &rejection),
    };
    let message = match protocol::edited_text(&value, state.session.limits) {
        Ok(message) => message,
        Err(rejection) => return reject(StatusCode::BAD_REQUEST, &rejection),
    };
    let op = Op::Edit { id, message, key };
    match state
        .writer
        .submit_keyed(op, &state.guard, peer_ip(&request))
        .await
    {
        Ok(done) => HttpResponse::Ok().json(writer::ack_data(&done)),
        Err(rejection) => reject(status_of(&rejection), &rejection),
    }
}

/// `DELETE /api/messages/<id>` with `Lanboard-Key`.
async fn delete_message(
    request: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = admit(&request, &state.guard) {
        return refuse(refusal);
    }
    if let Err(refusal) = state.guard.allow_post(peer_ip(&request)) {
        return refuse(refusal);
    }
    let (id, key) = match id_and_key(&request, &id) {
        Ok(found) => found,
        Err(rejection) => return reject(StatusCode::BAD_REQUEST, &rejection),
    };
    match state
        .writer
        .submit_keyed(Op::Delete { id, key }, &state.guard, peer_ip(&request))
        .await
    {
        Ok(_) => HttpResponse::NoContent().finish(),
        Err(rejection) => reject(status_of(&rejection), &rejection),
    }
}

/// The message id in the path and the key in `Lanboard-Key`.
fn id_and_key(request: &HttpRequest, id: &str) -> Result<(u64, String), Rejection> {
    let id = match id.parse::<u64>() {
        Ok(id) if id > 0 => id,
        _ => {
            return Err(Rejection::new(
                Code::BadRequest,
                "the path must end in a message id",
            ))
        }
    };
    match request
        .headers()
        .get(KEY_HEADER)
        .and_then(|key| key.to_str().ok())
    {
        Some(key) if protocol::is_key(key) => Ok((id, key.to_owned())),
        _ => Err(Rejection::new(
            Code::BadRequest,
            format!(
                "send the author key (or the operator secret) in the {KEY_HEADER} header: \
                 {} to {} printable ASCII characters",
                protocol::KEY_CHARS.start(),
                protocol::KEY_CHARS.end()
            ),
        )),
    }
}

#[derive(Deserialize)]
struct Login {
    password: String,
}

/// Checks the passphrase and hands the browser its login cookie, which the
/// WebSocket upgrade and the API then accept (browsers cannot set headers
/// on a WebSocket).
async fn login(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = state.guard.check_origin(request.headers()) {
        return refuse(refusal);
    }
    let body = match read_body(payload, 4096).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(login) = serde_json::from_slice::<Login>(&body) else {
        return reject(
            StatusCode::BAD_REQUEST,
            &Rejection::new(Code::BadRequest, "send {\"password\": \"...\"}"),
        );
    };
    // Wrong guesses count against the address's budget in the guard, the
    // same budget as the API's and the upgrade's passphrase checks.
    match state.guard.login(&login.password, peer_ip(&request)) {
        Ok(Some(cookie)) => HttpResponse::NoContent().cookie(cookie).finish(),
        Ok(None) => HttpResponse::NoContent().finish(),
        Err(refusal) => {
            if refusal.status == StatusCode::UNAUTHORIZED {
                log::info!("{}: wrong passphrase", peer(&request));
            }
            refuse(refusal)
        }
    }
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
    before: Option<u64>,
    limit: Option<usize>,
}

/// Results a search answers with when it is not asked for a number.
const SEARCH_PAGE: usize = 20;
/// The most results one search answers with.
const MAX_SEARCH_PAGE: usize = 100;

async fn search(
    request: HttpRequest,
    query: Result<web::Query<SearchQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = admit(&request, &state.guard) {
        return refuse(refusal);
    }
    let bad = |message: String| {
        reject(
            StatusCode::BAD_REQUEST,
            &Rejection::new(Code::BadRequest, message),
        )
    };
    let (text, before, limit) = match query {
        Ok(web::Query(SearchQuery {
            q: Some(text),
            before,
            limit,
        })) if limit.is_none_or(|l| (1..=MAX_SEARCH_PAGE).contains(&l)) => {
            (text, before, limit.unwrap_or(SEARCH_PAGE))
        }
        _ => {
            return bad(format!(
                "q is what to search for; before is a message id; limit is 1..={MAX_SEARCH_PAGE}"
            ))
        }
    };
    let query = match Query::parse(&text) {
        Ok(query) => query,
        Err(error) => return bad(error.to_string()),
    };
    let board = state.board.clone();
    let found = web::block(move || board.search(&query, before.unwrap_or(u64::MAX), limit)).await;
    match found {
        Ok(Ok((hits, more))) => HttpResponse::Ok()
            .content_type("application/json")
            .body(format!(
                "{{\"results\":{},\"more\":{more}}}",
                protocol::json_array(hits.iter().map(String::as_str))
            )),
        Ok(Err(error)) => {
            log::error!("searching failed: {error}");
            reject(
                StatusCode::SERVICE_UNAVAILABLE,
                &Rejection::new(Code::StorageError, "the search could not be run"),
            )
        }
        Err(_) => reject(
            StatusCode::SERVICE_UNAVAILABLE,
            &Rejection::new(Code::Unavailable, "the board is shutting down"),
        ),
    }
}

async fn info(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = admit(&request, &state.guard) {
        return refuse(refusal);
    }
    HttpResponse::Ok().json(serde_json::json!({
        "name": "lanboard",
        "version": env!("CARGO_PKG_VERSION"),
        "urls": state.urls,
        "online": state.board.online(),
        "password": state.guard.has_password(),
        "limits": {
            "max_message_chars": state.session.limits.max_message_chars,
            "max_name_chars": state.session.limits.max_name_chars,
            "max_file_bytes": state.files.max_file_bytes,
            "max_files_bytes": state.files.max_files_bytes,
            "max_files_per_message": protocol::MAX_FILES_PER_MESSAGE,
        },
    }))
}

async fn qr_svg(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = admit(&request, &state.guard) {
        return refuse(refusal);
    }
    let Some(url) = &state.qr_url else {
        return HttpResponse::NotFound().finish();
    };
    match crate::net::qr_svg(url) {
        Some(svg) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "image/svg+xml"))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(svg),
        None => HttpResponse::NotFound().finish(),
    }
}
