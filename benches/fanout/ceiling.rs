//! The ceiling: the least work a server of protocol v1 can do, so that each
//! scenario shows how far lanboard is from what this machine and this
//! generator allow. It welcomes a client with an empty history, stamps each
//! `add-message` with the next id and the time without reading it, and
//! writes that one frame to every client in one global order: no storage,
//! validation, presence, limits or history.
//!
//! It is written on tokio-tungstenite, a well-kept WebSocket library, so the
//! reference shares no code with lanboard's hand-written transport. The
//! generator runs it as a child process of its own binary ([`ARG`]), pinned
//! like lanboard; the self-check runs it in-process.

use std::fmt::Write as _;
use std::future::Future;
use std::net::Ipv4Addr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::client::{self, Phase, Plan, Shared};
use crate::dialect::{self, Dialect, Event, Stamp};

/// The argument that makes the bench binary serve as the ceiling.
pub const ARG: &str = "--ceiling-server";

/// What a new client receives: an empty history, all the bench's client needs.
const WELCOME: &str = r#"{"event":"messages-available","data":[]}"#;
/// How a post starts, as the bench's client writes it (event first, data last).
const ADD_MESSAGE: &str = r#"{"event":"add-message","data":"#;
/// lanboard's `protocol::MESSAGE_ADDED_PREFIX` and the id, which its
/// `Message` serialises first.
const ADDED: &str = r#"{"event":"message-added","data":{"id":"#;

/// Read buffer of one connection. tungstenite's default, 128 KiB, is zeroed
/// on the first read and so resident for every idle client; its docs advise
/// 4 KiB for many connections, and a client's burst of posts is smaller.
const READ_BUFFER: usize = 4 * 1024;

/// How long the self-check's exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the ceiling on a free loopback port until killed, with one runtime
/// thread per CPU this process may use (the bench pins it to the server core).
pub fn main() -> ExitCode {
    let workers = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    // On one CPU (as the bench pins it) tokio's current-thread scheduler
    // is the lean one: its run queue is one FIFO, so every client takes its
    // turn, where the multi-thread scheduler with one worker (a LIFO slot, a
    // bounded local queue spilling into a global one) let senders run ahead
    // of the other clients. Scenario 3 on the server core of a busy machine,
    // 6,000,000 deliveries: 1.40 to 1.63 CPU s and a p99 of 265 to 550 ms
    // in four runs, against 1.80 and 2.15 CPU s and 586 and 676 ms in two.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ceiling: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("ceiling: cannot listen on 127.0.0.1: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            // The bench reads the port from this line, as from lanboard's banner.
            Ok(addr) => println!("ceiling on http://{addr} with {workers} worker(s)"),
            Err(e) => {
                eprintln!("ceiling: no local address: {e}");
                return ExitCode::FAILURE;
            }
        }
        serve(listener, std::future::pending()).await;
        ExitCode::SUCCESS
    })
}

/// Accepts connections on `listener`, each served by its own task, until
/// `shutdown` completes.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let hub = Arc::new(Hub::default());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(session(stream, hub.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    eprintln!("ceiling: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

/// Frames a client may fall behind the newest before it is cut off, as
/// lanboard cuts off a connection with 16,384 items queued (its
/// `BoardConfig::queue`).
const BEHIND: usize = 16_384;

/// The last id given, and the ring every client reads its frames from. A
/// ring shared by all (tokio's broadcast channel) rather than a queue per
/// client makes a post cost the same whatever the number of clients: it
/// wakes only the clients waiting for it, and each client takes what
/// arrived when it next runs. Measured in scenario 3, alternating runs on a
/// busy machine: 322 to 347 ns of server CPU per delivery, against 450 to
/// 480 with an unbounded tokio mpsc queue per client. One mutex around both
/// makes the id order the ring's order; it is a sync mutex because it is
/// never held across an `.await`.
struct Hub {
    state: Mutex<State>,
}

struct State {
    last_id: u64,
    frames: broadcast::Sender<Utf8Bytes>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            state: Mutex::new(State {
                last_id: 0,
                frames: broadcast::Sender::new(BEHIND),
            }),
        }
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock can panic halfway through a change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new client's frames, from the next post on.
    fn join(&self) -> broadcast::Receiver<Utf8Bytes> {
        self.lock().frames.subscribe()
    }

    /// Gives the post in `payload` the next id and puts its frame in the
    /// ring. Anything but a post is ignored.
    fn publish(&self, payload: &str) {
        let Some(fields) = posted_fields(payload) else {
            return;
        };
        let mut state = self.lock();
        state.last_id += 1;
        let frame = Utf8Bytes::from(added_frame(state.last_id, fields, now_ms()));
        // Sending fails only when no client is left to read it.
        let _ = state.frames.send(frame);
    }
}

