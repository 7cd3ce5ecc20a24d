//! One WebSocket connection, from upgrade to close.
//!
//! The connection task owns its socket (`socket.rs`) and is one `select!` over
//! four things: frames the board queued for this connection, replies to this
//! client's own requests (in the order it sent them), messages from the
//! client, and the heartbeat tick. Board frames are written straight from
//! the board's shared bytes. The client's posts go to the writer and are
//! answered when committed; several can be in flight at once, so one sender
//! is not held to one commit per round trip.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::ws::{CloseCode, CloseReason};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::Notify;

use super::socket::{close_reason, ping, pong, text, Incoming, ReadError, Socket};
use crate::board::{Board, Subscription};
use crate::guard::{self, Guard, Permit, Rate, TokenBucket};
use crate::mailbox::Taken;
use crate::protocol::{self, Action, Code, Limits, Rejection};
use crate::store::Op;
use crate::writer::{self, Writer};

/// Answers an edit, a deletion or a block: done, with the ack when asked
/// for, or refused with `error`.
fn keyed(conversation: &Conversation<'_>, op: Op, ack: Option<u64>) -> Reply {
    let writer = conversation.writer.clone();
    let guard = conversation.guard.clone();
    let (ip, peer) = (conversation.ip, conversation.peer.to_owned());
    Box::pin(async move {
        match (writer.submit_keyed(op, &guard, ip).await, ack) {
            (Ok(done), Some(ack)) => Some(protocol::ack_frame(ack, &writer::ack_data(&done))),
            (Ok(_), None) => None,
            (Err(rejection), ack) => {
                log::info!(
                    "{peer}: refused ({}): {}",
                    rejection.code.as_str(),
                    rejection.message
                );
                Some(protocol::error_frame(&rejection, ack))
            }
        }
    })
}

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
    /// Where wrong keys are counted.
    pub guard: Arc<Guard>,
    pub config: SessionConfig,
    /// The client's address: kept with its posts, and where its wrong keys count.
    pub ip: Option<IpAddr>,
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
    End::Closed(close_reason(code, description))
}

/// Runs one connection: welcome, then the conversation, then the closing
/// handshake.
pub async fn run(connection: Connection) {
    let Connection {
        mut socket,
        subscription,
        welcome,
        board,
        writer,
        guard,
        config,
        ip,
        peer,
        permit,
        live,
    } = connection;
    log::info!("{peer} connected ({} online)", board.online());
    let end = if greet(&mut socket, welcome, config.client_timeout).await {
        let mut conversation = Conversation {
            socket: &mut socket,
            subscription,
            replies: FuturesOrdered::new(),
            bucket: config.rate.map(TokenBucket::new),
            last_heard: Instant::now(),
            board: &board,
            writer: &writer,
            guard: &guard,
            config: &config,
            ip,
            peer: &peer,
        };
        conversation.run().await
    } else {
        End::Gone
    };
    // Off the board and out of the address's count before the (bounded)
    // closing handshake.
    drop(permit);
    say_goodbye(&mut socket, end, &peer).await;
    log::info!("{peer} disconnected ({} online)", board.online());
    drop(live);
}

/// Sends the first frames; false when the client is already gone.
async fn greet(socket: &mut Socket, welcome: Vec<String>, deadline: Duration) -> bool {
    // The history frame can be a MiB: it is dropped on return, so an idle
    // connection does not keep it for the rest of its life.
    let welcome: Vec<Bytes> = welcome.into_iter().map(text).collect();
    send(socket, &welcome, deadline).await
}

/// The connection's working life: board frames out, the client's requests
/// answered in order, the heartbeat.
struct Conversation<'a> {
    socket: &'a mut Socket,
    subscription: Subscription,
    /// Answers to the client's requests, in the order it sent them.
    replies: FuturesOrdered<Reply>,
    /// The client's posting budget; `None` when posts are not limited.
    bucket: Option<TokenBucket>,
    last_heard: Instant,
    board: &'a Board,
    writer: &'a Writer,
    guard: &'a Arc<Guard>,
    config: &'a SessionConfig,
    ip: Option<IpAddr>,
    peer: &'a str,
}

