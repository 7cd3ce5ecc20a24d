//! The command line: flags (each with an environment twin) and subcommands,
//! and their conversion into a validated [`Config`].

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::files::FilesConfig;
use crate::guard::{GuardConfig, Rate};
use crate::protocol::Limits;
use crate::server::{Config, StartError, Storage, SHUTDOWN_GRACE};
use crate::store::{RedisTarget, SyncMode};
use crate::ws::SessionConfig;

/// What `lanboard --version` prints: the release and the commit it was
/// built from (see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("LANBOARD_COMMIT"),
    ")"
);

/// A real-time message board for your office network. Run it, share the
/// address it prints, and everyone who opens it sees every message at once.
#[derive(Debug, Parser)]
#[command(name = "lanboard", version = VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on; 0 picks a free one (the banner shows which).
    #[arg(long, env = "LANBOARD_PORT", default_value_t = 4000)]
    pub port: u16,

    /// Address to listen on. The default reaches every IPv4 interface, so
    /// coworkers can connect; 127.0.0.1 keeps the board to this computer,
    /// :: listens on IPv6 too.
    #[arg(
        long,
        env = "LANBOARD_BIND",
        default_value = "0.0.0.0",
        value_name = "ADDR"
    )]
    pub bind: String,

    /// How many of the newest messages a new page receives.
    #[arg(
        long,
        env = "LANBOARD_HISTORY",
        default_value_t = 200,
        value_name = "N"
    )]
    pub history: usize,

    /// The SQLite file that keeps the history.
    #[arg(
        long,
        env = "LANBOARD_DATA",
        default_value = "lanboard.db",
        value_name = "PATH"
    )]
    pub data: PathBuf,

    /// How a commit waits for the disk: `normal` survives a crash of
    /// lanboard; `full` also survives a power cut, at a disk flush per commit.
    #[arg(long, env = "LANBOARD_SYNC", value_enum, default_value_t = SyncMode::Normal, value_name = "MODE")]
    pub sync: SyncMode,

    /// Keep history in memory only (no file, --data is ignored): it is lost
    /// when lanboard stops.
    #[arg(long, env = "LANBOARD_MEMORY", conflicts_with = "redis")]
    pub memory: bool,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// Where this node keeps its search index of a Redis board: a SQLite
    /// file, so that a restarted node reads only what it missed. Without
    /// it, the index is in a temporary file that goes with the process, and
    /// each start reads the whole board from Redis.
    #[arg(
        long,
        env = "LANBOARD_SEARCH_INDEX",
        value_name = "PATH",
        requires = "redis",
        help_heading = "Several nodes"
    )]
    pub search_index: Option<PathBuf>,

    /// Advertise the board on the local network as NAME.local (multicast
    /// DNS), with a service that service browsers list. The banner then shows
    /// http://NAME.local:PORT first and the addresses as the fallback. If
    /// another computer already answers for NAME.local, the board takes
    /// NAME-2, NAME-3, ... and says so. Without NAME: lanboard.
    #[arg(
        long,
        env = "LANBOARD_MDNS",
        num_args = 0..=1,
        default_missing_value = "lanboard",
        value_name = "NAME"
    )]
    pub mdns: Option<String>,

    /// Do not print a QR code of the address (it is printed only on a terminal).
    #[arg(long, env = "LANBOARD_NO_QR")]
    pub no_qr: bool,

    /// Worker threads serving connections; 0 uses one per CPU core.
    #[arg(long, env = "LANBOARD_WORKERS", default_value_t = 0, value_name = "N")]
    pub workers: usize,

    /// Largest WebSocket frame or API body a client may send, in bytes;
    /// a larger frame closes its connection (close code 1009).
    #[arg(long, env = "LANBOARD_MAX_FRAME_BYTES", default_value_t = 64 * 1024, value_name = "BYTES", help_heading = "Limits")]
    pub max_frame_bytes: usize,

    /// Longest message, in characters.
    #[arg(
        long,
        env = "LANBOARD_MAX_MESSAGE_CHARS",
        default_value_t = 4000,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_message_chars: usize,

    /// Longest name, in characters.
    #[arg(
        long,
        env = "LANBOARD_MAX_NAME_CHARS",
        default_value_t = 64,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_name_chars: usize,

    /// Largest file one upload may be, in bytes (25 MiB by default).
    #[arg(
        long,
        env = "LANBOARD_MAX_FILE_BYTES",
        default_value_t = 25 * 1024 * 1024,
        value_name = "BYTES",
        help_heading = "Limits"
    )]
    pub max_file_bytes: u64,

    /// All the board's files together, in bytes (2 GiB by default): an
    /// upload that would pass it is refused until messages with files are
    /// deleted.
    #[arg(
        long,
        env = "LANBOARD_MAX_FILES_BYTES",
        default_value_t = 2 * 1024 * 1024 * 1024,
        value_name = "BYTES",
        help_heading = "Limits"
    )]
    pub max_files_bytes: u64,

    /// Seconds a file no message carries is kept after its upload. For
    /// tests; the board's contract is an hour.
    #[arg(long, env = "LANBOARD_ORPHAN_FILES_AFTER", default_value_t = crate::files::ORPHAN_AFTER.as_secs_f64(), hide = true)]
    pub orphan_files_after: f64,

    /// Messages per second one connection (or, through the HTTP API, one
    /// address) may post on average; 0 turns the limit off.
    #[arg(
        long,
        env = "LANBOARD_RATE_LIMIT",
        default_value_t = 10.0,
        value_name = "PER_SECOND",
        help_heading = "Limits"
    )]
    pub rate_limit: f64,

    /// Messages that may be posted at once before --rate-limit applies.
    #[arg(
        long,
        env = "LANBOARD_RATE_BURST",
        default_value_t = 20,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub rate_burst: u32,

    /// Open WebSocket connections per remote address; 0 for no limit.
    /// 127.0.0.1 and ::1 (this computer, or a reverse proxy on it) are never limited.
    #[arg(
        long,
        env = "LANBOARD_MAX_CONNECTIONS_PER_IP",
        default_value_t = 64,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_connections_per_ip: usize,

    /// Seconds between the server's pings to each connection.
    #[arg(
        long,
        env = "LANBOARD_HEARTBEAT",
        default_value_t = 15.0,
        value_name = "SECONDS",
        help_heading = "Limits"
    )]
    pub heartbeat: f64,

    /// Seconds of silence (no answer to pings) after which a connection is dropped.
    #[arg(
        long,
        env = "LANBOARD_CLIENT_TIMEOUT",
        default_value_t = 45.0,
        value_name = "SECONDS",
        help_heading = "Limits"
    )]
    pub client_timeout: f64,

    /// A shared passphrase: the page asks for it once, and the WebSocket and
    /// the API refuse anyone without it. Without it the board is open to
    /// everyone who can reach it.
    #[arg(
        long,
        env = "LANBOARD_PASSWORD",
        hide_env_values = true,
        value_name = "PASSPHRASE",
        help_heading = "Security"
    )]
    pub password: Option<String>,

    /// Another origin (scheme://host[:port]) whose pages may use the board,
    /// besides the board's own address; repeat or separate with commas.
    #[arg(
        long,
        env = "LANBOARD_ALLOW_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN",
        help_heading = "Security"
    )]
    pub allow_origin: Vec<String>,

    /// PEM certificate chain: serve https and wss instead of http and ws.
    #[arg(
        long,
        env = "LANBOARD_TLS_CERT",
        requires = "tls_key",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "LANBOARD_TLS_KEY",
        requires = "tls_cert",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub tls_key: Option<PathBuf>,
}

