//! `cargo bench --bench files`: upload and download throughput of a big
//! file on the real release binary over loopback HTTP, against a plain `cp`
//! of the same file on the same disk, and the server's memory while it takes
//! the upload.
//!
//! It makes a file of random bytes (25 MiB, the default `--max-file-bytes`)
//! in a scratch folder on the machine's disk, starts lanboard with `--data`
//! in the same folder (and, beside it, a `--memory` board), and then, run
//! after run, interleaved so that a neighbour's busy minute costs every
//! measure a run rather than one measure its median:
//! - `cp` of the file to a new path in that folder (the copy's write into
//!   the page cache included, no fsync: plain `cp`, which GNU coreutils
//!   does with `copy_file_range`, inside the kernel);
//! - for reference, the SHA-256 of the file in memory with ring, which the
//!   server computes on every upload;
//! - an upload of it (`POST /api/files`, the body streamed from the file),
//!   its first 8 bytes changed each run so that no upload is answered from
//!   an earlier one's copy, with the server's `VmRSS` sampled every 2 ms;
//! - a download of it (`GET /files/<id>`) into memory.
//!
//! Every step starts after a `sync`, so that no step pays for the write-back
//! of the one before it. Each upload's id is checked against the SHA-256 of
//! what was sent, and each download against the file, after the clock stops.
//! It prints medians (MB/s, 1 MB = 10^6 bytes), the ratios to `cp`, the
//! server's RSS growth during uploads, and what the same board costs for a
//! small image fetched once by each of 1,000 pages.
//!
//! Knobs: `FILES_RUNS=N` (default 7), `FILES_MIB=N` (file size, default 25),
//! `FILES_DIR=PATH` (the scratch folder's parent; by default the system's
//! temp folder unless it is in memory, then `target/tmp`), `FILES_MEMORY=0`
//! (no `--memory` board), `FILES_LANBOARD=PATH` (another binary). Without
//! `--bench` on its command line (as under `cargo test --bench files`) it
//! runs a self-check: a 1 MiB file, one run on each board, the content and
//! ids checked, no timing asserted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

const MIB: u64 = 1024 * 1024;
/// Bytes per read of the upload's body: the server's chunk size.
const READ_BYTES: usize = 256 * 1024;
/// How often the server's RSS is read during an upload.
const RSS_EVERY: Duration = Duration::from_millis(2);
/// The longest one request may take before the bench gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The most the server's RSS may grow while it takes an upload: the
/// requirement files were built to.
const RSS_BOUND_MIB: f64 = 8.0;
/// The image of the fetch measurement: a real screenshot from the docs.
const IMAGE: &[u8] = include_bytes!("../docs/phone.png");
/// Pages that each fetch the image once, and how many fetch at a time.
const PAGES: usize = 1_000;
const PAGES_AT_ONCE: usize = 100;

/// The settings read from the environment.
struct Knobs {
    benchmark: bool,
    runs: usize,
    bytes: u64,
    memory: bool,
    dir: Option<PathBuf>,
}

impl Knobs {
    fn from_env() -> Knobs {
        let benchmark = std::env::args().any(|a| a == "--bench");
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str| {
            var(name).map(|v| {
                v.trim()
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
        };
        Knobs {
            benchmark,
            runs: number("FILES_RUNS").map_or(if benchmark { 7 } else { 1 }, |n| n.max(1) as usize),
            bytes: number("FILES_MIB").map_or(if benchmark { 25 } else { 1 }, |n| n.max(1)) * MIB,
            memory: var("FILES_MEMORY").is_none_or(|v| v != "0"),
            dir: var("FILES_DIR").map(PathBuf::from),
        }
    }
}

/// The file system `path` is on, by name, and whether it lives in memory.
fn file_system(path: &Path) -> (String, bool) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return ("unknown".into(), false);
    };
    // SAFETY: statfs writes one struct of its own type; zeroed is a valid
    // start for plain data.
    let kind = unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        if libc::statfs(c_path.as_ptr(), &mut stat) != 0 {
            return ("unknown".into(), false);
        }
        stat.f_type as u64
    };
    let name = match kind {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0x0102_1994 => "tmpfs",
        0x8584_58F6 => "ramfs",
        other => return (format!("file system 0x{other:x}"), false),
    };
    (name.into(), matches!(name, "tmpfs" | "ramfs"))
}

