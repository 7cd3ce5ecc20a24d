//! Test support: the real `lanboard` binary on a free port with its own data
//! file, a real WebSocket client that speaks protocol v1, and an HTTP client
//! (reqwest) behind `http`/`get`/`post`. Every wait has a timeout, so a bug
//! fails a test instead of hanging it.
#![allow(dead_code)]

pub mod redis;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as Frame;

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `lanboard` process, stopped when dropped.
pub struct Board {
    pub addr: SocketAddr,
    pub data: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    /// Everything the process printed on stdout (the banner).
    pub banner: String,
    stderr: mpsc::Receiver<String>,
    _dir: Option<tempfile::TempDir>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_lanboard")
}

impl Board {
    /// Starts the binary on 127.0.0.1, a free port and a fresh data file,
    /// with `extra` flags appended.
    pub fn start(extra: &[&str]) -> Board {
        let dir = tempfile::tempdir().expect("a temp dir");
        let data = dir.path().join("board.db");
        let mut board = Board::start_on(&data, 0, extra);
        board._dir = Some(dir);
        board
    }

    /// Starts the binary on `port` (0 for any) with `data` as its file.
    pub fn start_on(data: &Path, port: u16, extra: &[&str]) -> Board {
        let mut args: Vec<String> = vec!["--data".into(), data.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Board::launch_with(args, port, data)
    }

    /// Starts one node of a board kept in Redis at `redis_url`, with `prefix`.
    pub fn node(redis_url: &str, prefix: &str, extra: &[&str]) -> Board {
        let mut args: Vec<String> = vec![
            "--redis".into(),
            redis_url.into(),
            "--redis-prefix".into(),
            prefix.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Board::launch_with(args, 0, Path::new(""))
    }

    fn launch_with(mut args: Vec<String>, port: u16, data: &Path) -> Board {
        let mut all: Vec<String> = vec!["--bind".into(), "127.0.0.1".into(), "--no-qr".into()];
        all.append(&mut args);
        let args = all;
        let (child, addr, banner, stderr) = launch(&args, port);
        Board {
            addr,
            data: data.to_path_buf(),
            child: Some(child),
            args,
            banner,
            stderr,
            _dir: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the board is running").id()
    }

    /// Sends `signal` and waits for the process to exit; returns its status.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the board is running");
        // SAFETY: kill(2) on our own child's pid has no memory-safety effects.
        unsafe { libc::kill(child.id() as i32, signal) };
        wait_with_timeout(&mut child, WAIT).expect("lanboard exits after a signal")
    }

    /// Waits for a process that was told to stop some other way to exit.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the board is running");
        wait_with_timeout(&mut child, WAIT).expect("lanboard exits")
    }

    /// Stops the board with SIGTERM, as a service manager would.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Starts the board again on the same port and data file.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let (child, addr, banner, stderr) = launch(&self.args, self.addr.port());
        assert_eq!(addr, self.addr, "restarted on the same address");
        self.child = Some(child);
        self.banner = banner;
        self.stderr = stderr;
    }

