//! `cargo bench --bench search`: search on a big board, measured on the real
//! release binary over loopback HTTP.
//!
//! It writes a board of ordinary text (words drawn from a vocabulary of
//! common English words and a long tail of rarer ones, skewed the way real
//! text is), imports it with `lanboard import` (which builds the index),
//! starts the board on it and measures:
//! - two-word queries (random pairs, the second a prefix, as typed) and
//!   one-letter queries (`a` … `z`, a prefix of every word that starts so):
//!   p50, p99 and max over HTTP, one request at a time on a kept connection;
//! - the server's RSS after start, and at rest after the queries;
//! - the migration of the same board as a schema 4 file (without the
//!   index) on its first start with search.
//!
//! Knobs: `SEARCH_MESSAGES=N` (default 1,000,000), `SEARCH_LANBOARD=PATH`
//! (another binary), `SEARCH_DIR=PATH` (keep the files there),
//! `SEARCH_REUSE=1` (search the board already in `SEARCH_DIR`). Without
//! `--bench` on its command line (as under `cargo test --benches`) it runs a
//! self-check on 2,000 messages.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Common English words, the head of the vocabulary.
const COMMON: &str = "the of and to a in is it you that he was for on are with as I his they be \
at one have this from or had by hot word but what some we can out other were all there when up use \
your how said an each she which do their time if will way about many then them write would like so \
these her long make thing see him two has look more day could go come did number sound no most people \
my over know water than call first who may down side been now find any new work part take get place \
made live where after back little only round man year came show every good me give our under name \
very through just form sentence great think say help low line differ turn cause much mean before move \
right boy old too same tell does set three want air well also play small end put home read hand port \
large spell add even land here must big high such follow act why ask men change went light kind off \
need house picture try us again animal point mother world near build self earth father head stand own \
page should country found answer school grow study still learn plant cover food sun four between state \
keep eye never last let thought city tree cross farm hard start might story saw far sea draw left late \
run while press close night real life few north printer meeting lunch coffee door code wifi password \
deploy build test server office room desk monday friday tomorrow today slides link team call";

/// Syllables the rarer words are made of.
const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ber", "dan", "fel", "gor", "hin", "jas",
    "kel", "lun", "mor", "nix", "pol", "qua", "ros", "tek", "vol", "zem",
];

/// A small, fast, deterministic random source (xorshift64*).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The vocabulary: the common words, then 20,000 rarer ones.
fn vocabulary() -> Vec<String> {
    let mut words: Vec<String> = COMMON.split_whitespace().map(str::to_lowercase).collect();
    let mut random = Random(0x5eed);
    while words.len() < 20_000 + COMMON.split_whitespace().count() {
        let syllables = 2 + random.below(3);
        words.push(
            (0..syllables)
                .map(|_| SYLLABLES[random.below(SYLLABLES.len())])
                .collect(),
        );
    }
    words
}

/// A word drawn with a skew towards the head of the vocabulary.
fn word<'a>(words: &'a [String], random: &mut Random) -> &'a str {
    let at = (words.len() as f64 * random.unit().powi(4)) as usize;
    &words[at.min(words.len() - 1)]
}

const NAMES: [&str; 12] = [
    "Ana", "Bob", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea",
];

/// Writes `count` messages as `lanboard export` would, one JSON line each.
fn write_board(path: &Path, count: u64, words: &[String]) {
    let mut out = BufWriter::new(std::fs::File::create(path).expect("the board file"));
    let mut random = Random(42);
    for id in 1..=count {
        let length = 4 + random.below(20);
        let text: Vec<&str> = (0..length).map(|_| word(words, &mut random)).collect();
        let line = serde_json::json!({
            "id": id,
            "name": NAMES[random.below(NAMES.len())],
            "message": text.join(" "),
            "time": 1_700_000_000_000i64 + id as i64 * 1000,
        });
        writeln!(out, "{line}").expect("writing the board file");
    }
    out.flush().expect("writing the board file");
}

/// The lanboard binary measured.
fn binary() -> PathBuf {
    std::env::var_os("SEARCH_LANBOARD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lanboard")))
}

/// A running board, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    started_in: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data: &Path) -> Server {
        Server::start_with(&[std::ffi::OsStr::new("--data"), data.as_os_str()])
    }

    fn start_with(store: &[&std::ffi::OsStr]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let started = Instant::now();
        let mut child = Command::new(binary())
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
            .stderr(Stdio::null())
            .spawn()
            .expect("lanboard starts");
        // The banner is printed once the board listens.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        assert!(first.is_some(), "lanboard printed no banner");
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            started_in: started.elapsed(),
        }
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

/// Latencies of a set of queries, and how many results they found.
struct Timings {
    micros: Vec<u64>,
    hits: usize,
    /// The slowest queries, slowest first, with their time in ms.
    slowest: Vec<(f64, String)>,
}

