//! One WebSocket connection, from upgrade to close.
//!
//! The connection task owns its socket (`ws.rs`) and is one `select!` over
//! four things: frames the board queued for this connection, replies to this
//! client's own requests (in the order it sent them), messages from the
//! client, and the heartbeat tick. Board frames are written straight from
//! the board's shared bytes. The client's posts go to the writer and are
//! answered when committed; several can be in flight at once, so one sender
//! is not held to one commit per round trip.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::ws::{CloseCode, CloseReason};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::Notify;

use crate::board::{Board, Subscription};
use crate::guard::{self, Permit, Rate, TokenBucket};
use crate::protocol::{self, Action, Code, Limits, Rejection};
use crate::writer::Writer;
use crate::ws::{self, Incoming, ReadError, Socket};

/// Timing and size settings of every connection.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub limits: Limits,
    /// Largest frame (or reassembled fragmented message) a client may send.
    pub max_frame_bytes: usize,
    /// How often the server pings a connection.
    pub heartbeat: Duration,
    /// A connection silent for this long (no frame, no pong) is dropped. It is
    /// a few heartbeats, so one lost pong does not cut anyone off. A write
    /// that makes no progress for this long drops the connection too.
    pub client_timeout: Duration,
    /// Posts per connection; `None` is unlimited.
    pub rate: Option<Rate>,
}

/// Requests of one client being answered at once; more wait in the socket.
const MAX_IN_FLIGHT: usize = 64;
/// Board frames written per wake-up before the connection looks at its
/// client again, so a busy board neither starves reading nor is written one
/// frame per wake-up.
const WRITE_BATCH: usize = 256;

type Reply = Pin<Box<dyn Future<Output = Option<String>>>>;

/// A reply known at once, such as an error.
fn ready(frame: String) -> Reply {
    Box::pin(std::future::ready(Some(frame)))
}

/// The connections still running. A connection's task lives apart from the
/// HTTP server's own bookkeeping, so shutdown waits here for every close
/// frame to go out before the server's workers stop.
#[derive(Clone, Default)]
pub struct Sessions {
    shared: Arc<Running>,
}

#[derive(Default)]
struct Running {
    count: AtomicUsize,
    all_ended: Notify,
}

impl Sessions {
    /// Counts a connection until the returned token is dropped.
    pub fn enter(&self) -> Live {
        self.shared.count.fetch_add(1, Ordering::SeqCst);
        Live {
            shared: self.shared.clone(),
        }
    }

    /// Completes once no connection is running.
    pub async fn ended(&self) {
        loop {
            let notified = self.shared.all_ended.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a last connection
            // ending in between still wakes this.
            notified.as_mut().enable();
            if self.shared.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A running connection, counted in [`Sessions`] until dropped.
pub struct Live {
    shared: Arc<Running>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.shared.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.all_ended.notify_waiters();
        }
    }
}

/// Everything a connection needs, handed over by the upgrade.
pub struct Connection {
    pub socket: Socket,
    pub subscription: Subscription,
    /// The first frames: `messages-available` (after `board-reset` when the
    /// client resumed from a history that is gone).
    pub welcome: Vec<String>,
    pub board: Board,
    pub writer: Writer,
    pub config: SessionConfig,
    pub peer: String,
    /// The connection's place in its address's count, freed when it ends.
    pub permit: Permit,
    /// Counts the connection as running until its close frame is out.
    pub live: Live,
}

/// How a connection ended, for the close frame and the log.
enum End {
    ClientLeft(Option<CloseReason>),
    Closed(CloseReason),
    Gone,
}

fn reason(code: CloseCode, description: &str) -> End {
    End::Closed(ws::close_reason(code, description))
}

pub async fn run(connection: Connection) {
    let Connection {
        mut socket,
        mut subscription,
        welcome,
        board,
        writer,
        config,
        peer,
        permit,
        live,
    } = connection;
    let mut bucket = config.rate.map(TokenBucket::new);
    log::info!("{peer} connected ({} online)", board.online());
    let mut replies: FuturesOrdered<Reply> = FuturesOrdered::new();
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    let mut last_heard = Instant::now();
    let deadline = config.client_timeout;

    let end = 'connection: {
        let welcome: Vec<Bytes> = welcome.into_iter().map(ws::text).collect();
        if !send(&mut socket, &welcome, deadline).await {
            break 'connection End::Gone;
        }
        // The history frame can be tens of KiB: an idle connection must not
        // keep it for the rest of its life.
        drop(welcome);
        loop {
            tokio::select! {
                received = subscription.frames.recv() => {
                    let Some(first) = received else {
                        break 'connection if board.is_closed() {
                            reason(CloseCode::Away, "the board is shutting down")
                        } else {
                            reason(CloseCode::Again, "too slow to keep up; reconnect with ?since=")
                        };
                    };
                    // Whatever else has queued up goes out in the same
                    // vectored write: the frames are the board's own shared
                    // bytes, so a batch costs no copy and no buffer here.
                    let mut batch = vec![first];
                    let mut frames = batch[0].len();
                    while frames < WRITE_BATCH {
                        let Ok(item) = subscription.frames.try_recv() else { break };
                        frames += item.len();
                        batch.push(item);
                    }
                    // One deadline covers the whole batch: timing each
                    // frame would read the clock once per delivery.
                    if !send(&mut socket, batch.iter().flat_map(|item| item.iter()), deadline).await {
                        break 'connection End::Gone;
                    }
                    for item in &batch {
                        subscription.written(item);
                    }
                }
                Some(reply) = replies.next(), if !replies.is_empty() => {
                    if let Some(frame) = reply {
                        if !send(&mut socket, [&ws::text(frame)], deadline).await {
                            break 'connection End::Gone;
                        }
                    }
                }
                message = socket.next(), if replies.len() < MAX_IN_FLIGHT => {
                    last_heard = Instant::now();
                    match message {
                        Ok(Incoming::Text(text)) => {
                            replies.push_back(answer(&text, &board, &writer, &config, &peer, bucket.as_mut()));
                        }
                        Ok(Incoming::Binary) => {
                            let rejection = Rejection::new(
                                Code::BadRequest,
                                "binary frames are not part of the protocol; send JSON text",
                            );
                            log::info!("{peer}: rejected a binary frame");
                            replies.push_back(ready(protocol::error_frame(&rejection, None)));
                        }
                        Ok(Incoming::Ping(payload)) => {
                            if !send(&mut socket, [&ws::pong(payload)], deadline).await {
                                break 'connection End::Gone;
                            }
                        }
                        Ok(Incoming::Pong) => {}
                        Ok(Incoming::Close(reason)) => break 'connection End::ClientLeft(reason),
                        Err(ReadError::Gone) => break 'connection End::Gone,
                        Err(ReadError::Broken(reason)) => {
                            log::info!(
                                "{peer}: protocol error: {}",
                                reason.description.as_deref().unwrap_or("")
                            );
                            break 'connection End::Closed(reason);
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > config.client_timeout {
                        log::info!("{peer}: no answer to pings for {:?}; dropping", config.client_timeout);
                        break 'connection End::Gone;
                    }
                    if !send(&mut socket, [&ws::ping()], deadline).await {
                        break 'connection End::Gone;
                    }
                }
            }
        }
    };
    drop(subscription);
    drop(permit);
    // A close frame is owed to a client still there; one that vanished
    // needs none.
    let (close, reply_expected) = match end {
        // Answer the client's close with its own code, as RFC 6455 asks.
        End::ClientLeft(reason) => (
            Some(reason.map(|r| CloseReason {
                code: r.code,
                description: None,
            })),
            false,
        ),
        End::Closed(reason) => {
            log::info!(
                "{peer}: closing ({})",
                reason.description.as_deref().unwrap_or("")
            );
            (Some(Some(reason)), true)
        }
        End::Gone => (None, false),
    };
    if let Some(reason) = close {
        // Bounded: a client that does not answer is simply dropped.
        let _ = tokio::time::timeout(CLOSE_DEADLINE, async {
            if socket.close(reason).await.is_ok() && reply_expected {
                // The client answers with its own close frame once it has
                // read everything before ours. Dropping the connection
                // sooner would make its kernel reset it and throw away
                // what the client has not read yet.
                while let Ok(message) = socket.next().await {
                    if matches!(message, Incoming::Close(_)) {
                        break;
                    }
                }
            }
        })
        .await;
    }
    log::info!("{peer} disconnected ({} online)", board.online());
    drop(live);
}

/// How long the closing handshake may take: our close frame going out
/// after whatever was queued before it, and the client's answer.
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);

