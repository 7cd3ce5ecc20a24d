//! The `lanboard` executable: parses the command line, starts logging, and
//! runs the board (or a subcommand), turning any startup failure into one
//! clear line on stderr and a non-zero exit.

use std::io::{BufReader, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use lanboard::cli::{Cli, Command, RedisArgs};
use lanboard::client;
use lanboard::net;
use lanboard::server::{self, Server, StartError};
use lanboard::transfer::{self, Place};

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    give_large_blocks_back();
    let cli = Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,lanboard=info"),
    )
    .format_target(false)
    .init();
    let result = match cli.command {
        Some(Command::Export { data, redis, files }) => {
            let place = place(data, &redis);
            let stdout = std::io::stdout();
            transfer::export(&place, &mut stdout.lock(), files.as_deref())
                .map(|count| eprintln!("exported {count} message(s) from {}", place.describe()))
                .map_err(|e| e.to_string())
        }
        Some(Command::Import {
            file,
            data,
            redis,
            files,
        }) => import(&file, &place(data, &redis), files.as_deref()),
        Some(Command::Send(args)) => client::send::run(args).map_err(|e| e.to_string()),
        Some(Command::Tail(args)) => client::tail::run(args).map_err(|e| e.to_string()),
        Some(Command::OperatorLink {
            data,
            redis,
            port,
            rotate,
        }) => transfer::operator_link(&place(data, &redis), port, rotate)
            .map(|link| println!("{link}"))
            .map_err(|e| e.to_string()),
        None => serve(cli.serve).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lanboard: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Makes glibc's malloc serve every block of 128 KiB or more with a mapping
/// of its own, handed back to the system when freed. By default glibc raises
/// that threshold to the size of each large block freed (up to 32 MiB), after
/// which such blocks come from its heaps and stay with the process: after 60
/// clients resumed at once (a catch-up frame of about 1 MiB each) and left, the
/// server kept 12 MiB of the burst (18 -> 31 MiB); with the threshold fixed it
/// keeps under 2 MiB (18 -> 20 MiB). The cost, a map and an unmap per large
/// block, falls on catch-up frames only; the fan-out path allocates small ones.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_large_blocks_back() {
    // glibc's own starting value: setting it at all is what stops the raising.
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets a tunable of malloc, here before any other
    // thread exists. A refusal (0) leaves glibc's default: correct, only
    // slower to give memory back, so there is nothing to report.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
}

fn place(data: std::path::PathBuf, redis: &RedisArgs) -> Place {
    match redis.target() {
        Some(target) => Place::Redis(target),
        None => Place::File(data),
    }
}

fn import(
    file: &std::path::Path,
    place: &Place,
    files: Option<&std::path::Path>,
) -> Result<(), String> {
    let name = file.display().to_string();
    let count = if name == "-" {
        transfer::import(std::io::stdin().lock(), "<stdin>", place, files)
    } else {
        let input = std::fs::File::open(file).map_err(|e| format!("{name}: {e}"))?;
        transfer::import(BufReader::new(input), &name, place, files)
    }
    .map_err(|e| e.to_string())?;
    eprintln!("imported {count} message(s) into {}", place.describe());
    Ok(())
}

fn serve(args: lanboard::cli::ServeArgs) -> Result<(), StartError> {
    let config = args.into_config()?;
    let qr = config.qr;
    // Every open page is an open file: a hall needs more than the 1,024
    // many systems start programs with.
    let open_files = lanboard::capacity::raise_open_files();
    actix_web::rt::System::new().block_on(async move {
        let server = Server::build(config)?;
        let shutdown = server::shutdown_signal()?;
        print_banner(&server, qr, open_files);
        server.run(shutdown).await
    })
}

/// The startup banner, the program's only output on stdout.
fn print_banner(server: &Server, qr: bool, open_files: Option<lanboard::capacity::OpenFiles>) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut text = format!(
        "lanboard {} is running on port {}.\n",
        env!("CARGO_PKG_VERSION"),
        server.local_addr().port()
    );
    text.push_str(&net::banner(server.urls()));
    if let Some(notice) = server.name_notice() {
        text.push_str(&format!("\n{notice}\n"));
    }
    if qr && out.is_terminal() {
        if let Some(code) = net::qr_url(server.urls())
            .filter(|u| u.lan)
            .and_then(|u| net::qr_text(&u.url))
        {
            text.push_str("\nScan to open it on a phone:\n");
            text.push_str(&code);
            text.push('\n');
        }
    }
    text.push_str(&format!("\nHistory: {}\n", server.storage()));
    if server.has_password() {
        text.push_str("Access: protected by a passphrase (--password).\n");
    } else {
        text.push_str(
            "Access: open to anyone who can reach this address (set --password to require one).\n",
        );
    }
    if let Some(notice) = open_files.and_then(|files| files.notice()) {
        text.push_str(&notice);
        text.push('\n');
    }
    text.push_str("Press Ctrl-C to stop.\n");
    // A closed stdout (say, piped into `head`) must not stop the board.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
