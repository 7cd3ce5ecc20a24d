//! Routes: the page, the WebSocket upgrade and the HTTP API.
//!
//! | route                    | answer                                           |
//! |--------------------------|--------------------------------------------------|
//! | `GET /`, `GET /wall`     | the page                                         |
//! | `GET /ws[?since=<id>]`   | WebSocket, protocol v1 (see `protocol.rs`)       |
//! | `GET /api/messages`      | JSON array of messages (`since`, `before`, `limit`) |
//! | `POST /api/messages`     | 201 with the stored message                      |
//! | `GET /api/info`          | the board's addresses and limits                 |
//! | `GET /api/qr.svg`        | QR code of the first LAN address                 |
//! | `GET /<file>`            | a file of the client                             |

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::board::Board;
use crate::protocol::{self, Code, Draft, Rejection, MAX_PAGE};
use crate::session::{self, SessionConfig};
use crate::writer::Writer;

/// What every handler shares.
pub struct AppState {
    pub board: Board,
    pub writer: Writer,
    pub session: SessionConfig,
    /// Addresses to share, for `/api/info` and the QR code.
    pub urls: Vec<String>,
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/ws", web::get().to(upgrade))
        .route("/api/messages", web::get().to(list_messages))
        .route("/api/messages", web::post().to(post_message))
        .route("/api/info", web::get().to(info))
        .route("/api/qr.svg", web::get().to(qr_svg))
        .route("/{path:.*}", web::get().to(crate::assets::serve));
}

/// An HTTP error with the same `{"code","message"}` body as the `error` event.
fn reject(status: StatusCode, rejection: &Rejection) -> HttpResponse {
    HttpResponse::build(status).json(rejection.body())
}

#[derive(Deserialize)]
struct ResumeQuery {
    since: Option<u64>,
}

async fn upgrade(
    request: HttpRequest,
    body: web::Payload,
    query: Result<web::Query<ResumeQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let Ok(query) = query else {
        return Ok(reject(
            StatusCode::BAD_REQUEST,
            &Rejection::new(Code::BadRequest, "since must be a message id (an integer)"),
        ));
    };
    let board = state.board.clone();
    let since = query.since;
    // Subscribing may read the store when the client missed many messages.
    let (subscription, welcome) = match web::block(move || board.subscribe(since)).await? {
        Ok(joined) => joined,
        Err(error) => {
            log::error!("could not read history for a new connection: {error}");
            return Ok(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                &Rejection::new(Code::StorageError, "history could not be read"),
            ));
        }
    };
    let (response, ws_session, stream) = actix_ws::handle(&request, body)?;
    let peer = request
        .peer_addr()
        .map_or_else(|| "client".to_owned(), |a| a.to_string());
    actix_web::rt::spawn(session::run(session::Connection {
        session: ws_session,
        stream,
        subscription,
        welcome,
        board: state.board.clone(),
        writer: state.writer.clone(),
        config: state.session,
        peer,
    }));
    Ok(response)
}

#[derive(Deserialize)]
struct ListQuery {
    since: Option<u64>,
    before: Option<u64>,
    limit: Option<usize>,
}

async fn list_messages(
    query: Result<web::Query<ListQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let query = match query {
        Ok(query) if query.limit.is_none_or(|l| (1..=MAX_PAGE).contains(&l)) => query,
        _ => {
            return reject(
                StatusCode::BAD_REQUEST,
                &Rejection::new(
                    Code::BadRequest,
                    format!("since and before are message ids; limit is 1..={MAX_PAGE}"),
                ),
            )
        }
    };
    let board = state.board.clone();
    let history = board.config().history.min(MAX_PAGE);
    let page = web::block(move || match (query.since, query.before) {
        (Some(since), _) => board.after(since, query.limit.unwrap_or(MAX_PAGE)),
        (None, Some(before)) => board
            .before(before, query.limit.unwrap_or(history))
            .map(|(page, _)| page),
        (None, None) => board.latest(query.limit.unwrap_or(history)),
    })
    .await;
    match page {
        Ok(Ok(page)) => HttpResponse::Ok()
            .content_type("application/json")
            .body(protocol::json_array(page.iter().map(|e| e.json()))),
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
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            return reject(
                StatusCode::BAD_REQUEST,
                &Rejection::new(Code::BadJson, format!("the body is not JSON: {error}")),
            )
        }
    };
    let draft = match Draft::parse(&value, state.session.limits) {
        Ok(draft) => draft,
        Err(rejection) => {
            log::info!(
                "{}: rejected POST ({}): {}",
                request
                    .peer_addr()
                    .map_or_else(String::new, |a| a.to_string()),
                rejection.code.as_str(),
                rejection.message
            );
            return reject(StatusCode::BAD_REQUEST, &rejection);
        }
    };
    match state.writer.post(draft).await {
        Ok((message, _)) => HttpResponse::Created().json(message),
        Err(rejection) => reject(StatusCode::SERVICE_UNAVAILABLE, &rejection),
    }
}

async fn info(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "name": "lanboard",
        "version": env!("CARGO_PKG_VERSION"),
        "urls": state.urls,
        "online": state.board.online(),
        "limits": {
            "max_message_chars": state.session.limits.max_message_chars,
            "max_name_chars": state.session.limits.max_name_chars,
        },
    }))
}

async fn qr_svg(state: web::Data<AppState>) -> HttpResponse {
    let Some(url) = state.urls.first() else {
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