/// Where a board shared by several lanboard processes lives.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// Keep the board in Redis instead of the SQLite file, e.g.
    /// redis://127.0.0.1:6379/0 (redis://:PASSWORD@HOST:PORT/DB with a
    /// password). Every lanboard started with the same URL and prefix serves
    /// the same board.
    #[arg(
        long,
        env = "LANBOARD_REDIS",
        value_name = "URL",
        help_heading = "Several nodes"
    )]
    pub redis: Option<String>,

    /// Prefix of the board's keys in Redis, so several boards can share one Redis.
    #[arg(
        long,
        env = "LANBOARD_REDIS_PREFIX",
        default_value = "lanboard",
        value_name = "PREFIX",
        help_heading = "Several nodes"
    )]
    pub redis_prefix: String,
}

impl RedisArgs {
    /// The Redis board to use, if `--redis` was given.
    pub fn target(&self) -> Option<RedisTarget> {
        self.redis.as_ref().map(|url| RedisTarget {
            url: url.clone(),
            prefix: self.redis_prefix.clone(),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the whole history as JSON Lines (one message a line) on stdout.
    Export {
        /// The SQLite file to read; a running board may keep using it.
        #[arg(
            long,
            env = "LANBOARD_DATA",
            default_value = "lanboard.db",
            value_name = "PATH"
        )]
        data: PathBuf,
        /// Read the board from Redis instead (see `lanboard --help`).
        #[command(flatten)]
        redis: RedisArgs,
        /// Also write every file the messages carry into this folder (made
        /// if missing), each named by its id.
        #[arg(long, value_name = "DIR")]
        files: Option<PathBuf>,
    },
    /// Load messages exported with `lanboard export` into an empty board.
    Import {
        /// The JSON Lines file to read, or - for standard input.
        file: PathBuf,
        /// The SQLite file to fill; it must hold no messages yet.
        #[arg(
            long,
            env = "LANBOARD_DATA",
            default_value = "lanboard.db",
            value_name = "PATH"
        )]
        data: PathBuf,
        /// Fill a board in Redis instead (see `lanboard --help`).
        #[command(flatten)]
        redis: RedisArgs,
        /// The folder `lanboard export --files DIR` wrote the files to;
        /// needed when the messages carry files.
        #[arg(long, value_name = "DIR")]
        files: Option<PathBuf>,
    },
    /// Post one message to a running board and print its id.
    ///
    /// The message comes from the arguments, or from stdin
    /// (`make 2>&1 | tail -5 | lanboard send`).
    Send(crate::client::SendArgs),
    /// Print a running board's newest messages, then follow it as they arrive.
    Tail(crate::client::TailArgs),
    /// Print the board's operator link, and nothing else.
    ///
    /// Opened in a browser, the link turns on operator mode there: delete any
    /// post, block a sender. Keep it to yourself; `--rotate` makes a new one
    /// and the old link stops working.
    OperatorLink {
        /// The board's SQLite file; the board may be running on it.
        #[arg(
            long,
            env = "LANBOARD_DATA",
            default_value = "lanboard.db",
            value_name = "PATH"
        )]
        data: PathBuf,
        /// The board in Redis instead (see `lanboard --help`).
        #[command(flatten)]
        redis: RedisArgs,
        /// The port the board listens on, for the link.
        #[arg(long, env = "LANBOARD_PORT", default_value_t = 4000)]
        port: u16,
        /// Make a new operator secret: links printed before stop working.
        #[arg(long)]
        rotate: bool,
    },
}