/// Where the scratch folder goes, and a sentence saying why there.
fn scratch_parent(knobs: &Knobs) -> (PathBuf, String) {
    if let Some(dir) = &knobs.dir {
        std::fs::create_dir_all(dir).expect("FILES_DIR can be created");
        let (fs, _) = file_system(dir);
        return (dir.clone(), format!("{fs}, from FILES_DIR"));
    }
    let temp = std::env::temp_dir();
    let (fs, in_memory) = file_system(&temp);
    if !in_memory {
        return (temp, format!("{fs}, the system's temp folder"));
    }
    // The temp folder is in memory, and the comparison is with a disk.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&target).expect("the target's tmp folder can be created");
    let (fs, in_memory) = file_system(&target);
    let why = format!("{fs}, the target's tmp folder, as the system's temp folder is in memory");
    if in_memory {
        println!("files: WARNING: no folder on a disk found; FILES_DIR=PATH names one");
    }
    (target, why)
}

/// A small, fast, deterministic random source (xorshift64*).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Writes `bytes` random bytes to `path` and flushes them to the disk.
fn make_file(path: &Path, bytes: u64) {
    let mut out = std::fs::File::create(path).expect("the source file");
    let mut random = Random(0x5eed_f11e);
    let mut block = vec![0u8; MIB as usize];
    let mut left = bytes;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            word.copy_from_slice(&random.next().to_le_bytes());
        }
        let take = left.min(MIB) as usize;
        out.write_all(&block[..take])
            .expect("writing the source file");
        left -= take as u64;
    }
    out.sync_all().expect("the source file reaches the disk");
}

/// Makes the file's content new for run `run`: its first 8 bytes.
fn vary(path: &Path, run: usize) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("the source file opens");
    let stamp = (0x6c61_6e62_0000_0000u64 | run as u64).to_le_bytes();
    let at = file.metadata().map_or(0, |m| m.len().min(8)) as usize;
    file.write_all_at(&stamp[..at], 0)
        .expect("the source file takes its run's bytes");
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Flushes every file system's dirty pages, so that the next timed step
/// pays for no earlier step's write-back.
fn settle_disk() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// The lanboard binary measured.
fn binary() -> PathBuf {
    std::env::var_os("FILES_LANBOARD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lanboard")))
}

/// A running board, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        // It may have exited already; then reaping it is all that is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(store: &[&std::ffi::OsStr], max_file_bytes: u64) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(binary());
        command
            .args([
                "--bind",
                "127.0.0.1",
                "--no-qr",
                "--port",
                &port.to_string(),
            ])
            .args(store)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The default --max-file-bytes is 25 MiB; a bigger FILES_MIB needs more.
        if max_file_bytes > 25 * MIB {
            command.args(["--max-file-bytes", &max_file_bytes.to_string()]);
        }
        let mut child = command.spawn().expect("lanboard starts");
        // The banner is printed once the board listens.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        assert!(lines.next().is_some(), "lanboard printed no banner");
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// User plus system CPU time of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields follow the command name, whose parentheses may hold anything.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// The machine's CPU time so far, as (steal, all) ticks from `/proc/stat`:
/// time the host gave this virtual machine's CPUs to someone else.
fn steal_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let numbers: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    (
        numbers.get(7).copied().unwrap_or(0),
        numbers.iter().take(8).sum(),
    )
}

/// Reads a process's RSS every [`RSS_EVERY`] on a thread of its own until
/// stopped, keeping the highest value.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(RSS_EVERY);
                }
            })
        };
        RssSampler { stop, peak, thread }
    }

    /// The highest RSS seen, in KiB, one last reading included.
    fn stop(self, pid: u32) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        // The thread only reads /proc; a panic there loses one reading.
        let _ = self.thread.join();
        let last = rss_kib(pid).unwrap_or(0);
        self.peak.load(Ordering::Relaxed).max(last)
    }
}

