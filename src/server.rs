//! Starting and stopping a board. [`Server::build`] goes step by step: opens
//! the store the flags chose, opens the board on it with its live feed,
//! starts the writer, makes the guard, binds the socket (so `--port 0` knows
//! its port before anything is printed), claims its `--mdns` name and wires
//! the routes. [`Server::run`] then serves until a shutdown future fires (or
//! the writer thread fails).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_service::{IntoServiceFactory, ServiceFactoryExt};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App};

use crate::board::{Board, BoardConfig};
use crate::files::FilesConfig;
use crate::guard::{Guard, GuardConfig};
use crate::http::{self, AppState};
use crate::mdns::{self, Advert, MdnsError};
use crate::net::{self, ShareUrl};
use crate::search::Index;
use crate::store::{
    random_token, Access, Feed, Log, MemoryLog, RedisLog, RedisTarget, SqliteLog, StoreError,
    SyncMode,
};
use crate::writer::Writer;
use crate::ws::{SessionConfig, Sessions};

/// The HTTP/1.1 service of one worker for a connection of type `$io`: the
/// routes of `$app`, and WebSocket upgrades to `upgrade::handle`. The
/// timeouts are actix-web's defaults: 5 s for a request's head and between
/// keep-alive requests, 1 s to close. On plain TCP the head has already
/// arrived whole when this service first sees a connection (see
/// `request_head.rs`), so its head timer never fires there; it still times
/// TLS connections. (A macro: the service's type is unnameable.)
macro_rules! http_service {
    ($io:ty, $app:expr, $state:expr, $local_addr:expr, $stopping:expr) => {{
        let state: web::Data<AppState> = $state;
        let stopping: actix_server::GracefulShutdownSignal = $stopping;
        actix_http::HttpService::build()
            // At shutdown, idle keep-alive connections close at once instead
            // of holding the workers for the whole shutdown timeout.
            .graceful_shutdown_signal(move || {
                let stopping = stopping.clone();
                async move { stopping.notified().await }
            })
            .keep_alive(actix_http::KeepAlive::Timeout(Duration::from_secs(5)))
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(Duration::from_secs(1))
            // Frames are small and latency matters more than packet count:
            // without this, Nagle's algorithm meets delayed ACKs and holds
            // a frame back for tens of milliseconds.
            .tcp_nodelay(true)
            .local_addr($local_addr)
            .upgrade(actix_service::fn_service(
                move |(request, framed): (
                    actix_http::Request,
                    actix_codec::Framed<$io, actix_http::h1::Codec>,
                )| { crate::ws::upgrade::handle(request, framed, state.clone()) },
            ))
            .finish(actix_service::map_config(
                $app.into_factory()
                    .map_err(|error: actix_web::Error| error.error_response()),
                |_| actix_web::dev::AppConfig::default(),
            ))
    }};
}

/// Where the history lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    File(PathBuf),
    Memory,
    /// A board shared with other lanboard processes (`--redis`), and where
    /// this node keeps its search index (`--search-index`; by default in
    /// SQLite's temporary file, gone with the process).
    Redis {
        target: RedisTarget,
        search_index: Option<PathBuf>,
    },
}

/// Everything a server needs to start; `cli.rs` builds it from the flags, and
/// is the one place their defaults are written (`cli::default_config`).
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub history: usize,
    pub storage: Storage,
    /// How hard a commit waits for the disk.
    pub sync: SyncMode,
    pub qr: bool,
    /// The name to advertise as NAME.local (`--mdns`), already checked.
    pub mdns: Option<String>,
    pub workers: usize,
    pub session: SessionConfig,
    pub guard: GuardConfig,
    /// Upload limits and how long a file waits for a message.
    pub files: FilesConfig,
    /// PEM certificate chain and key: serve https/wss.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long open connections get to finish at shutdown.
    pub shutdown_grace: Duration,
}