impl ServeArgs {
    /// Checks the flags and turns them into the server's configuration.
    pub fn into_config(self) -> Result<Config, StartError> {
        let bind: IpAddr = self
            .bind
            .trim()
            .parse()
            .map_err(|_| StartError::BadAddress {
                address: self.bind.clone(),
            })?;
        let bad = |flag, reason: &str| StartError::BadFlag {
            flag,
            reason: reason.into(),
        };
        if self.history == 0 {
            return Err(bad("--history", "must be at least 1"));
        }
        if self.max_frame_bytes < 1024 {
            return Err(bad("--max-frame-bytes", "must be at least 1024"));
        }
        if self.max_message_chars == 0 || self.max_name_chars == 0 {
            return Err(bad(
                "--max-message-chars/--max-name-chars",
                "must be at least 1",
            ));
        }
        if !(self.rate_limit.is_finite() && self.rate_limit >= 0.0) {
            return Err(bad(
                "--rate-limit",
                "must be a number of messages per second, 0 for none",
            ));
        }
        if self.rate_limit > 0.0 && self.rate_burst == 0 {
            return Err(bad("--rate-burst", "must be at least 1"));
        }
        let seconds = |flag, value: f64| {
            if value.is_finite() && value > 0.0 && value < 1e6 {
                Ok(std::time::Duration::from_secs_f64(value))
            } else {
                Err(bad(flag, "must be a positive number of seconds"))
            }
        };
        let heartbeat = seconds("--heartbeat", self.heartbeat)?;
        let orphan_after = seconds("--orphan-files-after", self.orphan_files_after)?;
        if self.max_file_bytes == 0 || self.max_files_bytes == 0 {
            return Err(bad(
                "--max-file-bytes/--max-files-bytes",
                "must be at least 1",
            ));
        }
        let client_timeout = seconds("--client-timeout", self.client_timeout)?;
        if client_timeout <= heartbeat {
            return Err(bad("--client-timeout", "must be longer than --heartbeat"));
        }
        if self
            .password
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            return Err(bad("--password", "must not be empty"));
        }
        let mdns = self
            .mdns
            .map(|name| crate::mdns::check_name(&name).map_err(|reason| bad("--mdns", reason)))
            .transpose()?;
        let rate = (self.rate_limit > 0.0).then_some(Rate {
            per_second: self.rate_limit,
            burst: f64::from(self.rate_burst),
        });
        Ok(Config {
            bind,
            port: self.port,
            history: self.history,
            storage: match (self.memory, self.redis.target()) {
                (true, _) => Storage::Memory,
                (false, Some(target)) => Storage::Redis {
                    target,
                    search_index: self.search_index,
                },
                (false, None) => Storage::File(self.data),
            },
            sync: self.sync,
            qr: !self.no_qr,
            mdns,
            workers: self.workers,
            session: SessionConfig {
                limits: Limits {
                    max_name_chars: self.max_name_chars,
                    max_message_chars: self.max_message_chars,
                },
                max_frame_bytes: self.max_frame_bytes,
                heartbeat,
                client_timeout,
                rate,
            },
            guard: GuardConfig {
                tls: self.tls_cert.is_some(),
                password: self.password,
                allow_origins: self.allow_origin,
                max_connections_per_ip: self.max_connections_per_ip,
                post_rate: rate,
            },
            files: FilesConfig {
                max_file_bytes: self.max_file_bytes,
                max_files_bytes: self.max_files_bytes,
                orphan_after,
            },
            tls: self.tls_cert.zip(self.tls_key),
            shutdown_grace: SHUTDOWN_GRACE,
        })
    }
}