/// An upload's body: the file read [`READ_BYTES`] at a time as the
/// connection takes it, so the client holds one piece, not the file.
/// The reads are blocking, from the page cache (the file was just written
/// or read), which a bench can afford on its own runtime thread.
struct FileBody {
    file: std::fs::File,
    left: u64,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let mut piece = vec![0u8; (self.left as usize).min(READ_BYTES)];
        if let Err(error) = self.file.read_exact(&mut piece) {
            return Poll::Ready(Some(Err(error)));
        }
        self.left -= piece.len() as u64;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(piece)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// The board's answer to an upload.
struct Uploaded {
    status: u16,
    file: serde_json::Value,
}

/// Uploads `path` as `name` and waits for the board's answer.
async fn upload(client: &reqwest::Client, addr: SocketAddr, path: &Path, name: &str) -> Uploaded {
    let file = std::fs::File::open(path).expect("the source file opens");
    let size = file.metadata().expect("the source file's size").len();
    let response = client
        .post(format!("http://{addr}/api/files?name={name}"))
        .header(reqwest::header::CONTENT_LENGTH, size)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap(FileBody { file, left: size }))
        .send()
        .await
        .expect("the board answers the upload");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("the upload's answer");
    let file = serde_json::from_slice(&body).unwrap_or_else(|_| {
        panic!(
            "upload answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
    });
    Uploaded { status, file }
}

/// Downloads file `id` into memory, a piece at a time as it arrives.
async fn download(client: &reqwest::Client, addr: SocketAddr, id: &str) -> Vec<Bytes> {
    let mut response = client
        .get(format!("http://{addr}/files/{id}"))
        .send()
        .await
        .expect("the board answers the download");
    assert_eq!(response.status(), 200, "GET /files/{id}");
    let mut pieces = Vec::new();
    while let Some(piece) = response.chunk().await.expect("the download's body") {
        pieces.push(piece);
    }
    pieces
}

/// True when the pieces put together are exactly `content`.
fn same(pieces: &[Bytes], content: &[u8]) -> bool {
    let mut at = 0;
    for piece in pieces {
        if content.get(at..at + piece.len()) != Some(&piece[..]) {
            return false;
        }
        at += piece.len();
    }
    at == content.len()
}

/// One board measured: SQLite on the disk, or `--memory`.
struct Board {
    label: &'static str,
    server: Server,
    upload_s: Vec<f64>,
    download_s: Vec<f64>,
    upload_cpu_s: Vec<f64>,
    download_cpu_s: Vec<f64>,
    rss_before_kib: Vec<u64>,
    rss_peak_kib: Vec<u64>,
}

impl Board {
    fn new(label: &'static str, server: Server) -> Board {
        Board {
            label,
            server,
            upload_s: Vec::new(),
            download_s: Vec::new(),
            upload_cpu_s: Vec::new(),
            download_cpu_s: Vec::new(),
            rss_before_kib: Vec::new(),
            rss_peak_kib: Vec::new(),
        }
    }