/// The fields of a post's data object, between its braces, taken as they
/// are: `"name":"...","message":"..."` from the bench's client. `None` for
/// anything that is not an `add-message` with an object as its data.
fn posted_fields(payload: &str) -> Option<&str> {
    let data = payload.strip_prefix(ADD_MESSAGE)?.strip_suffix('}')?.trim();
    Some(data.strip_prefix('{')?.strip_suffix('}')?.trim())
}

/// `{"event":"message-added","data":{"id":ID,FIELDS,"time":TIME}}`: byte for
/// byte what lanboard sends for the same post (its `Message` serialises id,
/// name, message and time in that order).
fn added_frame(id: u64, fields: &str, time: u64) -> String {
    let mut frame = String::with_capacity(ADDED.len() + fields.len() + 48);
    frame.push_str(ADDED);
    // Writing into a String cannot fail.
    let _ = write!(frame, "{id}");
    if !fields.is_empty() {
        frame.push(',');
        frame.push_str(fields);
    }
    let _ = write!(frame, r#","time":{time}}}}}"#);
    frame
}

/// Milliseconds since the Unix epoch, as lanboard stamps a message.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Takes the upgrade on `/ws` only, where lanboard takes it.
struct OnlyWs;

impl Callback for OnlyWs {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        if request.uri().path() == "/ws" {
            return Ok(response);
        }
        let mut refusal = ErrorResponse::new(Some("the board is at /ws".into()));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        Err(refusal)
    }
}

/// Why a session ended early.
type Failure = Box<dyn std::error::Error + Send + Sync>;

/// One client from upgrade to close. An error only means the client went
/// away (the bench's client reports its own side), so it is dropped.
async fn session(stream: TcpStream, hub: Arc<Hub>) {
    let _ = run_session(stream, &hub).await;
}

async fn run_session(stream: TcpStream, hub: &Hub) -> Result<(), Failure> {
    // Frames go out as soon as they are flushed, as lanboard's do.
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let mut socket =
        tokio_tungstenite::accept_hdr_async_with_config(stream, OnlyWs, Some(config)).await?;
    let mut frames = hub.join();
    socket
        .send(Message::Text(Utf8Bytes::from_static(WELCOME)))
        .await?;
    loop {
        tokio::select! {
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(payload))) => hub.publish(&payload),
                // tungstenite answers pings and close frames itself; the
                // stream ends once the close is done.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            frame = frames.recv() => {
                let mut next = match frame {
                    Ok(frame) => Some(frame),
                    Err(RecvError::Lagged(behind)) => return Err(too_slow(behind)),
                    // The hub outlives every session.
                    Err(RecvError::Closed) => return Ok(()),
                };
                // Everything that arrived goes out in one write.
                while let Some(frame) = next {
                    socket.feed(Message::Text(frame)).await?;
                    next = match frames.try_recv() {
                        Ok(frame) => Some(frame),
                        Err(TryRecvError::Lagged(behind)) => return Err(too_slow(behind)),
                        Err(TryRecvError::Empty | TryRecvError::Closed) => None,
                    };
                }
                socket.flush().await?;
            }
        }
    }
}

/// Ends the session of a client that fell more than [`BEHIND`] frames
/// behind, saying so in the log in lanboard's words, which the bench notes.
fn too_slow(behind: u64) -> Failure {
    eprintln!(
        "ceiling: a client is too slow to keep up ({behind} frames behind); disconnecting it"
    );
    format!("{behind} frames behind").into()
}

