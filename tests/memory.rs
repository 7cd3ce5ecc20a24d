//! The server's memory under a resume storm, measured on the real binary:
//! many clients resuming from far back at once, none of them reading, must
//! not each make the server hold a copy of the history, and what the storm
//! needed is given back once they leave.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get, run, Board, Client};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MESSAGES: u64 = 6000;
const MESSAGE_CHARS: usize = 3900;
const CLIENTS: usize = 60;
const MIB: u64 = 1 << 20;
/// Most the server's RSS may grow while the storm is on: 60 welcomes of the
/// 1 MiB catch-up budget, not 60 copies of 5,000 long messages (20 MB each).
const PEAK_GROWTH: u64 = 64 * MIB;
/// How near its start the RSS must come back once the clients are gone:
/// 32 MiB, and some slack for the allocator's own bookkeeping.
const SETTLED_GROWTH: u64 = 40 * MIB;

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    common::rss_kib(pid) * 1024
}

/// Samples the RSS of `pid` every few milliseconds until dropped, keeping the peak.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn start(pid: u32) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        PeakRss {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A sampler that panicked has nothing left to report.
            let _ = thread.join();
        }
    }
}

/// A board whose file holds `MESSAGES` imported messages of `MESSAGE_CHARS`
/// characters; keep the directory alive as long as the board.
fn board_of_long_messages() -> (tempfile::TempDir, Board) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("board.db");
    let file = dir.path().join("import.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("a temp file"));
    for id in 1..=MESSAGES {
        let text = format!("{id} ").repeat(MESSAGE_CHARS)[..MESSAGE_CHARS].to_owned();
        let message =
            json!({"id": id, "name": "filler", "message": text, "time": 1_700_000_000_000u64 + id});
        writeln!(out, "{message}").expect("the temp file takes a line");
    }
    out.flush().expect("the temp file takes the lines");
    drop(out);
    let (status, _, err) = run(
        &[
            "import",
            file.to_str().expect("temp paths are UTF-8"),
            "--data",
            data.to_str().expect("temp paths are UTF-8"),
        ],
        dir.path(),
    );
    assert!(status.success(), "import failed: {err}");
    let board = Board::start_on(&data, 0, &[]);
    (dir, board)
}

/// Waits until the board counts `online` connections.
async fn wait_for_online(board: &Board, online: u64) {
    // Long enough for a server without a byte budget to build every
    // welcome, so such a server fails on memory rather than on time.
    let deadline = Instant::now() + common::WAIT * 6;
    loop {
        let info = get(board.addr, "/api/info").await.json();
        if info["online"] == online {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the board never counted {online} connections: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a connection and asks for a resume from the first message, then
/// never reads a byte of the answer.
async fn resume_without_reading(board: &Board) -> TcpStream {
    let mut stream = TcpStream::connect(board.addr).await.expect("connect");
    let request = format!(
        "GET /ws?since=1 HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        board.addr
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the upgrade");
    stream
}

#[tokio::test]
async fn a_resume_storm_of_clients_that_never_read_stays_small_and_gives_its_memory_back() {
    let (_dir, board) = board_of_long_messages();
    let pid = board.pid();
    // One resume from behind the window first, read to the end, so what a
    // first store read keeps for good (SQLite's page cache, the blocking
    // threads) is in the start.
    let warm = Client::connect(&format!("{}?since={}", board.ws_url(), MESSAGES - 1200)).await;
    drop(warm);
    wait_for_online(&board, 0).await;
    let start = rss(pid);

    let sampler = PeakRss::start(pid);
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(resume_without_reading(&board).await);
    }
    wait_for_online(&board, CLIENTS as u64).await;
    // Every welcome is built and handed to its socket by now or soon after.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = sampler.peak();
    drop(sampler);
    drop(clients);
    wait_for_online(&board, 0).await;

    let deadline = Instant::now() + common::WAIT;
    let mut now = rss(pid);
    while now > start + SETTLED_GROWTH && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = rss(pid);
    }
    let mib = |bytes: u64| bytes as f64 / MIB as f64;
    eprintln!(
        "resume storm RSS: start {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
        mib(start),
        mib(peak),
        mib(now)
    );
    assert!(
        peak < start + PEAK_GROWTH,
        "{CLIENTS} resumes grew the server from {:.1} MiB to {:.1} MiB (at most {} MiB more)",
        mib(start),
        mib(peak),
        PEAK_GROWTH / MIB
    );
    assert!(
        now <= start + SETTLED_GROWTH,
        "after the storm the server kept {:.1} MiB of its {:.1} MiB peak (start {:.1} MiB)",
        mib(now),
        mib(peak),
        mib(start)
    );
}