    /// Uploads and downloads the file at `path` once, timed, and checks
    /// both against its `content`, whose SHA-256 is `expected`.
    async fn measure(
        &mut self,
        client: &reqwest::Client,
        path: &Path,
        content: &[u8],
        expected: &str,
        run: usize,
    ) {
        let pid = self.server.pid();
        let addr = self.server.addr;

        settle_disk();
        let before = rss_kib(pid).expect("the server's VmRSS");
        let cpu = cpu_seconds(pid);
        let sampler = RssSampler::start(pid);
        let started = Instant::now();
        let answer = upload(client, addr, path, &format!("run-{run}.bin")).await;
        let took = started.elapsed().as_secs_f64();
        let peak = sampler.stop(pid);
        let cpu_after = cpu_seconds(pid);
        assert_eq!(
            answer.status, 201,
            "{}: a new content is stored anew: {}",
            self.label, answer.file
        );
        assert_eq!(answer.file["id"], expected, "the id is the SHA-256");
        assert_eq!(answer.file["size"], content.len() as u64);
        self.upload_s.push(took);
        self.rss_before_kib.push(before);
        self.rss_peak_kib.push(peak);
        if let (Some(a), Some(b)) = (cpu, cpu_after) {
            self.upload_cpu_s.push(b - a);
        }

        settle_disk();
        let cpu = cpu_seconds(pid);
        let started = Instant::now();
        let pieces = download(client, addr, expected).await;
        let took = started.elapsed().as_secs_f64();
        let cpu_after = cpu_seconds(pid);
        assert!(
            same(&pieces, content),
            "{}: the download is the upload",
            self.label
        );
        self.download_s.push(took);
        if let (Some(a), Some(b)) = (cpu, cpu_after) {
            self.download_cpu_s.push(b - a);
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// MB/s (10^6 bytes) of `bytes` moved in each of `seconds`: median, min, max.
fn rates(bytes: u64, seconds: &[f64]) -> (f64, f64, f64) {
    let each: Vec<f64> = seconds.iter().map(|s| bytes as f64 / s / 1e6).collect();
    let low = each.iter().copied().fold(f64::INFINITY, f64::min);
    let high = each.iter().copied().fold(0.0, f64::max);
    (median(&each), low, high)
}

/// What the image costs the board when each of 1,000 pages fetches it once:
/// the median and p99 of one GET, all of them, and the server's CPU time.
struct Fetches {
    p50_ms: f64,
    p99_ms: f64,
    total_s: f64,
    cpu_s: Option<f64>,
    cache_control: String,
}

async fn fetch_image(server: &Server, pages: usize) -> Fetches {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(PAGES_AT_ONCE)
        .build()
        .expect("an HTTP client");
    let addr = server.addr;
    let response = client
        .post(format!("http://{addr}/api/files?name=phone.png"))
        .header(reqwest::header::CONTENT_TYPE, "image/png")
        .body(IMAGE)
        .send()
        .await
        .expect("the image is uploaded");
    assert!(response.status().is_success(), "{}", response.status());
    let file: serde_json::Value = serde_json::from_slice(&response.bytes().await.expect("JSON"))
        .expect("the upload's answer is JSON");
    assert_eq!(file["type"], "image/png", "{file}");
    let url = format!(
        "http://{addr}/files/{}",
        file["id"].as_str().expect("an id")
    );
    let first = client.get(&url).send().await.expect("the image");
    let cache_control = first
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    assert_eq!(&first.bytes().await.expect("the image")[..], IMAGE);

    let gate = Arc::new(tokio::sync::Semaphore::new(PAGES_AT_ONCE));
    let cpu = cpu_seconds(server.pid());
    let started = Instant::now();
    let tasks: Vec<_> = (0..pages)
        .map(|_| {
            let (client, url, gate) = (client.clone(), url.clone(), gate.clone());
            tokio::spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = gate.acquire_owned().await.expect("an open gate");
                let asked = Instant::now();
                let response = client.get(&url).send().await.expect("the image");
                let body = response.bytes().await.expect("the image");
                assert_eq!(body.len(), IMAGE.len());
                asked.elapsed().as_secs_f64() * 1e3
            })
        })
        .collect();
    let mut times = Vec::with_capacity(pages);
    for task in tasks {
        times.push(task.await.expect("a fetch"));
    }
    let total_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu.zip(cpu_seconds(server.pid())).map(|(a, b)| b - a);
    times.sort_by(f64::total_cmp);
    Fetches {
        p50_ms: median(&times),
        p99_ms: times[((times.len() as f64 * 0.99).ceil() as usize).clamp(1, times.len()) - 1],
        total_s,
        cpu_s,
        cache_control,
    }
}

fn main() {
    let knobs = Knobs::from_env();
    let (parent, why) = scratch_parent(&knobs);
    let scratch = tempfile::Builder::new()
        .prefix("lanboard-files-")
        .tempdir_in(&parent)
        .expect("a scratch folder");
    let dir = scratch.path();
    println!("files: scratch folder {} ({why})", dir.display());
    let source = dir.join("source.bin");
    make_file(&source, knobs.bytes);

    let data = dir.join("board.db");
    let mut boards = vec![Board::new(
        "SQLite (--data on the disk)",
        Server::start(
            &[std::ffi::OsStr::new("--data"), data.as_os_str()],
            knobs.bytes,
        ),
    )];
    if knobs.memory {
        boards.push(Board::new(
            "--memory",
            Server::start(&[std::ffi::OsStr::new("--memory")], knobs.bytes),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client");

    let steal_before = steal_ticks();
    let mut cp_s = Vec::with_capacity(knobs.runs);
    let mut sha_s = Vec::with_capacity(knobs.runs);
    for run in 1..=knobs.runs {
        vary(&source, run);
        let content = std::fs::read(&source).expect("the source file");
        // What hashing alone costs, with the server's SHA-256 (ring's).
        let started = Instant::now();
        let expected = sha256_hex(&content);
        sha_s.push(started.elapsed().as_secs_f64());
        let copy = dir.join(format!("copy-{run}.bin"));
        settle_disk();
        let started = Instant::now();
        let status = Command::new("cp")
            .arg(&source)
            .arg(&copy)
            .status()
            .expect("cp runs");
        cp_s.push(started.elapsed().as_secs_f64());
        assert!(status.success(), "cp failed");
        assert_eq!(
            std::fs::metadata(&copy).map(|m| m.len()).ok(),
            Some(knobs.bytes)
        );
        // Only the disk space it took is at stake.
        let _ = std::fs::remove_file(&copy);
        for board in &mut boards {
            runtime.block_on(board.measure(&client, &source, &content, &expected, run));
        }
        eprintln!("files: run {run}/{} done", knobs.runs);
    }
    let pages = if knobs.benchmark { PAGES } else { 20 };
    let fetches = runtime.block_on(fetch_image(&boards[0].server, pages));
    // A second upload of the same content is answered from the stored file.
    let again = runtime.block_on(upload(&client, boards[0].server.addr, &source, "again.bin"));
    assert_eq!(again.status, 200, "the same content is stored once");
    let steal_after = steal_ticks();
    let steal = (steal_after.0 - steal_before.0) as f64
        / (steal_after.1 - steal_before.1).max(1) as f64
        * 100.0;

    let mb = knobs.bytes as f64 / 1e6;
    let (cp, cp_low, cp_high) = rates(knobs.bytes, &cp_s);
    println!(
        "\n## Files: {} MiB of random bytes, {} run(s), medians\n",
        knobs.bytes / MIB,
        knobs.runs
    );
    println!(
        "Machine: {} CPU(s), steal {steal:.1}% of CPU time over the bench (from /proc/stat); \
         load average at the end {}.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| step | board | MB/s (median) | min – max | vs cp | server CPU (median) |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| `cp` on the same disk (GNU cp: copy_file_range, in the kernel) | | {cp:.0} | \
         {cp_low:.0} – {cp_high:.0} | 1.00× | |"
    );
    let (sha, sha_low, sha_high) = rates(knobs.bytes, &sha_s);
    println!(
        "| for reference: SHA-256 of the file in memory (ring, one core) | | {sha:.0} | \
         {sha_low:.0} – {sha_high:.0} | {:.2}× | |",
        sha / cp
    );
    for board in &boards {
        for (step, seconds, cpu) in [
            ("upload", &board.upload_s, &board.upload_cpu_s),
            ("download", &board.download_s, &board.download_cpu_s),
        ] {
            let (rate, low, high) = rates(knobs.bytes, seconds);
            let cpu = median(cpu);
            println!(
                "| {step} | {} | {rate:.0} | {low:.0} – {high:.0} | {:.2}× | {:.0} ms ({:.1} ms/MB) |",
                board.label,
                rate / cp,
                cpu * 1e3,
                cpu * 1e3 / mb
            );
        }
    }
    println!(
        "\n| server RSS during an upload (sampled every {} ms) | before | peak | growth: median | max | bound |",
        RSS_EVERY.as_millis()
    );
    println!("|---|---|---|---|---|---|");
    for board in &boards {
        let growth: Vec<f64> = (board.rss_before_kib.iter())
            .zip(&board.rss_peak_kib)
            .map(|(before, peak)| (*peak as f64 - *before as f64) / 1024.0)
            .collect();
        let max = growth.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let bound = if board.label == "--memory" {
            "none: the board keeps the file in memory".to_owned()
        } else if max <= RSS_BOUND_MIB {
            format!("≤ {RSS_BOUND_MIB} MiB: met")
        } else {
            format!("≤ {RSS_BOUND_MIB} MiB: NOT met")
        };
        let mib = |kib: &[u64]| median(&kib.iter().map(|k| *k as f64 / 1024.0).collect::<Vec<_>>());
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {max:.1} MiB | {bound} |",
            board.label,
            mib(&board.rss_before_kib),
            mib(&board.rss_peak_kib),
            median(&growth)
        );
    }
    println!(
        "\nAn image ({} KiB PNG) fetched once by each of {pages} pages, {} at a time, \
         from the SQLite board: one GET p50 {:.2} ms, p99 {:.2} ms; all in {:.2} s ({:.0}/s); \
         server CPU {}; served with `Cache-Control: {}`, so a page fetches it once.",
        IMAGE.len() / 1024,
        pages.min(PAGES_AT_ONCE),
        fetches.p50_ms,
        fetches.p99_ms,
        fetches.total_s,
        pages as f64 / fetches.total_s,
        fetches
            .cpu_s
            .map_or("?".to_owned(), |c| format!("{:.0} ms", c * 1e3)),
        fetches.cache_control
    );
    if !knobs.benchmark {
        println!(
            "\nfiles: self-check passed (ids are the SHA-256, downloads are the uploads, \
             the same content is stored once); `cargo bench --bench files` measures"
        );
    }
}