    /// What the process printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The process may have exited already; either way it is reaped below.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Starts the binary and reads its banner up to the local URL.
fn launch(args: &[String], port: u16) -> (Child, SocketAddr, String, mpsc::Receiver<String>) {
    let mut command = Command::new(binary());
    command
        .args(args)
        .arg("--port")
        .arg(port.to_string())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("lanboard starts");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (err_tx, err_rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if err_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = String::new();
    loop {
        match lines.recv_timeout(WAIT) {
            Ok(line) => {
                banner.push_str(&line);
                banner.push('\n');
                if line.starts_with("Press Ctrl-C") {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let errors: Vec<String> = err_rx.try_iter().collect();
                panic!(
                    "lanboard {args:?} --port {port} printed no banner.\nstdout:\n{banner}\nstderr:\n{}",
                    errors.join("\n")
                );
            }
        }
    }
    let Some(addr) = local_addr(&banner) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no local URL in banner:\n{banner}");
    };
    (child, addr, banner, err_rx)
}

/// The `http://127.0.0.1:<port>` (or https) address the banner prints.
pub fn local_addr(banner: &str) -> Option<SocketAddr> {
    banner.split_whitespace().find_map(|word| {
        word.strip_prefix("http://127.0.0.1:")
            .or_else(|| word.strip_prefix("https://127.0.0.1:"))
            .and_then(|port| port.parse::<u16>().ok())
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
    })
}

/// Runs the binary to completion with `args`; returns (status, stdout, stderr).
pub fn run(args: &[&str], cwd: &Path) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lanboard starts");
    let mut out = String::new();
    let mut err = String::new();
    let status = wait_with_timeout(&mut child, WAIT)
        .unwrap_or_else(|| panic!("lanboard {args:?} did not finish"));
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client speaking protocol v1.
pub struct Client {
    pub socket: Socket,
    /// The `data` of the `messages-available` frame received on connect.
    pub history: Vec<Value>,
    /// The whole `messages-available` frame.
    pub welcome: Value,
}

impl Client {
    /// Connects to `url` (e.g. `ws://127.0.0.1:1234/ws?since=3`) and reads
    /// the `messages-available` frame.
    pub async fn connect(url: &str) -> Client {
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let mut client = Client {
            socket,
            history: Vec::new(),
            welcome: Value::Null,
        };
        let welcome = client.next_event("messages-available").await;
        client.history = welcome["data"]
            .as_array()
            .expect("data is an array")
            .clone();
        client.welcome = welcome;
        client
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Frame::text(text.to_owned()))
            .await
            .expect("send a frame");
    }

    /// Posts a message asking for an ack.
    pub async fn add(&mut self, name: &str, message: &str, ack: u64) {
        self.send(serde_json::json!({
            "event": "add-message",
            "data": {"name": name, "message": message},
            "ack": ack,
        }))
        .await;
    }

    /// The next JSON frame, whatever its event; `None` when the server closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame in time")?;
            match frame {
                Ok(Frame::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("frames are JSON"))
                }
                Ok(Frame::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next frame of event `name`, skipping frames of other events.
    pub async fn next_event(&mut self, name: &str) -> Value {
        loop {
            let frame = self
                .next()
                .await
                .unwrap_or_else(|| panic!("connection closed while waiting for {name}"));
            if frame["event"] == name {
                return frame;
            }
        }
    }

    /// The next frame that is not `presence`.
    pub async fn next_reply(&mut self) -> Value {
        loop {
            let frame = self.next().await.expect("connection closed");
            if frame["event"] != "presence" {
                return frame;
            }
        }
    }
}

/// The ids of a list of messages.
pub fn ids(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["id"].as_u64().expect("an id"))
        .collect()
}

/// A response of the test HTTP client.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order the response gave them.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection, closed after the answer.
///
/// It sends `headers` as given, plus `Host`, `Connection: close`,
/// `Content-Length` for a body and `Content-Type: application/json` for a
/// POST or a body unless `headers` name another (and reqwest's `Accept: */*`,
/// which the board ignores). It never follows a redirect, keeps no cookies
/// and decodes no compressed body: tests see the board's answer as sent.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let what = format!("{method} http://{addr}{path}");
    // A client per request: nothing is pooled, so each request has its own
    // connection, as the per-address connection limits expect.
    let client = reqwest::Client::builder()
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(WAIT)
        .build()
        // Only a TLS backend or the system's resolver settings can fail to
        // load, and this build has neither.
        .expect("a plain HTTP client builds");
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: not an HTTP method: {e}"));
    let mut request = client
        .request(method.clone(), format!("http://{addr}{path}"))
        .header("Connection", "close");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_empty() || method == reqwest::Method::POST {
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header("Content-Type", "application/json");
        }
        request = request.body(body.to_owned());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no response within {WAIT:?}: {e:?}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{what}: the body of the {status} did not arrive: {e:?}"));
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    http(addr, "GET", path, &[], "").await
}

pub async fn post(addr: SocketAddr, path: &str, body: &str) -> Response {
    http(addr, "POST", path, &[], body).await
}

/// `text` percent-encoded for a query string.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The resident memory of process `pid`, in KiB, from `/proc` (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status is readable on Linux: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}