/// The configuration of a plain `lanboard`: every flag at the default written
/// in its attribute above, the one place defaults live. For tests and
/// benchmarks; like the binary, it reads the `LANBOARD_*` environment twins,
/// all but `LANBOARD_MDNS`.
pub fn default_config() -> Config {
    let mut config = Cli::parse_from(["lanboard"])
        .serve
        .into_config()
        // The defaults are valid flags: `defaults_make_a_valid_config` checks it.
        .expect("the default flags make a valid configuration");
    // A stray LANBOARD_MDNS must not make an in-process test send multicast
    // on the machine's network; tests/mdns.rs runs --mdns in namespaces.
    config.mdns = None;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_valid_config() {
        let config = default_config();
        assert!(matches!(config.storage, Storage::File(_)));
        assert!(config.guard.password.is_none(), "a default board is open");
        // One rate flag limits both the WebSocket and the HTTP API.
        assert_eq!(config.guard.post_rate, config.session.rate);
    }

    #[test]
    fn mdns_without_a_name_is_lanboard_and_a_bad_name_is_refused() {
        let config = |args: &[&str]| {
            Cli::parse_from(["lanboard", "--memory"].iter().chain(args))
                .serve
                .into_config()
        };
        let named = config(&["--mdns"]).expect("--mdns alone is valid");
        assert_eq!(named.mdns.as_deref(), Some("lanboard"));
        let named = config(&["--mdns", "Standup"]).expect("a name is valid");
        assert_eq!(named.mdns.as_deref(), Some("standup"));
        let refused = config(&["--mdns", "two words"]).expect_err("a space is no DNS label");
        assert!(
            refused.to_string().starts_with("--mdns must be"),
            "{refused}"
        );
    }
}