/// Checks the frames against lanboard's own and the bench's reading of
/// them, the hub's order, and a short exchange with the bench's client on a
/// ceiling served in-process; panics on the first failure.
pub fn self_check() {
    let stamp = Stamp {
        sender: 3,
        seq: 41,
        sent_ns: 987_654_321,
    };
    let mut text = Vec::new();
    dialect::write_text(stamp, &mut text);
    let mut post = Vec::new();
    Dialect::Lanboard.add_message(&text, b"", &mut post);
    let post = String::from_utf8(post).expect("generated posts are ASCII");
    let text = String::from_utf8(text).expect("generated texts are ASCII");

    let fields = posted_fields(&post).expect("a generated post has fields");
    let frame = added_frame(7, fields, 1_700_000_000_123);
    let lanboards = lanboard::protocol::message_added_frame(&lanboard::protocol::Message {
        id: 7,
        name: dialect::NAME.to_owned(),
        message: text,
        time: 1_700_000_000_123,
        edited: None,
        files: Vec::new(),
    });
    assert_eq!(frame, lanboards, "the ceiling's frame is lanboard's");
    assert_eq!(
        Dialect::Lanboard.classify(frame.as_bytes()),
        Event::Added { id: Some(7), stamp }
    );
    assert_eq!(
        Dialect::Lanboard.classify(WELCOME.as_bytes()),
        Event::Welcome
    );
    assert_eq!(
        added_frame(1, "", 5),
        r#"{"event":"message-added","data":{"id":1,"time":5}}"#
    );
    assert_eq!(
        posted_fields(r#"{"event":"add-message","data":{ "name":"a" } }"#),
        Some(r#""name":"a""#)
    );
    for other in [
        r#"{"event":"load-older","data":{"before":9,"limit":5}}"#,
        r#"{"event":"add-message","data":[]}"#,
        r#"{"event":"add-message","data":{"name":"a""#,
        "",
    ] {
        assert_eq!(posted_fields(other), None, "{other}");
    }

    // Ids rise by one per post, and every client gets the same frames.
    let hub = Hub::default();
    let mut first = hub.join();
    let mut second = hub.join();
    hub.publish(&post);
    hub.publish("not a post");
    hub.publish(&post);
    let ids = |frames: &mut broadcast::Receiver<Utf8Bytes>| {
        let mut got = Vec::new();
        while let Ok(frame) = frames.try_recv() {
            match Dialect::Lanboard.classify(frame.as_bytes()) {
                Event::Added { id: Some(id), .. } => got.push(id),
                event => panic!("the hub queued {event:?}"),
            }
        }
        got
    };
    assert_eq!(ids(&mut first), [1, 2]);
    assert_eq!(ids(&mut second), [1, 2]);
    let mut third = hub.join();
    hub.publish(&post);
    assert_eq!(ids(&mut third), [3], "a client joins at the newest post");
    for _ in 0..BEHIND {
        hub.publish(&post);
    }
    assert!(
        matches!(first.try_recv(), Err(TryRecvError::Lagged(1))),
        "a client too far behind is told so"
    );

    if let Err(why) = exchange() {
        panic!("the ceiling in-process: {why}");
    }
}

/// Two clients of the bench, both sending, on a ceiling served in-process:
/// each must get every message once, in one order, with rising ids.
fn exchange() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime: {e}"))?;
    runtime.block_on(async {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| format!("listening: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, async {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        }));
        let outcome = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            let (senders, messages) = (2, 5);
            let plan = Arc::new(Plan {
                dialect: Dialect::Lanboard,
                senders,
                messages,
                window: 2,
                base: Instant::now(),
                nodes: 1,
                files: Vec::new(),
            });
            let shared = Arc::new(Shared::default());
            let (phase, watcher) = watch::channel(Phase::Go);
            // Everyone joins before anyone sends, as in a run.
            let mut sockets = Vec::new();
            for me in 0..senders {
                sockets.push(client::join(addr, Dialect::Lanboard, me + 1).await?.0);
            }
            let tasks: Vec<_> = (0..senders)
                .zip(sockets)
                .map(|(me, socket)| {
                    let task =
                        client::run(socket, me, plan.clone(), shared.clone(), watcher.clone());
                    tokio::spawn(task)
                })
                .collect();
            while shared.finished.load(Ordering::SeqCst) < tasks.len() {
                shared.progress.notified().await;
            }
            phase.send_replace(Phase::Stop);
            let mut records = Vec::new();
            for task in tasks {
                records.push(task.await.map_err(|e| e.to_string())?);
            }
            if let Some(why) = records.iter().find_map(|r| r.failure.clone()) {
                return Err(why);
            }
            let received: Vec<_> = records.iter().map(|r| &r.received).collect();
            crate::check::verify(&received, senders.into(), messages.into(), true)?;
            Ok(())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {EXCHANGE_TIMEOUT:?}")));
        // The server may have stopped on its own; then the send finds no one.
        let _ = stop.send(());
        server.await.map_err(|e| format!("the server task: {e}"))?;
        outcome
    })
}