impl Timings {
    fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let at = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[at] as f64 / 1000.0
    }
}

async fn time_queries(client: &reqwest::Client, addr: SocketAddr, queries: &[String]) -> Timings {
    let mut timings = Timings {
        micros: Vec::with_capacity(queries.len()),
        hits: 0,
        slowest: Vec::new(),
    };
    for q in queries {
        let url = format!("http://{addr}/api/search?q={}", encode(q));
        let asked = Instant::now();
        let response = client.get(&url).send().await.expect("an answer");
        let status = response.status();
        let body = response.bytes().await.expect("a body");
        timings.micros.push(asked.elapsed().as_micros() as u64);
        assert_eq!(status, 200, "{q}: {}", String::from_utf8_lossy(&body));
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        timings.hits += answer["results"].as_array().map_or(0, Vec::len);
        let ms = *timings.micros.last().unwrap() as f64 / 1000.0;
        timings.slowest.push((ms, q.clone()));
    }
    timings.slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    timings.slowest.truncate(5);
    timings
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Makes `from` a schema 4 file: the board as lanboard kept it before search.
fn strip_index(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("the copy opens");
    conn.execute_batch(
        "DROP TABLE search_index; DROP TABLE IF EXISTS search_progress;
         DROP TABLE IF EXISTS file_refs; DROP TABLE IF EXISTS file_chunks;
         DROP TABLE IF EXISTS files; ALTER TABLE messages DROP COLUMN files;
         PRAGMA user_version = 4; VACUUM;",
    )
    .expect("the index is dropped");
}

/// What a node of a Redis board costs for search.
struct Node {
    filled_in: Duration,
    queries: Timings,
    index_mib: f64,
    rss_mib: f64,
    redis_mib: f64,
}

/// A `redis-server` from the PATH on a free loopback port, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisServer {
    fn start(dir: &Path) -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.ask("PING").is_none() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// The answer to one inline command, as text.
    fn ask(&self, command: &str) -> Option<String> {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut answer = vec![0; 64 * 1024];
        let n = stream.read(&mut answer).ok()?;
        Some(String::from_utf8_lossy(&answer[..n]).into_owned())
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let body = client
        .get(url)
        .send()
        .await
        .expect("an answer")
        .bytes()
        .await
        .expect("a body");
    serde_json::from_slice(&body).expect("JSON")
}

/// Imports the board into a fresh Redis, starts one node with a kept index
/// and measures how long it takes to read the board, what it costs, and
/// queries through it.
async fn on_a_redis_node(
    client: &reqwest::Client,
    dir: &Path,
    jsonl: &Path,
    count: u64,
    pairs: &[String],
) -> Option<Node> {
    let redis_dir = dir.join("redis");
    std::fs::create_dir_all(&redis_dir).ok()?;
    let Some(redis) = RedisServer::start(&redis_dir) else {
        eprintln!("no redis-server on the PATH: the Redis node is not measured");
        return None;
    };
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let status = Command::new(binary())
        .arg("import")
        .arg(jsonl)
        .args(["--redis", &url])
        .stdout(Stdio::null())
        .status()
        .expect("lanboard import runs");
    assert!(status.success(), "the import into Redis failed");
    let index = dir.join("node.index");
    for file in ["node.index", "node.index-wal", "node.index-shm"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    let started = Instant::now();
    let node = Server::start_with(&[
        std::ffi::OsStr::new("--redis"),
        std::ffi::OsStr::new(&url),
        std::ffi::OsStr::new("--search-index"),
        index.as_os_str(),
    ]);
    // The newest message's first word finds it first once the index holds
    // the whole board (the stream is read in order).
    let latest = get_json(
        client,
        &format!("http://{}/api/messages?limit=1", node.addr),
    )
    .await;
    let text = latest[0]["message"].as_str().expect("the newest message");
    let first = text.split(' ').next().unwrap_or_default();
    let newest = format!(
        "http://{}/api/search?q={}&limit=1",
        node.addr,
        encode(first)
    );
    loop {
        let answer = get_json(client, &newest).await;
        if answer["results"][0]["id"].as_u64() == Some(count) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the node never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filled_in = started.elapsed();
    let queries = time_queries(client, node.addr, &pairs[..pairs.len().min(300)]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    let index_mib = (size("node.index") + size("node.index-wal")) as f64 / 1048576.0;
    let redis_mib = redis
        .ask("INFO memory")
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0.0, |bytes| bytes / 1048576.0);
    Some(Node {
        filled_in,
        queries,
        index_mib,
        rss_mib: node.rss_mib(),
        redis_mib,
    })
}

fn main() {
    let benchmark = std::env::args().any(|a| a == "--bench");
    let count: u64 = match std::env::var("SEARCH_MESSAGES") {
        Ok(n) => n.parse().expect("SEARCH_MESSAGES is a number"),
        Err(_) if benchmark => 1_000_000,
        Err(_) => 2_000,
    };
    let kept = std::env::var_os("SEARCH_DIR").map(PathBuf::from);
    let temp = tempfile::tempdir().expect("a temp dir");
    let dir = kept.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("the bench folder");
    let words = vocabulary();

    let jsonl = dir.join("board.jsonl");
    let data = dir.join("board.db");
    let reuse = std::env::var_os("SEARCH_REUSE").is_some() && data.exists();
    let imported = Instant::now();
    if !reuse {
        let _ = std::fs::remove_file(&data);
        write_board(&jsonl, count, &words);
        let status = Command::new(binary())
            .arg("import")
            .arg(&jsonl)
            .arg("--data")
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("lanboard import runs");
        assert!(status.success(), "the import failed");
    }
    let import_time = imported.elapsed();
    let size_mib = std::fs::metadata(&data).map_or(0, |m| m.len()) as f64 / 1048576.0;

    let mut random = Random(7);
    let pairs: Vec<String> = (0..if benchmark { 1000 } else { 50 })
        .map(|_| {
            let first = word(&words, &mut random);
            let second = word(&words, &mut random);
            format!("{first} {second}")
        })
        .collect();
    let letters: Vec<String> = (0..if benchmark { 10 } else { 1 })
        .flat_map(|_| ('a'..='z').map(String::from))
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let server = Server::start(&data);
    let rss_started = server.rss_mib();
    let (two_words, one_letter) = runtime.block_on(async {
        // Warm up: the first queries read the index into the page cache.
        time_queries(&client, server.addr, &pairs[..pairs.len().min(50)]).await;
        let two = time_queries(&client, server.addr, &pairs).await;
        let one = time_queries(&client, server.addr, &letters).await;
        (two, one)
    });
    std::thread::sleep(Duration::from_secs(2));
    let rss_rest = server.rss_mib();
    let ready_in = server.started_in;
    drop(server);
    assert!(one_letter.hits > 0, "one-letter queries find messages");
    assert!(two_words.hits > 0, "two-word queries find messages");

    let old = dir.join("schema4.db");
    std::fs::copy(&data, &old).expect("a copy of the board");
    // The last commits may still be in the WAL only.
    let _ = std::fs::copy(data.with_extension("db-wal"), old.with_extension("db-wal"));
    let _ = std::fs::remove_file(old.with_extension("db-shm"));
    strip_index(&old);
    let migrated = Server::start(&old);
    let migration = migrated.started_in;
    let after: Timings = runtime.block_on(time_queries(&client, migrated.addr, &letters[..26]));
    drop(migrated);
    assert!(after.hits > 0, "the migrated board finds messages");

    let node = if benchmark || std::env::var_os("SEARCH_REDIS").is_some() {
        runtime.block_on(on_a_redis_node(&client, &dir, &jsonl, count, &pairs))
    } else {
        None
    };

    println!("## Search on {count} messages ({size_mib:.0} MiB file)\n");
    println!("| measure | value |\n|---|---|");
    println!(
        "| import with the index (`lanboard import`) | {:.1} s |",
        import_time.as_secs_f64()
    );
    println!(
        "| start on the file, ready to serve | {:.2} s |",
        ready_in.as_secs_f64()
    );
    println!(
        "| two-word query ({} queries): p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        two_words.micros.len(),
        two_words.quantile(0.5),
        two_words.quantile(0.99),
        two_words.quantile(1.0)
    );
    println!(
        "| one-letter query ({} queries): p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        one_letter.micros.len(),
        one_letter.quantile(0.5),
        one_letter.quantile(0.99),
        one_letter.quantile(1.0)
    );
    println!("| server RSS after start / at rest after the queries | {rss_started:.1} / {rss_rest:.1} MiB |");
    println!(
        "| first start of the same board as a schema 4 file (builds the index) | {:.1} s |",
        migration.as_secs_f64()
    );
    match node {
        Some(node) => {
            println!(
                "| Redis node: reading the whole board into its index at start | {:.1} s |",
                node.filled_in.as_secs_f64()
            );
            println!(
                "| Redis node: two-word query ({} queries, hits read again from Redis): p50 / p99 | {:.2} / {:.2} ms |",
                node.queries.micros.len(),
                node.queries.quantile(0.5),
                node.queries.quantile(0.99)
            );
            println!(
                "| Redis node: index file / node RSS at rest / Redis used memory | {:.0} MiB / {:.1} MiB / {:.0} MiB |",
                node.index_mib, node.rss_mib, node.redis_mib
            );
        }
        None => println!("| Redis node | not measured (no redis-server, or not asked) |"),
    }
    println!(
        "\nSlowest two-word queries: {}",
        two_words
            .slowest
            .iter()
            .map(|(ms, q)| format!("`{q}` {ms:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !benchmark {
        println!(
            "\n(self-check on {count} messages; `cargo bench --bench search` measures 1,000,000)"
        );
    }
}