/// How long open connections get to finish at shutdown (not a flag).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why the board could not start (each message names the flag or path), or
/// why it stopped by itself.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--bind {address:?} is not an IP address (try 0.0.0.0, 127.0.0.1 or ::)")]
    BadAddress { address: String },
    #[error("{flag} {reason}")]
    BadFlag { flag: &'static str, reason: String },
    #[error(
        "port {port} on {bind} is already in use; stop the other program or pick another --port"
    )]
    PortInUse { bind: IpAddr, port: u16 },
    #[error("cannot listen on {bind}:{port}: {source}")]
    Bind {
        bind: IpAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error("cannot use the TLS certificate or key: {0}")]
    Tls(String),
    #[error(transparent)]
    Mdns(#[from] MdnsError),
    #[error("cannot open the history: {0}")]
    Store(#[from] StoreError),
    #[error(
        "the writer thread stopped, so no post can be stored any more; \
         stopping the board so that it can be restarted"
    )]
    WriterStopped,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A board bound to its socket, ready to run.
pub struct Server {
    server: actix_web::dev::Server,
    log: Arc<dyn Log>,
    files: FilesConfig,
    board: Board,
    writer: Writer,
    sessions: Sessions,
    urls: Vec<ShareUrl>,
    /// The `--mdns` name, withdrawn when dropped.
    mdns: Option<Advert>,
    local_addr: SocketAddr,
    grace: Duration,
    storage: String,
    password: bool,
}

