//! The WebSocket transport probed the way an attacker would: raw sockets
//! with no WebSocket library, declared lengths that lie, bytes that trickle,
//! requests pipelined ahead of the upgrade, and passphrases guessed through
//! every path at once.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{http, Board, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The mask key of every frame these tests send (clients must mask).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// A frame header as a client sends it: FIN bit, opcode, mask bit, the
/// declared length in its shortest form, the mask key.
fn header(fin: bool, opcode: u8, declared: u64) -> Vec<u8> {
    let mut bytes = vec![if fin { 0x80 } else { 0 } | opcode];
    match declared {
        0..=125 => bytes.push(0x80 | declared as u8),
        126..=0xffff => {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(declared as u16).to_be_bytes());
        }
        _ => {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&declared.to_be_bytes());
        }
    }
    bytes.extend_from_slice(&MASK);
    bytes
}

/// A whole masked frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = header(fin, opcode, payload.len() as u64);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    bytes
}

/// The upgrade request for `/ws`, with `extra` header lines.
fn upgrade_request(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A client's raw socket, with what it has read and not yet taken: raw, since
/// these tests are about the bytes on the wire, which no client crate would send.
struct Raw {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Raw {
            stream,
            read: Vec::new(),
        }
    }

    /// Upgrades on `/ws` and takes the `messages-available` frame.
    async fn upgraded(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.write(upgrade_request(addr, "").as_bytes()).await;
        let head = raw.http_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        let (opcode, payload) = raw.frame().await;
        assert_eq!(opcode, TEXT);
        assert!(String::from_utf8_lossy(&payload).contains("messages-available"));
        raw
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads until `wanted` bytes are buffered; false if the server closed first.
    async fn fill(&mut self, wanted: usize) -> bool {
        while self.read.len() < wanted {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("the server answers in time")
            {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.read.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        self.read.drain(..n).collect()
    }

    /// One HTTP response head, up to its blank line.
    async fn http_head(&mut self) -> String {
        loop {
            if let Some(end) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = self.take(end + 4);
                return String::from_utf8_lossy(&head).into_owned();
            }
            let wanted = self.read.len() + 1;
            assert!(self.fill(wanted).await, "the connection ended in a head");
        }
    }

    /// One server frame (never masked): its opcode and payload.
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        assert!(self.fill(2).await, "the connection ended before a frame");
        let opcode = self.read[0] & 0x0f;
        let (len, at) = match self.read[1] & 0x7f {
            126 => {
                assert!(self.fill(4).await);
                (u16::from_be_bytes([self.read[2], self.read[3]]) as usize, 4)
            }
            127 => {
                assert!(self.fill(10).await);
                let bytes: [u8; 8] = self.read[2..10].try_into().unwrap();
                (u64::from_be_bytes(bytes) as usize, 10)
            }
            short => (short as usize, 2),
        };
        assert!(self.fill(at + len).await, "the connection ended in a frame");
        self.take(at);
        (opcode, self.take(len))
    }

    /// Reads frames until a close frame; its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self.frame().await;
            if opcode == CLOSE {
                assert!(payload.len() >= 2, "a close frame without a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

/// The board still takes and answers a post over HTTP.
async fn board_still_works(board: &Board) {
    let posted = common::post(board.addr, "/api/messages", r#"{"message":"still here"}"#).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
}

#[tokio::test]
async fn a_header_declaring_two_to_the_62_bytes_is_closed_with_1009_within_a_second_and_what_follows_is_never_kept(
) {
    let board = Board::start(&[]);
    let mut raw = Raw::upgraded(board.addr).await;
    let before = common::rss_kib(board.pid());
    let sent = Instant::now();
    raw.write(&header(true, TEXT, 1 << 62)).await;
    assert_eq!(raw.close_code().await, 1009);
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "the close came after {:?}",
        sent.elapsed()
    );

    // Keep streaming what the header promised: 100 MiB, or as much as the
    // server takes before it lets go of the connection.
    let chunk = vec![0x5a; 64 * 1024];
    let mut streamed = 0usize;
    let streaming = async {
        while streamed < 100 << 20 {
            match raw.stream.write_all(&chunk).await {
                Ok(()) => streamed += chunk.len(),
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), streaming)
        .await
        .expect("streaming ends in time");
    let grown = common::rss_kib(board.pid()).saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "the server's RSS grew by {grown} KiB while {streamed} bytes were streamed at it"
    );
    assert!(
        streamed < 100 << 20,
        "the server kept reading all 100 MiB of a refused frame"
    );
    board_still_works(&board).await;
}

#[tokio::test]
async fn a_length_over_the_limit_is_refused_from_its_header_even_when_it_trickles_in_byte_by_byte()
{
    let board = Board::start(&["--max-frame-bytes", "4096"]);
    let mut raw = Raw::upgraded(board.addr).await;
    // Only the header of a 5,000-byte frame: no payload ever follows, so
    // only a check of the declared length can answer it.
    for byte in header(true, TEXT, 5000) {
        raw.write(&[byte]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(raw.close_code().await, 1009);
}

#[tokio::test]
async fn fragments_whose_running_total_passes_the_limit_are_refused_at_the_header_that_passes_it() {
    let board = Board::start(&["--max-frame-bytes", "4096"]);
    let mut raw = Raw::upgraded(board.addr).await;
    let first = frame(false, TEXT, &[b'a'; 3000]);
    raw.write(&first).await;
    // The second fragment's header alone takes the message to 6,000 bytes.
    raw.write(&header(true, CONTINUATION, 3000)).await;
    let sent = Instant::now();
    assert_eq!(raw.close_code().await, 1009);
    assert!(sent.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn fragments_within_the_limit_still_join_into_a_post() {
    let board = Board::start(&["--max-frame-bytes", "4096"]);
    let mut raw = Raw::upgraded(board.addr).await;
    let post = br#"{"event":"add-message","data":{"name":"frag","message":"joined"},"ack":1}"#;
    let (head, tail) = post.split_at(20);
    let mut bytes = frame(false, TEXT, head);
    bytes.extend(frame(true, CONTINUATION, tail));
    raw.write(&bytes).await;
    loop {
        let (opcode, payload) = raw.frame().await;
        if opcode == PING {
            continue;
        }
        let text = String::from_utf8_lossy(&payload).into_owned();
        assert_eq!(opcode, TEXT, "{text}");
        if text.contains(r#""event":"ack""#) {
            assert!(text.contains("joined"), "{text}");
            break;
        }
    }
}

#[tokio::test]
async fn a_request_pipelined_ahead_of_the_upgrade_is_answered_before_the_101() {
    let board = Board::start(&[]);
    let mut raw = Raw::connect(board.addr).await;
    let addr = board.addr;
    let pipelined = format!(
        "GET /api/info HTTP/1.1\r\nHost: {addr}\r\n\r\n{}",
        upgrade_request(addr, "")
    );
    raw.write(pipelined.as_bytes()).await;
    let first = raw.http_head().await;
    assert!(first.starts_with("HTTP/1.1 200"), "first answer: {first}");
    let length: usize = first
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    assert!(raw.fill(length).await);
    let body = raw.take(length);
    assert!(String::from_utf8_lossy(&body).contains(r#""name":"lanboard""#));
    let second = raw.http_head().await;
    assert!(
        second.starts_with("HTTP/1.1 101"),
        "second answer: {second}"
    );
    let (opcode, payload) = raw.frame().await;
    assert_eq!(opcode, TEXT);
    assert!(String::from_utf8_lossy(&payload).contains("messages-available"));
}

/// The three paths a passphrase can be guessed through; each answers with
/// its HTTP status.
async fn guess(addr: SocketAddr, path: usize, passphrase: &str) -> u16 {
    match path % 3 {
        0 => {
            let body = format!(r#"{{"password":"{passphrase}"}}"#);
            common::post(addr, "/api/login", &body).await.status
        }
        1 => {
            let bearer = format!("Bearer {passphrase}");
            http(
                addr,
                "GET",
                "/api/messages",
                &[("Authorization", &bearer)],
                "",
            )
            .await
            .status
        }
        _ => {
            let mut raw = Raw::connect(addr).await;
            let bearer = format!("Authorization: Bearer {passphrase}\r\n");
            raw.write(upgrade_request(addr, &bearer).as_bytes()).await;
            let head = raw.http_head().await;
            head.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
    }
}

#[tokio::test]
async fn wrong_passphrases_through_login_bearer_and_upgrade_share_one_budget_then_get_429() {
    let board = Board::start(&["--password", "correct horse"]);
    // The budget is 20 wrong guesses, spread over the three paths.
    for attempt in 0..20 {
        let status = guess(board.addr, attempt, "wrong").await;
        assert_eq!(
            status,
            401,
            "wrong guess {attempt} through path {}",
            attempt % 3
        );
    }
    for path in 0..3 {
        assert_eq!(guess(board.addr, path, "wrong").await, 429, "path {path}");
        // Spent means spent: not even the right passphrase is checked now.
        assert_eq!(
            guess(board.addr, path, "correct horse").await,
            429,
            "path {path} with the right passphrase"
        );
    }
    let stderr = board.stderr();
    assert_eq!(
        stderr.matches("too many wrong passphrases").count(),
        1,
        "the refusal is logged once:\n{stderr}"
    );
}

#[tokio::test]
async fn a_few_wrong_passphrases_leave_the_right_one_working_on_every_path() {
    let board = Board::start(&["--password", "correct horse"]);
    for attempt in 0..19 {
        assert_eq!(guess(board.addr, attempt, "wrong").await, 401);
    }
    assert_eq!(guess(board.addr, 0, "correct horse").await, 204);
    assert_eq!(guess(board.addr, 1, "correct horse").await, 200);
    assert_eq!(guess(board.addr, 2, "correct horse").await, 101);
}

#[tokio::test]
async fn an_upgrade_sent_at_once_gets_in_however_long_the_server_was_too_busy_to_read_it() {
    let board = Board::start(&[]);
    let mut raw = Raw::connect(board.addr).await;
    // The server takes the connection and finds nothing to read yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Then it is too busy to run for longer than the request timeout (a
    // stopped process is the busiest server there is), while the client's
    // whole request waits in the socket.
    // SAFETY: kill(2) on our own child's pid has no memory-safety effects.
    unsafe { libc::kill(board.pid() as i32, libc::SIGSTOP) };
    raw.write(upgrade_request(board.addr, "").as_bytes()).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // SAFETY: as above.
    unsafe { libc::kill(board.pid() as i32, libc::SIGCONT) };
    let head = raw.http_head().await;
    assert!(head.starts_with("HTTP/1.1 101"), "not let in: {head}");
    let (opcode, payload) = raw.frame().await;
    assert_eq!(opcode, TEXT);
    assert!(String::from_utf8_lossy(&payload).contains("messages-available"));
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_answered_408_and_closed_after_five_seconds() {
    let board = Board::start(&[]);
    let mut raw = Raw::connect(board.addr).await;
    let started = Instant::now();
    raw.write(b"GET /ws HTTP/1.1\r\nHost: board\r\n").await;
    let head = raw.http_head().await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4500),
        "answered after {waited:?}, before the client's time was up"
    );
    assert!(!raw.fill(raw.read.len() + 1).await, "the connection closes");
}

#[tokio::test]
async fn a_request_head_that_trickles_in_within_the_time_is_upgraded() {
    let board = Board::start(&[]);
    let mut raw = Raw::connect(board.addr).await;
    let request = upgrade_request(board.addr, "");
    // About two seconds of single bytes, each its own packet.
    raw.stream.set_nodelay(true).expect("TCP_NODELAY");
    let pause = Duration::from_millis(2000 / request.len() as u64);
    for byte in request.as_bytes() {
        raw.write(&[*byte]).await;
        tokio::time::sleep(pause).await;
    }
    let head = raw.http_head().await;
    assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
}

#[tokio::test]
async fn a_plain_request_pipelined_behind_its_head_is_answered_in_order() {
    let board = Board::start(&[]);
    let mut raw = Raw::connect(board.addr).await;
    let one = format!("GET /api/info HTTP/1.1\r\nHost: {}\r\n\r\n", board.addr);
    raw.write(format!("{one}{one}").as_bytes()).await;
    for _ in 0..2 {
        let head = raw.http_head().await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("a content-length");
        assert!(raw.fill(length).await);
        raw.take(length);
    }
}

#[tokio::test]
async fn a_request_whose_first_packet_comes_late_is_still_let_in() {
    // As when a reconnecting crowd overflows the listen backlog and the
    // client's request is sent again seconds later.
    let board = Board::start(&[]);
    let mut raw = Raw::connect(board.addr).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    raw.write(upgrade_request(board.addr, "").as_bytes()).await;
    let head = raw.http_head().await;
    assert!(head.starts_with("HTTP/1.1 101"), "not let in: {head}");
}