/// Writes frames; false when the client is gone or has not taken any data
/// for `timeout` (a client that stopped reading must not hold its task and
/// queue forever).
async fn send<'a>(
    socket: &mut Socket,
    frames: impl IntoIterator<Item = &'a Bytes>,
    timeout: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(timeout, socket.write(frames)).await,
        Ok(Ok(()))
    )
}

/// Answers one text frame. The answer is a future so that posts wait for
/// their commit without holding up the connection's other work.
fn answer(
    text: &str,
    board: &Board,
    writer: &Writer,
    config: &SessionConfig,
    peer: &str,
    bucket: Option<&mut TokenBucket>,
) -> Reply {
    let request = match protocol::parse_request(text, config.limits) {
        Ok(request) => request,
        Err((ack, rejection)) => {
            log::info!(
                "{peer}: rejected ({}): {}",
                rejection.code.as_str(),
                rejection.message
            );
            return ready(protocol::error_frame(&rejection, ack));
        }
    };
    let ack = request.ack;
    match request.action {
        Action::AddMessage(draft) => {
            if let (Some(bucket), Some(rate)) = (bucket, config.rate) {
                if !bucket.try_take(Instant::now()) {
                    let refusal = guard::rate_limited(rate);
                    log::info!("{peer}: rejected (rate-limited)");
                    return ready(protocol::error_frame(&refusal.rejection, ack));
                }
            }
            let writer = writer.clone();
            Box::pin(async move {
                match (writer.post(draft).await, ack) {
                    (Ok(stored), Some(ack)) => Some(protocol::ack_frame(ack, stored.message())),
                    (Ok(_), None) => None,
                    (Err(rejection), ack) => Some(protocol::error_frame(&rejection, ack)),
                }
            })
        }
        Action::LoadOlder { before, limit } => {
            let board = board.clone();
            Box::pin(async move {
                match actix_web::web::block(move || board.before(before, limit)).await {
                    Ok(Ok((page, more))) => Some(protocol::older_messages_frame(
                        page.iter().map(|e| e.json()),
                        more,
                        ack,
                    )),
                    Ok(Err(error)) => {
                        log::error!("reading older messages failed: {error}");
                        Some(protocol::error_frame(
                            &Rejection::new(Code::StorageError, "older messages could not be read"),
                            ack,
                        ))
                    }
                    Err(_) => Some(protocol::error_frame(
                        &Rejection::new(Code::Unavailable, "the board is shutting down"),
                        ack,
                    )),
                }
            })
        }
    }
}