impl Server {
    /// Opens the store, the board and its feed, starts the writer, makes the
    /// guard, binds the socket, claims the `--mdns` name (which waits for its
    /// probes, about a second) and wires the routes, in that order. Must be
    /// called inside the actix runtime (`#[actix_web::main]` or
    /// `actix_web::rt::System`).
    pub fn build(config: Config) -> Result<Server, StartError> {
        let store = Store::open(&config.storage, config.sync)?;
        let storage = store.log.describe();
        let (board, feed) = store.open_board(config.history)?;
        let writer = Writer::start(store.log.clone(), board.clone(), feed);
        let guard = make_guard(&config.guard, &*store.log)?;
        // Made at the board's first start and kept in its store; only
        // `lanboard operator-link` shows it.
        store.log.operator_secret(&random_token())?;
        let listener = bind(config.bind, config.port)?;
        let local_addr = listener.local_addr()?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let lan = net::lan_ipv4_addresses();
        let mut urls = net::share_urls(scheme, config.bind, local_addr.port(), &lan);
        let tls = match &config.tls {
            Some((cert, key)) => Some(crate::tls::config(cert, key)?),
            None => None,
        };
        // Claimed once nothing else can fail to start, so that a board that
        // does not start never announces itself.
        let mdns = match &config.mdns {
            Some(name) => {
                let addresses = mdns::addresses(config.bind, &lan, &net::lan_ipv6_addresses());
                let advert = Advert::start(name, &addresses, local_addr.port(), scheme)?;
                net::add_name(&mut urls, scheme, &advert.host(), local_addr.port());
                Some(advert)
            }
            None => None,
        };
        let password = config.guard.password.is_some();

        let sessions = Sessions::default();
        let state = web::Data::new(AppState {
            board: board.clone(),
            writer,
            session: config.session,
            urls: urls.iter().map(|u| u.url.clone()).collect(),
            qr_url: net::qr_url(&urls).map(|u| u.url.clone()),
            guard,
            sessions: sessions.clone(),
            log: store.log.clone(),
            files: config.files,
        });
        let writer = state.writer.clone();
        let server = serve(listener, tls, state, &config)?;
        Ok(Server {
            server,
            log: store.log.clone(),
            files: config.files,
            board,
            writer,
            sessions,
            urls,
            mdns,
            local_addr,
            grace: config.shutdown_grace,
            storage,
            password,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn urls(&self) -> &[ShareUrl] {
        &self.urls
    }

    /// For the banner, when the `--mdns` name asked for was taken and the
    /// board took another.
    pub fn name_notice(&self) -> Option<String> {
        self.mdns.as_ref().and_then(Advert::notice)
    }

    /// True when a passphrase protects the board.
    pub fn has_password(&self) -> bool {
        self.password
    }

    /// Where the history lives, for the banner.
    pub fn storage(&self) -> &str {
        &self.storage
    }

    /// Serves until `shutdown` completes, then closes every connection with a
    /// close frame and stops.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let handle = self.server.handle();
        let mdns = self.mdns.take();
        let presence = actix_web::rt::spawn(self.board.clone().run_presence());
        let sweep = actix_web::rt::spawn(remove_orphans(self.log.clone(), self.files));
        let mut server = actix_web::rt::spawn(self.server);
        let mut outcome = Ok(());
        tokio::select! {
            result = &mut server => {
                // The server ended by itself (it only does on an I/O failure).
                presence.abort();
                sweep.abort();
                return match result {
                    Ok(result) => Ok(result?),
                    Err(_) => Ok(()),
                };
            }
            // The server holds a handle, so the thread cannot have ended for
            // want of posters: it failed. A board that can no longer store
            // anything stops, with a clear reason, instead of running on
            // and refusing every post.
            () = self.writer.stopped() => outcome = Err(StartError::WriterStopped),
            () = shutdown => {}
        }
        log::info!("shutting down");
        // The name goes first, so that no one is sent to a closing board;
        // its goodbyes take a moment, spent while connections close.
        let goodbye = actix_web::rt::task::spawn_blocking(move || drop(mdns));
        // Every connection's queue ends, so each sends its close frame; the
        // workers stop only once they all have (or the grace time is over),
        // since stopping a worker ends the connections it runs at once.
        self.board.close();
        // Past the grace time, the connections left are cut off without one.
        let _ = tokio::time::timeout(self.grace, self.sessions.ended()).await;
        let stop = handle.stop(true);
        // Bounded by the server's own shutdown timeout; a second bound here
        // keeps a stuck connection from holding the process.
        let _ = tokio::time::timeout(self.grace + Duration::from_secs(1), stop).await;
        presence.abort();
        sweep.abort();
        // A failed goodbye task has nothing left to undo: the process ends.
        let _ = goodbye.await;
        outcome
    }
}

/// Removes the files no message carries once they are older than
/// `files.orphan_after`, and uploads that were never finished, every
/// [`crate::files::sweep_every`], for as long as the board runs.
async fn remove_orphans(log: Arc<dyn Log>, files: FilesConfig) {
    let every = crate::files::sweep_every(files.orphan_after);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let log = log.clone();
        let before = crate::writer::now_ms() - files.orphan_after.as_millis() as i64;
        match web::block(move || log.files().remove_orphans(before)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => log::info!("removed {removed} file(s) no message carries"),
            Ok(Err(error)) => log::warn!("removing files no message carries failed: {error}"),
            // The blocking pool is gone: the board is stopping.
            Err(_) => return,
        }
    }
}

/// Wires the routes and WebSocket upgrades to the bound `listener` and starts
/// the HTTP workers (they serve once the runtime runs).
fn serve(
    listener: std::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
    state: web::Data<AppState>,
    config: &Config,
) -> Result<actix_web::dev::Server, StartError> {
    let local_addr = listener.local_addr()?;
    let max_frame_bytes = config.session.max_frame_bytes;
    let upgrades = state.clone();
    // The server is assembled from actix-web's own parts rather than
    // `HttpServer`, for one thing `HttpServer` cannot do: hand WebSocket
    // upgrades, with their raw connection, to `ws/upgrade.rs`.
    let app = move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(max_frame_bytes))
            .wrap(
                DefaultHeaders::new()
                    .add(http::SECURITY_HEADERS[0])
                    .add(http::SECURITY_HEADERS[1])
                    .add(http::SECURITY_HEADERS[2]),
            )
            .configure(http::routes)
    };
    let mut builder = actix_server::Server::build()
        // Signals are handled by the caller's shutdown future, which
        // first closes every WebSocket with a close frame; actix's own
        // handler would only wait for them.
        .disable_signals()
        .shutdown_timeout(config.shutdown_grace.as_secs().max(1));
    let stopping = builder.graceful_shutdown_signal();
    if config.workers > 0 {
        builder = builder.workers(config.workers);
    }
    let builder = match tls {
        Some(tls) => builder.listen("lanboard-https", listener, move || {
            actix_service::apply(
                crate::tls::RedirectPlainHttp,
                http_service!(
                    actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>,
                    app(),
                    upgrades.clone(),
                    local_addr,
                    stopping.clone()
                )
                .rustls_0_23(tls.clone()),
            )
        })?,
        None => builder.listen("lanboard-http", listener, move || {
            actix_service::apply(
                crate::request_head::WaitForRequestHead {
                    first_byte: crate::request_head::FIRST_BYTE_TIMEOUT,
                    head: crate::request_head::HEAD_TIMEOUT,
                },
                http_service!(
                    actix_web::rt::net::TcpStream,
                    app(),
                    upgrades.clone(),
                    local_addr,
                    stopping.clone()
                )
                .tcp(),
            )
        })?,
    };
    Ok(builder.run())
}

