//! Starting and stopping a board: opens the store, binds the socket (so
//! `--port 0` knows its port before anything is printed), wires the routes,
//! and runs until a shutdown future fires.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};

use crate::board::{Board, BoardConfig};
use crate::http::{self, AppState};
use crate::net::{self, ShareUrl};
use crate::session::SessionConfig;
use crate::store::{Access, Log, MemoryLog, SqliteLog, StoreError};
use crate::writer::Writer;

/// Where the history lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    File(PathBuf),
    Memory,
}

/// Everything a server needs to start; `cli.rs` builds it from the flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub history: usize,
    pub storage: Storage,
    pub qr: bool,
    pub workers: usize,
    pub session: SessionConfig,
    /// How long open connections get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 4000,
            history: 200,
            storage: Storage::File("lanboard.db".into()),
            qr: true,
            workers: 0,
            session: SessionConfig::default(),
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// Why the board could not start: each message names the flag or path.
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
    #[error("cannot open the history: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A board bound to its socket, ready to run.
pub struct Server {
    server: actix_web::dev::Server,
    board: Board,
    urls: Vec<ShareUrl>,
    local_addr: SocketAddr,
    grace: Duration,
    storage: String,
}

impl Server {
    /// Opens the store and binds the socket. Must be called inside the actix
    /// runtime (`#[actix_web::main]` or `actix_web::rt::System`).
    pub fn build(config: Config) -> Result<Server, StartError> {
        let log: Arc<dyn Log> = match &config.storage {
            Storage::Memory => Arc::new(MemoryLog::default()),
            Storage::File(path) => Arc::new(SqliteLog::open(path, Access::Write)?),
        };
        let storage = log.describe();
        let board = Board::open(log, BoardConfig::with_history(config.history))?;
        let (writer, _thread) = Writer::start(board.clone());

        let listener =
            std::net::TcpListener::bind((config.bind, config.port)).map_err(|source| {
                if source.kind() == std::io::ErrorKind::AddrInUse {
                    StartError::PortInUse {
                        bind: config.bind,
                        port: config.port,
                    }
                } else {
                    StartError::Bind {
                        bind: config.bind,
                        port: config.port,
                        source,
                    }
                }
            })?;
        let local_addr = listener.local_addr()?;
        let urls = net::share_urls(config.bind, local_addr.port(), &net::lan_ipv4_addresses());

        let state = web::Data::new(AppState {
            board: board.clone(),
            writer,
            session: config.session,
            urls: urls.iter().map(|u| u.url.clone()).collect(),
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(config.session.max_frame_bytes))
                .wrap(
                    DefaultHeaders::new()
                        .add((
                            header::CONTENT_SECURITY_POLICY,
                            crate::assets::CONTENT_SECURITY_POLICY,
                        ))
                        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                        .add((header::REFERRER_POLICY, "no-referrer")),
                )
                .configure(http::routes)
        })
        // Signals are handled by the caller's shutdown future, which first
        // closes every WebSocket with a close frame; actix's own handler
        // would only wait for them.
        .disable_signals()
        .shutdown_timeout(config.shutdown_grace.as_secs().max(1));
        if config.workers > 0 {
            server = server.workers(config.workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Server {
            server,
            board,
            urls,
            local_addr,
            grace: config.shutdown_grace,
            storage,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn urls(&self) -> &[ShareUrl] {
        &self.urls
    }

    /// Where the history lives, for the banner.
    pub fn storage(&self) -> &str {
        &self.storage
    }

    /// Serves until `shutdown` completes, then closes every connection with a
    /// close frame and stops.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let handle = self.server.handle();
        let presence = actix_web::rt::spawn(self.board.clone().run_presence());
        let mut server = actix_web::rt::spawn(self.server);
        tokio::select! {
            result = &mut server => {
                // The server ended by itself (it only does on an I/O failure).
                presence.abort();
                return match result {
                    Ok(result) => Ok(result?),
                    Err(_) => Ok(()),
                };
            }
            () = shutdown => {}
        }
        log::info!("shutting down");
        self.board.close();
        // Give sessions a moment to put their close frames on the wire
        // before the server stops accepting and tears connections down.
        let stop = handle.stop(true);
        // Bounded by the server's own shutdown timeout; a second bound here
        // keeps a stuck connection from holding the process.
        let _ = tokio::time::timeout(self.grace + Duration::from_secs(1), stop).await;
        presence.abort();
        Ok(())
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                // Without a SIGTERM handler, Ctrl-C still stops the board.
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        // Without a Ctrl-C handler the process is stopped the hard way, which
        // loses nothing committed.
        let _ = tokio::signal::ctrl_c().await;
    }
}
