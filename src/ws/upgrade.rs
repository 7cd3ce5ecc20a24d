//! The WebSocket upgrade on `/ws[?since=<id>[&epoch=<e>]]`: the checks an
//! upgrade request passes, the `101` answer, and the hand-over of the socket
//! to its session.
//!
//! The HTTP dispatcher passes every WebSocket upgrade request here, with its
//! raw connection, instead of to the routes in `http.rs`; that is what lets
//! a session own its socket (see `socket.rs`). A refused upgrade gets the
//! same status and `{"code","message"}` body as a refused API request.
//!
//! The connection may still owe the client the answer to a request
//! pipelined ahead of the upgrade: the HTTP layer's unwritten bytes go out
//! first, so every request is answered, in order.

use actix_codec::Framed;
use actix_http::h1;
use actix_http::ws::{hash_key, verify_handshake, HandshakeError};
use actix_http::Request;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::web;
use actix_web::HttpMessage;
use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::session;
use super::socket::{IntoStream, Socket};
use crate::guard::Refusal;
use crate::http::AppState;
use crate::protocol::Code;

/// The one path that takes WebSocket upgrades.
const PATH: &str = "/ws";

#[derive(Deserialize)]
struct ResumeQuery {
    since: Option<u64>,
    /// The `epoch` of the `messages-available` the client resumes from.
    epoch: Option<String>,
}

/// Answers one upgrade request: refused with an HTTP error, or switched to
/// a WebSocket whose session then runs on its own task.
pub async fn handle<T: IntoStream>(
    request: Request,
    framed: Framed<T, h1::Codec>,
    state: web::Data<AppState>,
) -> Result<(), actix_web::Error> {
    let parts = framed.into_parts();
    let mut io = parts.io;
    // Answers to requests pipelined ahead of this one, not yet written.
    if !parts.write_buf.is_empty() {
        io.write_all(&parts.write_buf).await?;
    }
    drop(parts.write_buf);
    let peer = request
        .peer_addr()
        .map_or_else(|| "client".to_owned(), |a| a.to_string());
    let admitted = match admit(&request, &state).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            // A 429 is logged once by the guard when it begins, not per
            // attempt: a flood of refused guesses must not flood the log.
            if refusal.status != StatusCode::TOO_MANY_REQUESTS {
                log::info!(
                    "{peer}: refused a WebSocket upgrade ({}): {}",
                    refusal.status.as_u16(),
                    refusal.rejection.message
                );
            }
            return refuse(&mut io, &refusal).await;
        }
    };
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map_or(&b""[..], |key| key.as_bytes());
    let accept = hash_key(key);
    let mut answer = Vec::with_capacity(160);
    answer.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
    );
    answer.extend_from_slice(&accept);
    answer.extend_from_slice(b"\r\n\r\n");
    io.write_all(&answer).await?;

    let Admitted {
        subscription,
        welcome,
        permit,
    } = admitted;
    actix_web::rt::spawn(session::run(session::Connection {
        socket: Socket::new(
            io.into_stream(),
            parts.read_buf,
            state.session.max_frame_bytes,
        ),
        subscription,
        welcome,
        board: state.board.clone(),
        writer: state.writer.clone(),
        guard: state.guard.clone(),
        config: state.session,
        ip: request.peer_addr().map(|a| a.ip()),
        peer,
        permit,
        live: state.sessions.enter(),
    }));
    Ok(())
}

/// What an admitted connection starts with.
struct Admitted {
    subscription: crate::board::Subscription,
    welcome: Vec<String>,
    permit: crate::guard::Permit,
}

/// Runs every check, in the order a client can fix them, then joins the
/// board.
async fn admit(request: &Request, state: &web::Data<AppState>) -> Result<Admitted, Refusal> {
    if request.path() != PATH {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            Code::BadRequest,
            "WebSocket connections are served on /ws",
        ));
    }
    if let Err(error) = verify_handshake(request.head()) {
        let status = match error {
            HandshakeError::GetMethodRequired => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        };
        return Err(Refusal::new(status, Code::BadRequest, error.to_string()));
    }
    state.guard.check_origin(request.headers())?;
    state
        .guard
        .check_auth(request.headers(), request.peer_addr().map(|a| a.ip()))?;
    let permit = state.guard.admit(request.peer_addr().map(|a| a.ip()))?;
    let query = web::Query::<ResumeQuery>::from_query(request.uri().query().unwrap_or(""))
        .map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                Code::BadRequest,
                "since must be a message id (an integer)",
            )
        })?;
    let web::Query(ResumeQuery { since, epoch }) = query;
    let board = state.board.clone();
    // Subscribing may read the store when the client missed many messages.
    let joined = web::block(move || board.subscribe(since, epoch.as_deref())).await;
    match joined {
        Ok(Ok((subscription, welcome))) => Ok(Admitted {
            subscription,
            welcome,
            permit,
        }),
        Ok(Err(error)) => {
            log::error!("could not read history for a new connection: {error}");
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::StorageError,
                "history could not be read",
            ))
        }
        Err(_) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "the board is shutting down",
        )),
    }
}

/// Writes an HTTP error response and ends the connection.
async fn refuse<T: AsyncWrite + Unpin>(
    io: &mut T,
    refusal: &Refusal,
) -> Result<(), actix_web::Error> {
    let status = refusal.status;
    let body = refusal.rejection.body().to_string();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in crate::http::SECURITY_HEADERS {
        response.push_str(name);
        response.push_str(": ");
        response.push_str(value);
        response.push_str("\r\n");
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response.push_str("allow: GET\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&body);
    io.write_all(response.as_bytes()).await?;
    io.shutdown().await?;
    Ok(())
}
