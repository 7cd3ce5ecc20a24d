//! The command line: flags (each with an environment twin) and subcommands,
//! and their conversion into a validated [`Config`].

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::server::{Config, StartError, Storage};

/// A real-time message board for your office network. Run it, share the
/// address it prints, and everyone who opens it sees every message at once.
#[derive(Debug, Parser)]
#[command(name = "lanboard", version, args_conflicts_with_subcommands = true)]
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

    /// Keep history in memory only (no file, --data is ignored): it is lost
    /// when lanboard stops.
    #[arg(long, env = "LANBOARD_MEMORY")]
    pub memory: bool,

    /// Do not print a QR code of the address (it is printed only on a terminal).
    #[arg(long, env = "LANBOARD_NO_QR")]
    pub no_qr: bool,

    /// Worker threads serving connections; 0 uses one per CPU core.
    #[arg(long, env = "LANBOARD_WORKERS", default_value_t = 0, value_name = "N")]
    pub workers: usize,
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
        if self.history == 0 {
            return Err(StartError::BadFlag {
                flag: "--history",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Config {
            bind,
            port: self.port,
            history: self.history,
            storage: if self.memory {
                Storage::Memory
            } else {
                Storage::File(self.data)
            },
            qr: !self.no_qr,
            workers: self.workers,
            ..Config::default()
        })
    }
}
