//! The `redis-server` that the lanboard nodes of a multi-node run share:
//! found on the PATH, started fresh for every run on a free loopback port with
//! its files in the run's scratch folder, persisting as a production board
//! would (append-only file, fsync every second, no snapshots), pinned with the
//! other server processes, and killed with the run like any [`Server`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::servers::{confine, free_port, log_file, Server};

/// How long a fresh, empty `redis-server` may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting it: a free port found by binding port 0 may be taken
/// by another program before Redis binds it, and then Redis exits at once.
const START_ATTEMPTS: usize = 3;
/// The oldest Redis lanboard accepts (it needs `XADD` with explicit ids and
/// `XREAD BLOCK` as 6.2 has them, and refuses older servers at startup).
const OLDEST: (u32, u32) = (6, 2);

/// The version of the `redis-server` on the PATH, or why there is none the
/// nodes could use.
pub fn version() -> Result<String, String> {
    let output = Command::new("redis-server")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|_| "redis-server is not on the PATH".to_owned())?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = parse_version(&text)
        .ok_or_else(|| format!("`redis-server --version` printed no version: {text:?}"))?;
    if numbers(&version) < OLDEST {
        return Err(format!(
            "redis-server {version} is older than {}.{}, which lanboard needs",
            OLDEST.0, OLDEST.1
        ));
    }
    Ok(version)
}

/// The `v=7.0.15` of `Redis server v=7.0.15 sha=00000000:0 malloc=...`.
fn parse_version(text: &str) -> Option<String> {
    let rest = &text[text.find("v=")? + 2..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_owned())
}

/// (major, minor) of a version such as `7.0.15`; missing parts count as 0.
fn numbers(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Starts a fresh `redis-server` keeping its files (and `redis.log`) in
/// `dir`, pinned to `core`, and waits until it answers `PING`.
pub fn start(dir: &Path, core: Option<usize>) -> Result<Server, String> {
    let mut why = String::new();
    for _ in 0..START_ATTEMPTS {
        match start_once(dir, core) {
            Ok(server) => return Ok(server),
            Err(e) => why = e,
        }
    }
    Err(why)
}

fn start_once(dir: &Path, core: Option<usize>) -> Result<Server, String> {
    // The port is free now; if another program takes it first, Redis exits
    // and `start` tries again on another one.
    let port = free_port()?;
    let log = dir.join("redis.log");
    let (output, errors) = log_file(&log)?;
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ])
        .args(["--protected-mode", "no", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors);
    confine(&mut command, core);
    let spawned = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("starting redis-server: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = Server::new(child, addr, Duration::ZERO, log);
    while spawned.elapsed() < START_TIMEOUT {
        if ping(addr) {
            server.started_in = spawned.elapsed();
            return Ok(server);
        }
        if let Some(status) = server.exited() {
            return Err(format!(
                "redis-server exited ({status}):\n{}",
                server.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "redis-server did not answer PING on port {port} within {START_TIMEOUT:?}:\n{}",
        server.log_tail()
    ))
}

/// The URL lanboard's `--redis` takes for `server`, database 0.
pub fn url(server: &Server) -> String {
    format!("redis://{}/0", server.addr)
}

/// True if and only if a Redis at `addr` answers `PING` with `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    // A stream without timeouts could hang on a server that accepts but never answers.
    if stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
        || stream.write_all(b"PING\r\n").is_err()
    {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// Checks the pure parts of this module; panics on the first failure.
pub fn self_check() {
    assert_eq!(
        parse_version("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64\n"),
        Some("7.0.15".to_owned())
    );
    assert_eq!(parse_version("redis-server 6.0"), None);
    assert_eq!(numbers("7.0.15"), (7, 0));
    assert_eq!(numbers("6.2"), (6, 2));
    assert!(numbers("6.0.16") < OLDEST && numbers("6.2.0") >= OLDEST);
    assert!(numbers("10.0.1") >= OLDEST);
}