impl Conversation<'_> {
    /// Serves the client until the connection ends, and says how.
    async fn run(&mut self) -> End {
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        loop {
            let step = tokio::select! {
                taken = self.subscription.take(WRITE_BATCH) => self.forward(taken).await,
                Some(reply) = self.replies.next(), if !self.replies.is_empty() => {
                    self.reply(reply).await
                }
                message = self.socket.next(), if self.replies.len() < MAX_IN_FLIGHT => {
                    self.last_heard = Instant::now();
                    self.hear(message).await
                }
                _ = heartbeat.tick() => self.beat().await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Writes board frames taken from the mailbox (`None`: no more will
    /// come) in one vectored write. The frames are the board's own shared
    /// bytes, so a batch costs no copy and no buffer here.
    async fn forward(&mut self, taken: Option<Taken>) -> Result<(), End> {
        let Some(batch) = taken else {
            return Err(if self.board.is_closed() {
                reason(CloseCode::Away, "the board is shutting down")
            } else {
                reason(
                    CloseCode::Again,
                    "too slow to keep up; reconnect with ?since=",
                )
            });
        };
        // One deadline covers the whole batch: timing each frame would read
        // the clock once per delivery.
        let deadline = self.config.client_timeout;
        if !send(
            self.socket,
            batch.items.iter().flat_map(|item| item.iter()),
            deadline,
        )
        .await
        {
            return Err(End::Gone);
        }
        self.subscription.written(&batch);
        Ok(())
    }

    /// Writes the answer to one of the client's requests, if it has one.
    async fn reply(&mut self, reply: Option<String>) -> Result<(), End> {
        let Some(frame) = reply else {
            return Ok(());
        };
        if send(self.socket, [&text(frame)], self.config.client_timeout).await {
            Ok(())
        } else {
            Err(End::Gone)
        }
    }

    /// Takes one message from the client.
    async fn hear(&mut self, message: Result<Incoming, ReadError>) -> Result<(), End> {
        match message {
            Ok(Incoming::Text(text)) => {
                let reply = answer(&text, self);
                self.replies.push_back(reply);
            }
            Ok(Incoming::Binary) => {
                let rejection = Rejection::new(
                    Code::BadRequest,
                    "binary frames are not part of the protocol; send JSON text",
                );
                log::info!("{}: rejected a binary frame", self.peer);
                self.replies
                    .push_back(ready(protocol::error_frame(&rejection, None)));
            }
            Ok(Incoming::Ping(payload)) => {
                if !send(self.socket, [&pong(payload)], self.config.client_timeout).await {
                    return Err(End::Gone);
                }
            }
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Close(reason)) => return Err(End::ClientLeft(reason)),
            Err(ReadError::Gone) => return Err(End::Gone),
            Err(ReadError::Broken(reason)) => {
                log::info!(
                    "{}: protocol error: {}",
                    self.peer,
                    reason.description.as_deref().unwrap_or("")
                );
                return Err(End::Closed(reason));
            }
        }
        Ok(())
    }

    /// Pings the client, or gives up on one silent for too long.
    async fn beat(&mut self) -> Result<(), End> {
        if self.last_heard.elapsed() > self.config.client_timeout {
            log::info!(
                "{}: no answer to pings for {:?}; dropping",
                self.peer,
                self.config.client_timeout
            );
            return Err(End::Gone);
        }
        if !send(self.socket, [&ping()], self.config.client_timeout).await {
            return Err(End::Gone);
        }
        Ok(())
    }
}

/// The closing handshake: a close frame is owed to a client still there
/// (one that vanished needs none), and after a close of our own the
/// client's answer is waited for, bounded.
async fn say_goodbye(socket: &mut Socket, end: End, peer: &str) {
    let (reason, reply_expected) = match end {
        // Answer the client's close with its own code, as RFC 6455 asks.
        End::ClientLeft(reason) => (
            reason.map(|r| CloseReason {
                code: r.code,
                description: None,
            }),
            false,
        ),
        End::Closed(reason) => {
            log::info!(
                "{peer}: closing ({})",
                reason.description.as_deref().unwrap_or("")
            );
            (Some(reason), true)
        }
        End::Gone => return,
    };
    // Bounded: a client that does not answer is simply dropped.
    let _ = tokio::time::timeout(CLOSE_DEADLINE, async {
        if socket.close(reason).await.is_ok() && reply_expected {
            // The client answers with its own close frame once it has read
            // everything before ours. Dropping the connection sooner would
            // make its kernel reset it and throw away what the client has
            // not read yet.
            socket.until_close().await;
        }
    })
    .await;
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
fn answer(text: &str, conversation: &mut Conversation<'_>) -> Reply {
    let Conversation {
        board,
        writer,
        config,
        peer,
        ..
    } = *conversation;
    let bucket = conversation.bucket.as_mut();
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
    // An edit, a deletion or a block reaches every client as a post does,
    // so it draws on the same posting budget.
    let costs_a_post = !matches!(request.action, Action::LoadOlder { .. });
    if let (true, Some(bucket), Some(rate)) = (costs_a_post, bucket, config.rate) {
        if !bucket.try_take(Instant::now()) {
            let refusal = guard::rate_limited(rate);
            log::info!("{peer}: rejected (rate-limited)");
            return ready(protocol::error_frame(&refusal.rejection, ack));
        }
    }
    match request.action {
        Action::AddMessage(draft) => {
            let writer = writer.clone();
            let draft = draft.with_sender(conversation.ip);
            Box::pin(async move {
                match (writer.post(draft).await, ack) {
                    (Ok(stored), Some(ack)) => Some(protocol::ack_frame(ack, stored.message())),
                    (Ok(_), None) => None,
                    (Err(rejection), ack) => Some(protocol::error_frame(&rejection, ack)),
                }
            })
        }
        Action::EditMessage { id, message, key } => {
            keyed(conversation, Op::Edit { id, message, key }, ack)
        }
        Action::DeleteMessage { id, key } => keyed(conversation, Op::Delete { id, key }, ack),
        Action::BlockSender { id, minutes, key } => {
            keyed(conversation, Op::Block { id, minutes, key }, ack)
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