/// The store the flags chose, opened, and the Redis board behind it if any:
/// the one store whose messages reach the board through a tail of its own.
struct Store {
    log: Arc<dyn Log>,
    shared: Option<Arc<RedisLog>>,
}

impl Store {
    fn open(storage: &Storage, sync: SyncMode) -> Result<Store, StoreError> {
        Ok(match storage {
            Storage::Memory => Store {
                log: Arc::new(MemoryLog::new()?),
                shared: None,
            },
            Storage::File(path) => Store {
                log: Arc::new(SqliteLog::open(path, Access::Write, sync)?),
                shared: None,
            },
            Storage::Redis {
                target,
                search_index,
            } => {
                let index = match search_index {
                    Some(path) => Index::open(path)?,
                    None => Index::temporary()?,
                };
                let redis = Arc::new(RedisLog::open_indexed(target, index)?);
                Store {
                    log: redis.clone(),
                    shared: Some(redis),
                }
            }
        })
    }

    /// Opens the board on the store and starts its live feed: a Redis
    /// board's tail, or else the writer thread itself ([`Feed::Writer`]).
    fn open_board(&self, history: usize) -> Result<(Board, Feed), StoreError> {
        let board = Board::open(self.log.clone(), BoardConfig::with_history(history))?;
        let feed = match &self.shared {
            Some(redis) => redis.follow(Arc::new(board.clone())),
            None => Feed::Writer,
        };
        Ok((board, feed))
    }
}

/// The access rules, keyed by the board's secret: kept in the store (so a
/// login outlives a restart and is good on every node), fresh for memory.
fn make_guard(config: &GuardConfig, log: &dyn Log) -> Result<Arc<Guard>, StoreError> {
    let secret = log.shared_secret(&random_token())?;
    Ok(Arc::new(Guard::new(config.clone(), secret.as_bytes())))
}

/// Binds the board's socket, naming the port when it is taken.
fn bind(ip: IpAddr, port: u16) -> Result<std::net::TcpListener, StartError> {
    listen(SocketAddr::new(ip, port)).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            StartError::PortInUse { bind: ip, port }
        } else {
            StartError::Bind {
                bind: ip,
                port,
                source,
            }
        }
    })
}

/// Connections waiting to be accepted. The standard library's 128 drops
/// connection attempts when a whole office opens the board at once (after a
/// restart, every page reconnects within a second), and a dropped attempt
/// waits a second before it retries.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds and listens on `addr`, accepting IPv4 too when it is `::`.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As the standard library does: a restarted board may bind its port
    // again while old connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Listens for the signals that ask a board to stop, and returns a future
/// that completes on the first: Ctrl-C and SIGTERM on Unix; Ctrl-C,
/// Ctrl-Break and the console window closing on Windows. The handlers are
/// installed before this returns, so a signal that arrives right after the
/// banner is printed is not lost.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
        let mut interrupt = ctrl_c()?;
        let mut brk = ctrl_break()?;
        let mut close = ctrl_close()?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = brk.recv() => {}
                _ = close.recv() => {}
            }
        })
    }
}
