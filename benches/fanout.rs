//! `cargo bench --bench fanout`: a fan-out load generator that measures the
//! real release binary of lanboard, with durable history, with `--memory` and
//! as several nodes sharing one board in Redis, against the original
//! Socket.IO board and against the ceiling, over loopback WebSockets.
//!
//! # Layout
//! - this file: the knobs (environment variables), the scenarios, and the
//!   coordinator that starts a fresh server per run and drives the clients.
//! - `fanout/wire.rs`: a lean WebSocket client (upgrade, frames in place).
//! - `fanout/dialect.rs`: lanboard's and Socket.IO's frames, and the stamp
//!   (sender, sequence, send time) inside every generated message.
//! - `fanout/client.rs`: one client: joining, then sending and recording.
//! - `fanout/check.rs`: every client got every message once, in one order.
//! - `fanout/servers.rs`: the boards as child processes, pinning, `/proc`.
//! - `fanout/ceiling.rs`: the ceiling, the least work a server of protocol
//!   v1 can do (tokio-tungstenite; ids, one order, nothing else), served by
//!   this binary itself when started with `--ceiling-server`.
//! - `fanout/redis.rs`: the `redis-server` that the nodes of a run share.
//! - `fanout/report.rs`: medians, the tables and the JSON document.
//! - `fanout/hall.rs`: scenario 6's coordinator and its self-check;
//!   `fanout/hall_report.rs` its results, tables and JSON.
//! - `fanout/generator.rs`: scenario 6's clients, in child processes of
//!   this binary (`--hall-generator`), driven by JSON lines on stdin.
//!
//! # Scenarios
//! 1. latency: 10 clients, 1 sender, 1 message in flight.
//! 2. throughput: 100 clients, 10 senders, 16 in flight each.
//! 3. fan-out: 1,000 clients, 10 senders, 16 in flight each.
//! 4. idle memory: server RSS per connection with 1,000 and 10,000 clients.
//! 5. growth: a new client's history on a big board, and lanboard's start time.
//! 6. hall: a whole office at once (19,000 clients on one node, 95,000 on
//!    five Redis nodes, 5,000 on the original): the join (at most 256
//!    handshakes in flight), a storm (everyone drops and resumes within a
//!    second while posts go on), one post to all, and a post a second for
//!    30 s, every delivery checked once and in order. The clients live in
//!    generator processes of at most 9,500 sockets each, process `g` on
//!    source address 127.0.0.(g+2), so neither the 20,000 open files of a
//!    process nor a source address's ephemeral ports run out; times across
//!    processes come from the wall clock. Runs only when named, as it takes
//!    minutes; without `FANOUT_SERVERS` it measures lanboard, `redis5` and
//!    the original. See `fanout/hall.rs`.
//!
//! # The ceiling
//! `FANOUT_SERVERS=ceiling` is a server that does only what the generator
//! needs of protocol v1: an empty history on joining, and each post stamped
//! with the next id and the time and sent as lanboard would send it to every
//! client, in one order. It keeps, checks and limits nothing, so it shows
//! what this machine and this generator allow: scenarios 1 to 3 compare every
//! board with it in a "vs ceiling" table, and scenario 4 measures its idle
//! connections. It runs pinned to the server core like lanboard; scenario 5
//! (it holds no history) and image posts (it takes no files) skip it.
//!
//! # Several nodes
//! `FANOUT_SERVERS=redis1,redis2,redis3` measures scenarios 1 to 3 on 1, 2
//! and 3 lanboard nodes sharing one board in Redis. Each run starts a fresh
//! `redis-server` from the PATH (free loopback port, its own folder,
//! `--save "" --appendonly yes --appendfsync everysec`) and the nodes with
//! `--redis redis://127.0.0.1:PORT/0 --redis-prefix fanout-<pid>-<run>`, and
//! stops them all afterwards. Client `i` joins node `i % N`, so the senders
//! (the first clients) are spread too; every delivery's latency is recorded
//! overall and as same-node (the receiver is on its sender's node) or
//! cross-node, and the exactly-once, one-order check covers all clients on
//! all nodes. The nodes and `redis-server` share the server core; CPU time
//! and RSS are reported for each process. Without `redis-server` (6.2 or
//! newer), or with a lanboard build without `--redis`, these kinds are
//! skipped with a message. Scenarios 4 and 5 measure one process and skip them.
//!
//! # Knobs (environment variables)
//! - `FANOUT_SCENARIOS=1,2,3`: which scenarios (default 1 to 5; 6 only
//!   when named).
//! - `FANOUT_SERVERS=lanboard,memory,original,ceiling`: which boards (default
//!   these four); `redisN` adds N lanboard nodes on Redis (`redis1,redis2,redis3`).
//! - `FANOUT_RUNS=3`: runs of each of scenarios 1 to 3 (medians are quoted).
//! - `FANOUT_QUICK=1`: small sizes and one run, for a smoke test.
//! - `FANOUT_FILES=1`: scenarios 1 to 3 on lanboard and `--memory` also
//!   with posts that carry an image (uploaded once per run through
//!   `POST /api/files`, then named in every `add-message` beside the same
//!   text), run by run beside the text posts, and a table comparing them.
//!   The Redis boards keep no files yet, and the original and the ceiling
//!   take none.
//! - `FANOUT_M=N`: messages per sender in scenarios 1 to 3.
//! - `FANOUT_PIN=0`: no CPU pinning.
//! - `FANOUT_TIMEOUT=SECS`: longest wait for one run's messages (180).
//! - `FANOUT_CONNECT_CONCURRENCY=N`: connections opened at once (100).
//! - `FANOUT_SEED=DIR`: the original board's folder.
//! - `FANOUT_LANBOARD=PATH`: measure another lanboard binary.
//! - `FANOUT_JSON=PATH`: where the JSON goes (default `fanout.json` in
//!   `$CARGO_TARGET_DIR`, or in `target`).
//! - Scenario 6: `FANOUT_HALL_N` clients on a one-process board (19,000),
//!   `FANOUT_HALL_NODES_N` on a board of several nodes (19,000 a node),
//!   `FANOUT_HALL_ORIGINAL_N` on the original (5,000), `FANOUT_HALL_NODES`
//!   the Redis nodes measured when `FANOUT_SERVERS` is not set (5),
//!   `FANOUT_HALL_IN_FLIGHT` handshakes at once, all generators together
//!   (256), `FANOUT_HALL_SECONDS` of the sustained phase (30),
//!   `FANOUT_HALL_PER_GENERATOR` most sockets per generator (9,500),
//!   `FANOUT_HALL_GENERATORS` to fix their number, `FANOUT_HALL_BATCH_US`
//!   how long a generator lets events gather before it waits (250, 0 for
//!   none); `FANOUT_TIMEOUT` bounds each phase. `FANOUT_QUICK` makes it 1,000 clients (500 on the original)
//!   and 5 s.
//!
//! Without `--bench` on its command line (as under `cargo test --benches`)
//! or with `--check`, it runs only its self-check, which also opens every
//! benchmark run, and then scenario 6 in small: 300 clients over two
//! generators against the lanboard cargo built for the profile
//! (`target/debug/lanboard` under `cargo test`), checking only that nothing
//! failed, was missed or repeated (`FANOUT_HALL_CHECK=0` skips that part).

#[path = "fanout/ceiling.rs"]
mod ceiling;
#[path = "fanout/check.rs"]
mod check;
#[path = "fanout/client.rs"]
mod client;
#[path = "fanout/dialect.rs"]
mod dialect;
#[path = "fanout/generator.rs"]
mod generator;
#[path = "fanout/hall.rs"]
mod hall;
#[path = "fanout/redis.rs"]
mod redis;
#[path = "fanout/report.rs"]
mod report;
#[path = "fanout/servers.rs"]
mod servers;
#[path = "fanout/wire.rs"]
mod wire;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{watch, Semaphore};

use client::{Latencies, Phase, Plan, Shared};
use dialect::{Dialect, Posts};
use report::{Growth, Idle, Latency, Run, Summary, Usage};
use servers::{Deployment, Kind, Lanboard, Original, Pinning, Process, Server, Storage};
use wire::Socket;

/// How long a new Redis board waits before taking posts, plus a margin.
const YOUNG_REDIS_BOARD: Duration = Duration::from_millis(1500);

/// Connections being opened at once, unless `FANOUT_CONNECT_CONCURRENCY`
/// says otherwise. Below both servers' listen backlogs (lanboard's is std's
/// 128, Node's 511), so a full accept queue (whose dropped SYNs come back
/// only after a 1 s retransmit) does not decide the connect times.
const CONNECT_CONCURRENCY: usize = 100;
/// lanboard's `--history` in scenario 5: the smaller board's size, so a new
/// client receives as many messages from both boards.
const GROWTH_HISTORY: usize = 100;

/// How long one client may take to connect and receive the history.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the clients of a run may take to be polling, and to stop.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for a crowd of idle clients (and the presence frames their arrival
/// causes) to settle before the server's memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// New clients timed on each board of scenario 5.
const GROWTH_JOINS: usize = 11;

/// A throughput scenario: its shape and the messages per sender that make a
/// run last a few seconds on a 2-core machine.
struct Scenario {
    id: u32,
    name: &'static str,
    clients: u32,
    senders: u32,
    window: u32,
    /// Messages per sender on lanboard, on the original, and in quick mode.
    lanboard: u32,
    original: u32,
    quick: u32,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        id: 1,
        name: "latency",
        clients: 10,
        senders: 1,
        window: 1,
        lanboard: 20_000,
        original: 20_000,
        quick: 300,
    },
    Scenario {
        id: 2,
        name: "throughput",
        clients: 100,
        senders: 10,
        window: 16,
        lanboard: 3_000,
        original: 500,
        quick: 100,
    },
    Scenario {
        id: 3,
        name: "fan-out",
        clients: 1_000,
        senders: 10,
        window: 16,
        lanboard: 600,
        original: 40,
        quick: 10,
    },
];

/// The settings read from the environment.
struct Knobs {
    scenarios: Vec<u32>,
    runs: usize,
    quick: bool,
    kinds: Vec<Kind>,
    /// The boards of scenario 6: `kinds` when `FANOUT_SERVERS` names them,
    /// else its own (lanboard, N nodes on Redis, the original).
    hall_kinds: Vec<Kind>,
    hall: hall::Settings,
    /// Image posts beside text posts (`FANOUT_FILES`).
    files: bool,
    messages: Option<u32>,
    pin: bool,
    timeout: Duration,
    connect_concurrency: usize,
    seed: PathBuf,
    json: PathBuf,
}

impl Knobs {
    fn from_env() -> Result<Knobs, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str| -> Result<Option<u64>, String> {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{name}={v} is not a number"))
                })
                .transpose()
        };
        let quick = var("FANOUT_QUICK").is_some_and(|v| v != "0");
        let scenarios = match var("FANOUT_SCENARIOS") {
            None => vec![1, 2, 3, 4, 5],
            Some(list) => list
                .split(',')
                .map(|s| match s.trim().parse::<u32>() {
                    Ok(n @ 1..=6) => Ok(n),
                    _ => Err(format!(
                        "FANOUT_SCENARIOS: {s:?} is not a scenario (1 to 6)"
                    )),
                })
                .collect::<Result<_, _>>()?,
        };
        let kinds = match var("FANOUT_SERVERS") {
            None => vec![
                Kind::Lanboard,
                Kind::LanboardMemory,
                Kind::Original,
                Kind::Ceiling,
            ],
            Some(list) => list
                .split(',')
                .map(|s| {
                    Kind::parse(s.trim()).ok_or_else(|| {
                        format!(
                            "FANOUT_SERVERS: {s:?} is not one of lanboard, memory, original, \
                             ceiling, redisN (N lanboard nodes on Redis, 1 to {})",
                            servers::MAX_NODES
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let timeout = Duration::from_secs(number("FANOUT_TIMEOUT")?.unwrap_or(180));
        let hall = hall::Settings::from_env(quick, timeout)?;
        let hall_kinds = match var("FANOUT_SERVERS") {
            Some(_) => kinds.clone(),
            None => vec![Kind::Lanboard, Kind::Redis(hall.nodes), Kind::Original],
        };
        let target = var("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
        Ok(Knobs {
            scenarios,
            runs: number("FANOUT_RUNS")?.map_or(if quick { 1 } else { 3 }, |n| n.max(1) as usize),
            quick,
            kinds,
            hall_kinds,
            hall,
            files: var("FANOUT_FILES").is_some_and(|v| v != "0"),
            messages: number("FANOUT_M")?.map(|m| m.clamp(1, u32::MAX.into()) as u32),
            pin: var("FANOUT_PIN").is_none_or(|v| v != "0"),
            timeout,
            connect_concurrency: number("FANOUT_CONNECT_CONCURRENCY")?
                .map_or(CONNECT_CONCURRENCY, |n| n.max(1) as usize),
            seed: var("FANOUT_SEED").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/socketio-seed"),
                PathBuf::from,
            ),
            json: var("FANOUT_JSON")
                .map_or_else(|| Path::new(&target).join("fanout.json"), PathBuf::from),
        })
    }

    fn wants(&self, scenario: u32) -> bool {
        self.scenarios.contains(&scenario)
    }

    /// Every board some wanted scenario measures.
    fn every_kind(&self) -> impl Iterator<Item = &Kind> {
        let hall: &[Kind] = if self.wants(6) { &self.hall_kinds } else { &[] };
        self.kinds.iter().chain(hall)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Scenario 6 runs this binary again as its generators.
    if args.first().map(String::as_str) == Some(generator::ARG) {
        return generator::main();
    }
    // The ceiling is this binary started again by the coordinator.
    if args.first().is_some_and(|a| a == ceiling::ARG) {
        return ceiling::main();
    }
    self_check();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--check") {
        hall::check();
        println!("fanout: self-check passed; `cargo bench --bench fanout` measures");
        return ExitCode::SUCCESS;
    }
    let knobs = match Knobs::from_env() {
        Ok(knobs) => knobs,
        Err(message) => {
            eprintln!("fanout: {message}");
            return ExitCode::FAILURE;
        }
    };
    // Read before anything starts, so the load average is the neighbours'.
    let machine = servers::machine();
    let open_files = servers::raise_open_files();
    let pinning = Pinning::apply(knobs.pin);
    let workers = pinning.generator.len().max(1);
    // Threads inherit the affinity set above, so the runtime's workers stay
    // on the generator's cores.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fanout: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("fanout: self-check passed (wire, dialects, exactly-once/order checker)");
    println!("fanout: machine: {machine}");
    println!(
        "fanout: {}; tokio multi-thread runtime with {workers} worker(s); open-file limit {open_files}",
        pinning.describe()
    );
    runtime.block_on(bench(knobs, pinning, workers, machine))
}

/// Runs every self-check; panics on the first failure.
fn self_check() {
    wire::self_check();
    dialect::self_check();
    check::self_check();
    client::self_check();
    report::self_check();
    generator::self_check();
    hall::self_check();
    servers::self_check();
    redis::self_check();
    ceiling::self_check();
}

/// Whether the original board can be measured, and if not, why.
enum OriginalState {
    NotWanted,
    Ready(Original),
    Skipped(String),
}

/// Whether lanboard nodes on Redis can be measured, and if not, why.
enum RedisState {
    NotWanted,
    /// The version of the `redis-server` on the PATH.
    Ready(String),
    Skipped(String),
}

async fn bench(knobs: Knobs, pinning: Pinning, workers: usize, machine: String) -> ExitCode {
    let scratch = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("fanout: cannot create a scratch folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lanboard = Lanboard::new();
    println!(
        "fanout: lanboard {}; --rate-limit {}",
        lanboard.binary.display(),
        if lanboard.rate_limit_flag {
            "0 passed"
        } else {
            "is not in this build (not passed)"
        }
    );
    let original_state = if knobs.every_kind().any(|&k| k == Kind::Original) {
        eprintln!("fanout: installing the original board (npm ci) ...");
        match Original::install(&knobs.seed, scratch.path()) {
            Ok(original) => OriginalState::Ready(original),
            Err(why) => {
                println!("fanout: SKIPPING the original board: {why}");
                OriginalState::Skipped(why)
            }
        }
    } else {
        OriginalState::NotWanted
    };
    let redis_state = if knobs.every_kind().any(|k| matches!(k, Kind::Redis(_))) {
        let ready = if lanboard.redis_flag {
            redis::version()
        } else {
            Err(format!("{} has no --redis flag", lanboard.binary.display()))
        };
        match ready {
            Ok(version) => {
                println!(
                    "fanout: redis-server {version} for the Redis boards, started fresh for every run \
                     (appendonly yes, appendfsync everysec, no snapshots)"
                );
                RedisState::Ready(version)
            }
            Err(why) => {
                println!("fanout: SKIPPING the Redis boards: {why}");
                RedisState::Skipped(why)
            }
        }
    } else {
        RedisState::NotWanted
    };
    let usable = |k: &Kind| match k {
        Kind::Original => matches!(original_state, OriginalState::Ready(_)),
        Kind::Redis(_) => matches!(redis_state, RedisState::Ready(_)),
        Kind::Lanboard | Kind::LanboardMemory | Kind::Ceiling => true,
    };
    let kinds: Vec<Kind> = knobs.kinds.iter().copied().filter(usable).collect();
    let hall_kinds: Vec<Kind> = knobs.hall_kinds.iter().copied().filter(usable).collect();
    let original = match &original_state {
        OriginalState::Ready(original) => Some(original),
        _ => None,
    };
    let core = pinning.server;
    let bed = Bed {
        lanboard: &lanboard,
        original,
        scratch: scratch.path(),
        core,
        timeout: knobs.timeout,
        connect_concurrency: knobs.connect_concurrency,
    };

    // Each board with text posts, and the boards that keep files with image
    // posts too, right after.
    let series: Vec<(Kind, Posts)> = (kinds.iter())
        .flat_map(|&kind| {
            let image = knobs.files && matches!(kind, Kind::Lanboard | Kind::LanboardMemory);
            std::iter::once((kind, Posts::Text)).chain(image.then_some((kind, Posts::Image)))
        })
        .collect();
    if knobs.files && kinds.iter().any(|k| matches!(k, Kind::Redis(_))) {
        println!("fanout: FANOUT_FILES: the Redis boards keep no files yet; they post text only");
    }
    if knobs.files && kinds.contains(&Kind::Ceiling) {
        println!("fanout: FANOUT_FILES: the ceiling takes no files; it posts text only");
    }
    let mut runs: Vec<Run> = Vec::new();
    let mut summaries: Vec<Summary> = Vec::new();
    for scenario in SCENARIOS.iter().filter(|s| knobs.wants(s.id)) {
        // Rounds of one run per board, rather than all runs of one board in
        // a row: on a shared machine a neighbour's busy minute then costs
        // every board a run, not one board its median.
        let mut by_series: Vec<Vec<Run>> = vec![Vec::new(); series.len()];
        for run in 1..=knobs.runs {
            for (&(kind, posts), these) in series.iter().zip(&mut by_series) {
                let messages = knobs.messages.unwrap_or(if knobs.quick {
                    scenario.quick
                } else if kind == Kind::Original {
                    scenario.original
                } else {
                    scenario.lanboard
                });
                eprint!(
                    "scenario {} {} on {}{}, run {run}/{}: ",
                    scenario.id,
                    scenario.name,
                    kind.label(),
                    posts.suffix(),
                    knobs.runs
                );
                // Progress text only; a failed flush loses nothing.
                let _ = std::io::stderr().flush();
                let result = throughput_run(&bed, kind, posts, scenario, messages, run).await;
                eprintln!("{}", result.line());
                these.push(result);
            }
        }
        for these in by_series {
            summaries.extend(report::summarise(&these));
            runs.extend(these);
        }
    }

    let single: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| !matches!(k, Kind::Redis(_)))
        .collect();
    if single.len() < kinds.len() && (knobs.wants(4) || knobs.wants(5)) {
        println!("fanout: scenarios 4 and 5 measure one server process; the Redis boards are measured in scenarios 1 to 3 only");
    }
    let kinds = single;
    let mut idle = Vec::new();
    if knobs.wants(4) {
        let sizes: &[usize] = if knobs.quick {
            &[1_000]
        } else {
            &[1_000, 10_000]
        };
        for &kind in &kinds {
            for &clients in sizes {
                eprint!(
                    "scenario 4 idle memory on {}, {clients} clients: ",
                    kind.label()
                );
                let result = idle_run(&bed, kind, clients).await;
                match &result.failure {
                    None => eprintln!("{} per connection", report::bytes(result.per_connection())),
                    Some(why) => eprintln!("FAILED: {why}"),
                }
                idle.push(result);
            }
        }
    }

    let mut growth = Vec::new();
    if knobs.wants(5) {
        if kinds.contains(&Kind::LanboardMemory) {
            println!("fanout: scenario 5 skips lanboard --memory: a memory board cannot be imported into");
        }
        if kinds.contains(&Kind::Ceiling) {
            println!("fanout: scenario 5 skips the ceiling: it keeps no history");
        }
        for &kind in &kinds {
            let sizes: &[u64] = match (kind, knobs.quick) {
                (Kind::LanboardMemory | Kind::Redis(_) | Kind::Ceiling, _) => &[],
                (Kind::Lanboard, false) => &[100, 1_000_000],
                (Kind::Lanboard, true) => &[100, 10_000],
                (Kind::Original, false) => &[100, 100_000],
                (Kind::Original, true) => &[100, 2_000],
            };
            for &stored in sizes {
                eprint!(
                    "scenario 5 growth on {}, {stored} stored messages: ",
                    kind.label()
                );
                // Progress text only; a failed flush loses nothing.
                let _ = std::io::stderr().flush();
                let result = growth_run(&bed, kind, stored).await;
                match &result.failure {
                    None => eprintln!(
                        "history {} in {}",
                        report::bytes(result.welcome_bytes as f64),
                        report::micros((result.join_s * 1e6) as u64)
                    ),
                    Some(why) => eprintln!("FAILED: {why}"),
                }
                growth.push(result);
            }
        }
    }

    let halls = if knobs.wants(6) {
        hall::run(&bed, &hall_kinds, &knobs.hall, &pinning.generator).await
    } else {
        Vec::new()
    };

    println!();
    println!("machine: {machine}");
    println!(
        "fanout results ({}; {} run(s) per scenario, medians; {})",
        pinning.describe(),
        knobs.runs,
        if knobs.quick {
            "QUICK sizes"
        } else {
            "full sizes"
        }
    );
    if let OriginalState::Skipped(why) = &original_state {
        println!("The original board was SKIPPED ({why}), so there are no ratios.");
    }
    if let RedisState::Skipped(why) = &redis_state {
        println!("The Redis boards were SKIPPED ({why}).");
    }
    if !summaries.is_empty() {
        println!(
            "\nScenarios 1-3 (latency from send to each receiver; CPU s = CPU time of all \
             server processes from first send to last delivery; RSS summed at the end):"
        );
        print!("{}", report::throughput_table(&summaries));
    }
    if !report::versus_ceiling(&summaries).is_empty() {
        println!(
            "\nAgainst the ceiling, board / ceiling (frame B: one delivery's WebSocket payload; \
             CPU ns/deliv: the server's CPU time over the run per delivery):"
        );
        print!("{}", report::ceiling_table(&summaries));
    }
    if summaries.iter().any(|s| s.posts == Posts::Image) {
        println!(
            "\nPosts with an image against the same posts without it, text / image (frame B: \
             one delivery's WebSocket payload; CPU s: the server's, for the same deliveries):"
        );
        print!("{}", report::posts_table(&summaries));
    }
    if summaries.iter().any(|s| matches!(s.kind, Kind::Redis(_))) {
        println!(
            "\nScenarios 1-3 by node (client i joins node i % N, senders too; same node: the \
             receiver is on its sender's node; vs SQLite: deliveries/s over one lanboard on SQLite):"
        );
        print!("{}", report::nodes_table(&summaries));
        println!(
            "\nEach process (CPU s over the same time; % core = CPU s / wall time, all server \
             processes share {}; RSS at the end):",
            pinning
                .server
                .map_or("the machine with the generator".to_owned(), |core| format!(
                    "core {core}"
                ))
        );
        print!("{}", report::process_table(&summaries));
    }
    if !idle.is_empty() {
        println!("\nScenario 4, idle connections (RSS of the server process):");
        print!("{}", report::idle_table(&idle));
    }
    if !growth.is_empty() {
        println!(
            "\nScenario 5, growth (lanboard runs with --history {GROWTH_HISTORY} and sends a \
             new client its newest {GROWTH_HISTORY} messages; the original sends all it holds):"
        );
        print!("{}", report::growth_table(&growth));
    }
    if !halls.is_empty() {
        println!(
            "\nScenario 6, hall (one run per board; the generators are processes of their own):"
        );
        print!("{}", hall::tables(&halls, &knobs.hall));
    }

    let document = json!({
        "bench": "fanout",
        "quick": knobs.quick,
        "image_posts": knobs.files,
        "machine": machine,
        "pinning": pinning.describe(),
        "server_core": pinning.server,
        "generator_cores": pinning.generator,
        "generator_workers": workers,
        "lanboard_rate_limit_flag": lanboard.rate_limit_flag,
        "original": match &original_state {
            OriginalState::NotWanted => json!("not requested"),
            OriginalState::Ready(_) => json!("measured"),
            OriginalState::Skipped(why) => json!(format!("skipped: {why}")),
        },
        "redis": match &redis_state {
            RedisState::NotWanted => json!("not requested"),
            RedisState::Ready(version) => json!({
                "redis_server": version,
                "options": "--save \"\" --appendonly yes --appendfsync everysec",
            }),
            RedisState::Skipped(why) => json!(format!("skipped: {why}")),
        },
        "summary": summaries.iter().map(Summary::json).collect::<Vec<_>>(),
        "ratios": report::ratios(&summaries).iter().map(|(scenario, kind, ratio)| json!({
            "scenario": scenario, "server": kind.label(), "deliveries_per_s_vs_original": ratio,
        })).collect::<Vec<_>>(),
        "vs_ceiling": report::versus_ceiling(&summaries).iter().map(|v| v.json()).collect::<Vec<_>>(),
        "runs": runs.iter().map(Run::json).collect::<Vec<_>>(),
        "idle": idle.iter().map(Idle::json).collect::<Vec<_>>(),
        "growth": growth.iter().map(Growth::json).collect::<Vec<_>>(),
        "hall_settings": knobs.wants(6).then(|| knobs.hall.json()),
        "hall": halls.iter().map(hall::Hall::json).collect::<Vec<_>>(),
    });
    if let Some(parent) = knobs.json.parent() {
        // A missing folder shows up as the write error below.
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&knobs.json, format!("{document:#}\n")) {
        Ok(()) => println!("\nJSON: {}", knobs.json.display()),
        Err(e) => eprintln!("fanout: cannot write {}: {e}", knobs.json.display()),
    }

    let failed = runs.iter().filter(|r| r.failure.is_some()).count()
        + idle.iter().filter(|r| r.failure.is_some()).count()
        + growth.iter().filter(|r| r.failure.is_some()).count()
        + halls.iter().filter(|h| h.failed()).count();
    if failed > 0 {
        println!("fanout: {failed} measurement(s) FAILED; see above");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What every measurement needs to start a board.
struct Bed<'a> {
    lanboard: &'a Lanboard,
    original: Option<&'a Original>,
    scratch: &'a Path,
    core: Option<usize>,
    /// Longest wait for the messages of one run.
    timeout: Duration,
    connect_concurrency: usize,
}

impl Bed<'_> {
    /// Starts a fresh one-process board of `kind` with its files in `dir` (on
    /// lanboard's default storage, `dir/b.db`, which may already hold an import).
    fn start(&self, kind: Kind, dir: &Path) -> Result<Server, String> {
        let log = dir.join("lanboard.log");
        match kind {
            Kind::Lanboard => {
                self.lanboard
                    .start(Storage::File(&dir.join("b.db")), &[], &log, self.core)
            }
            Kind::LanboardMemory => self.lanboard.start(Storage::Memory, &[], &log, self.core),
            Kind::Original => self
                .original
                .ok_or("the original board is not installed")?
                .start(dir, self.core),
            Kind::Ceiling => servers::start_ceiling(&dir.join("ceiling.log"), self.core),
            Kind::Redis(_) => Err("a board on Redis has several processes: deploy it".into()),
        }
    }

    /// Starts every process of a fresh board of `kind` with its files in
    /// `dir`: one process, or a `redis-server` and then the nodes, one by one
    /// (the first creates the board in Redis, the others join it).
    fn deploy(&self, kind: Kind, dir: &Path) -> Result<Deployment, String> {
        let Kind::Redis(nodes) = kind else {
            let role = match kind {
                Kind::Original => "original",
                Kind::Ceiling => "ceiling",
                Kind::Lanboard | Kind::LanboardMemory | Kind::Redis(_) => "lanboard",
            };
            return Ok(Deployment::single(self.start(kind, dir)?, role));
        };
        let redis = redis::start(dir, self.core)?;
        let url = redis::url(&redis);
        // Unique per run, although each run has its own redis-server too:
        // a leftover board can never be mistaken for this one.
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "fanout-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::SeqCst) + 1
        );
        let storage = Storage::Redis {
            url: &url,
            prefix: &prefix,
        };
        let mut started = Vec::with_capacity(usize::from(nodes));
        for node in 1..=nodes {
            let log = dir.join(format!("node-{node}.log"));
            let server = self
                .lanboard
                .start(storage, &[], &log, self.core)
                .map_err(|why| format!("node {node} of {nodes}: {why}"))?;
            started.push(server);
        }
        // A Redis board takes its first posts only once it is 1.2 s old (so
        // that running nodes can raise the id counter after a lost board; see
        // YOUNG_BOARD in src/store/redis.rs). Waiting it out here keeps that
        // one-time pause out of the latencies measured.
        std::thread::sleep(YOUNG_REDIS_BOARD);
        Ok(Deployment::cluster(started, redis))
    }

    fn folder(&self) -> Result<tempfile::TempDir, String> {
        tempfile::tempdir_in(self.scratch).map_err(|e| format!("a scratch folder: {e}"))
    }
}

fn dialect(kind: Kind) -> Dialect {
    match kind {
        Kind::Original => Dialect::SocketIo,
        Kind::Lanboard | Kind::LanboardMemory | Kind::Redis(_) | Kind::Ceiling => Dialect::Lanboard,
    }
}

/// The image that image posts carry: a real screenshot from the docs.
const IMAGE: &[u8] = include_bytes!("../docs/phone.png");

/// Uploads [`IMAGE`] to the board at `addr`; returns its file id.
async fn upload_image(addr: SocketAddr) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("an HTTP client: {e}"))?;
    let response = client
        .post(format!("http://{addr}/api/files?name=fanout.png"))
        .header(reqwest::header::CONTENT_TYPE, "image/png")
        .body(IMAGE)
        .send()
        .await
        .map_err(|e| format!("uploading the image: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("the upload's answer: {e}"))?;
    let file: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "uploading the image: {status}: {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    match file["id"].as_str() {
        Some(id) if status.is_success() => Ok(id.to_owned()),
        _ => Err(format!("uploading the image: {status}: {file}")),
    }
}

/// One run of a throughput scenario on a fresh board.
async fn throughput_run(
    bed: &Bed<'_>,
    kind: Kind,
    posts: Posts,
    scenario: &Scenario,
    messages: u32,
    run: usize,
) -> Run {
    let shape = Shape {
        clients: scenario.clients,
        senders: scenario.senders,
        window: scenario.window,
        messages,
    };
    let mut result = Run {
        scenario: scenario.id,
        name: scenario.name,
        kind,
        posts,
        run,
        clients: shape.clients,
        senders: shape.senders,
        window: shape.window,
        messages,
        connect_s: f64::NAN,
        wall_s: f64::NAN,
        deliveries: 0,
        deliveries_per_s: f64::NAN,
        msgs_per_s: f64::NAN,
        latency: Latency::default(),
        same_node: None,
        cross_node: None,
        nodes: kind.nodes(),
        cpu_s: None,
        rss_bytes: None,
        processes: Vec::new(),
        generator_cpu_s: None,
        sender_fifo: false,
        frame_bytes: None,
        notes: Vec::new(),
        failure: None,
    };
    let notes = &mut result.notes;
    let measured = async {
        let dir = bed.folder()?;
        let mut deployment = bed.deploy(kind, dir.path())?;
        let processes = deployment.processes();
        let addrs = deployment.addrs();
        let files = match posts {
            Posts::Text => Vec::new(),
            Posts::Image => dialect::files_json(&upload_image(addrs[0]).await?),
        };
        let measured = measure(bed, &addrs, &processes, dialect(kind), shape, &files).await;
        *notes = processes
            .iter()
            .flat_map(|p| {
                p.notable()
                    .into_iter()
                    .map(|line| format!("{}: {line}", p.role))
            })
            .collect();
        let mut measured = measured.map_err(|why| with_log(why, &deployment.log_tail()))?;
        // A server that died explains whatever the clients saw.
        if let Some(exit) = deployment.exits().into_iter().next() {
            measured.failure.get_or_insert(exit);
        }
        measured.failure = measured
            .failure
            .map(|why| with_log(why, &deployment.log_tail()));
        Ok::<_, String>(measured)
    };
    match measured.await {
        Ok(m) => {
            let total = f64::from(shape.senders) * f64::from(messages);
            result.connect_s = m.connect_s;
            result.wall_s = m.wall_s;
            result.deliveries = m.deliveries;
            result.deliveries_per_s = m.deliveries as f64 / m.wall_s;
            result.msgs_per_s = total / m.wall_s;
            result.latency = Latency::of(&m.latency.all);
            result.same_node = Latency::of_some(&m.latency.same_node);
            result.cross_node = Latency::of_some(&m.latency.cross_node);
            result.cpu_s = Usage::total_cpu_s(&m.processes);
            result.rss_bytes = Usage::total_rss_bytes(&m.processes);
            result.processes = m.processes;
            result.generator_cpu_s = m.generator_cpu_s;
            result.sender_fifo = m.sender_fifo;
            result.frame_bytes = m.frame_bytes;
            result.failure = m.failure;
        }
        Err(why) => result.failure = Some(why),
    }
    result
}

/// `why`, followed by the servers' last log lines if there are any.
fn with_log(why: String, log: &str) -> String {
    if log.trim().is_empty() {
        why
    } else {
        format!("{why}\n  server log (last lines):\n{log}")
    }
}

/// The shape of a measured run.
#[derive(Debug, Clone, Copy)]
struct Shape {
    clients: u32,
    senders: u32,
    window: u32,
    messages: u32,
}

/// What [`measure`] saw.
struct Measured {
    connect_s: f64,
    wall_s: f64,
    deliveries: u64,
    latency: Latencies,
    /// Each server process's CPU time over the run and RSS at its end.
    processes: Vec<Usage>,
    generator_cpu_s: Option<f64>,
    sender_fifo: bool,
    /// The size of one delivery.
    frame_bytes: Option<usize>,
    /// A failed check, or a client that stopped early.
    failure: Option<String>,
}

/// Connects `shape.clients` clients round-robin to the nodes at `addrs`,
/// lets the senders send, waits until every client received every message,
/// and checks what they saw. `processes` are the server processes whose CPU
/// time and memory are read.
async fn measure(
    bed: &Bed<'_>,
    addrs: &[SocketAddr],
    processes: &[Process],
    dialect: Dialect,
    shape: Shape,
    files: &[u8],
) -> Result<Measured, String> {
    let base = Instant::now();
    let timeout = bed.timeout;
    let clients = shape.clients as usize;
    let (sockets, _) = connect_all(addrs, dialect, clients, bed.connect_concurrency).await?;
    let connect_s = base.elapsed().as_secs_f64();

    let plan = Arc::new(Plan {
        dialect,
        senders: shape.senders,
        messages: shape.messages,
        window: shape.window,
        base,
        nodes: addrs.len() as u32,
        files: files.to_vec(),
    });
    let shared = Arc::new(Shared::default());
    let (phase, watcher) = watch::channel(Phase::Wait);
    let tasks = spawn_clients(sockets, &plan, &shared, &watcher);
    if !reach(&shared.ready, clients, SETTLE_TIMEOUT).await {
        phase.send_replace(Phase::Stop);
        return Err("the clients did not start in time".into());
    }

    let me = std::process::id();
    let cpu_before: Vec<Option<f64>> = processes.iter().map(Process::cpu_seconds).collect();
    let generator_before = servers::cpu_seconds(me);
    phase.send_replace(Phase::Go);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut in_time = true;
    while shared.finished.load(Ordering::SeqCst) < clients
        && shared.broken.load(Ordering::SeqCst) == 0
    {
        if tokio::time::timeout_at(deadline, shared.progress.notified())
            .await
            .is_err()
        {
            in_time = false;
            break;
        }
    }
    let usage: Vec<Usage> = processes
        .iter()
        .zip(cpu_before)
        .map(|(process, before)| Usage {
            role: process.role.clone(),
            cpu_s: delta(before, process.cpu_seconds()),
            rss_bytes: process.rss_bytes(),
        })
        .collect();
    let generator_cpu_s = delta(generator_before, servers::cpu_seconds(me));
    phase.send_replace(Phase::Stop);

    let stop_deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let mut records = Vec::with_capacity(clients);
    for task in tasks {
        match tokio::time::timeout_at(stop_deadline, task).await {
            Ok(Ok(record)) => records.push(record),
            Ok(Err(e)) => return Err(format!("a client task failed: {e}")),
            Err(_) => return Err("the clients did not stop in time".into()),
        }
    }

    let first_send = records.iter().filter_map(|r| r.first_send_ns).min();
    let last_receive = records.iter().filter_map(|r| r.last_receive_ns).max();
    let wall_s = match (first_send, last_receive) {
        (Some(first), Some(last)) if last > first => (last - first) as f64 / 1e9,
        _ => f64::NAN,
    };
    let mut latency = Latencies::new();
    for record in &records {
        latency.add(&record.latency);
    }
    let deliveries = records.iter().map(|r| r.received.keys.len() as u64).sum();

    // A client that broke off explains the others waiting in vain.
    let broke = records.iter().filter(|r| r.broke).count();
    let mut failure = records.iter().enumerate().find_map(|(i, r)| {
        r.failure
            .as_ref()
            .filter(|_| r.broke)
            .map(|why| format!("client {i} (of {broke} that broke off): {why}"))
    });
    if failure.is_none() && !in_time {
        let counts = records.iter().map(|r| r.received.keys.len());
        failure = Some(format!(
            "not every client got every message within {timeout:?} (received {} to {} of {})",
            counts.clone().min().unwrap_or(0),
            counts.max().unwrap_or(0),
            u64::from(shape.senders) * u64::from(shape.messages),
        ));
    }
    let received: Vec<&check::Received> = records.iter().map(|r| &r.received).collect();
    let verdict = check::verify(
        &received,
        u64::from(shape.senders),
        u64::from(shape.messages),
        dialect == Dialect::Lanboard,
    );
    let sender_fifo = verdict.as_ref().is_ok_and(|v| v.sender_fifo);
    if failure.is_none() {
        failure = verdict.err();
    }
    Ok(Measured {
        connect_s,
        wall_s,
        deliveries,
        latency,
        processes: usage,
        generator_cpu_s,
        sender_fifo,
        frame_bytes: records.iter().find_map(|r| r.added_bytes),
        failure,
    })
}

fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

/// Waits until `counter` reaches `target`, for at most `limit`.
/// Starts one client task per socket, numbered in order.
fn spawn_clients(
    sockets: Vec<Socket>,
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
    watcher: &watch::Receiver<Phase>,
) -> Vec<tokio::task::JoinHandle<client::Record>> {
    sockets
        .into_iter()
        .enumerate()
        .map(|(me, socket)| {
            tokio::spawn(client::run(
                socket,
                me as u32,
                plan.clone(),
                shared.clone(),
                watcher.clone(),
            ))
        })
        .collect()
}

async fn reach(counter: &AtomicUsize, target: usize, limit: Duration) -> bool {
    let started = Instant::now();
    while counter.load(Ordering::SeqCst) < target {
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Connects `n` clients, client `i` to `addrs[client::node_of(i, ..)]`, at
/// most `concurrency` at a time, and waits for each one's history. Fails if
/// any client fails.
async fn connect_all(
    addrs: &[SocketAddr],
    dialect: Dialect,
    n: usize,
    concurrency: usize,
) -> Result<(Vec<Socket>, Vec<client::Joined>), String> {
    let gate = Arc::new(Semaphore::new(concurrency));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let gate = gate.clone();
            let addr = addrs[client::node_of(i, addrs.len())];
            tokio::spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                let seed = (i as u32).wrapping_mul(0x9E37_79B9);
                match tokio::time::timeout(JOIN_TIMEOUT, client::join(addr, dialect, seed)).await {
                    Ok(joined) => joined,
                    Err(_) => Err(format!("no history within {JOIN_TIMEOUT:?}")),
                }
            })
        })
        .collect();
    let mut sockets = Vec::with_capacity(n);
    let mut joins = Vec::with_capacity(n);
    for (i, task) in tasks.into_iter().enumerate() {
        let (socket, joined) = task
            .await
            .map_err(|e| format!("client {i}: {e}"))?
            .map_err(|e| format!("client {i}: {e}"))?;
        sockets.push(socket);
        joins.push(joined);
    }
    Ok((sockets, joins))
}

/// Scenario 4: the server's memory before and after `clients` idle clients.
async fn idle_run(bed: &Bed<'_>, kind: Kind, clients: usize) -> Idle {
    let mut result = Idle {
        kind,
        clients,
        connect_s: f64::NAN,
        join_median_s: f64::NAN,
        join_max_s: f64::NAN,
        rss_before: 0,
        rss_after: 0,
        failure: None,
    };
    let outcome = async {
        let dir = bed.folder()?;
        let server = bed.start(kind, dir.path())?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        result.rss_before = server.rss_bytes().ok_or("no VmRSS for the server")?;
        let started = Instant::now();
        let (sockets, joins) = connect_all(
            &[server.addr],
            dialect(kind),
            clients,
            bed.connect_concurrency,
        )
        .await
        .map_err(|why| with_log(why, &server.log_tail()))?;
        result.connect_s = started.elapsed().as_secs_f64();
        let took: Vec<f64> = joins.iter().map(|j| j.took.as_secs_f64()).collect();
        result.join_max_s = took.iter().copied().fold(0.0, f64::max);
        result.join_median_s = report::median(took);
        // Keep answering pings and reading presence frames while idle.
        let plan = Arc::new(Plan {
            dialect: dialect(kind),
            senders: 0,
            messages: 0,
            window: 0,
            base: started,
            nodes: 1,
            files: Vec::new(),
        });
        let shared = Arc::new(Shared::default());
        let (phase, watcher) = watch::channel(Phase::Wait);
        let tasks = spawn_clients(sockets, &plan, &shared, &watcher);
        let started = reach(&shared.ready, clients, SETTLE_TIMEOUT).await;
        tokio::time::sleep(IDLE_SETTLE).await;
        result.rss_after = server.rss_bytes().ok_or("no VmRSS for the server")?;
        phase.send_replace(Phase::Stop);
        let stop_deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let mut dropped = None;
        for (i, task) in tasks.into_iter().enumerate() {
            if let Ok(Ok(record)) = tokio::time::timeout_at(stop_deadline, task).await {
                if let Some(why) = record.failure {
                    dropped.get_or_insert(format!("idle client {i}: {why}"));
                }
            }
        }
        if !started {
            return Err("the idle clients did not start in time".to_owned());
        }
        dropped.map_or(Ok(()), Err)
    };
    if let Err(why) = outcome.await {
        result.failure = Some(why);
    }
    result
}

/// Scenario 5: a board holding `stored` messages: how long it takes to start
/// (lanboard) and what a new client receives, how fast.
async fn growth_run(bed: &Bed<'_>, kind: Kind, stored: u64) -> Growth {
    let mut result = Growth {
        kind,
        stored,
        how: if kind == Kind::Original {
            "posted"
        } else {
            "imported"
        },
        fill_s: f64::NAN,
        start_s: f64::NAN,
        welcome_bytes: 0,
        join_s: f64::NAN,
        joins: 0,
        rss_bytes: None,
        failure: None,
    };
    let outcome = async {
        let dir = bed.folder()?;
        let server = if kind == Kind::Original {
            let server = bed.start(kind, dir.path())?;
            // Post the history through one socket, as users would.
            let shape = Shape {
                clients: 1,
                senders: 1,
                window: 64,
                messages: u32::try_from(stored).map_err(|_| "too many messages to post")?,
            };
            let started = Instant::now();
            let posted = measure(
                bed,
                &[server.addr],
                &[server.process("original")],
                Dialect::SocketIo,
                shape,
                &[],
            )
            .await
            .map_err(|why| with_log(why, &server.log_tail()))?;
            if let Some(why) = posted.failure {
                return Err(format!("posting the history: {why}"));
            }
            result.fill_s = started.elapsed().as_secs_f64();
            result.start_s = server.started_in.as_secs_f64();
            server
        } else {
            let lines = dir.path().join("history.jsonl");
            write_history(&lines, stored).map_err(|e| format!("{}: {e}", lines.display()))?;
            let data = dir.path().join("b.db");
            let took = bed.lanboard.import(&lines, &data)?;
            result.fill_s = took.as_secs_f64();
            // The history file is no longer needed; a failed removal only costs disk.
            let _ = std::fs::remove_file(&lines);
            // A new client gets the newest --history messages: 100 here, as
            // many as the small board holds, so both boards send the same.
            let server = bed.lanboard.start(
                Storage::File(&data),
                &["--history", &GROWTH_HISTORY.to_string()],
                &dir.path().join("lanboard.log"),
                bed.core,
            )?;
            result.start_s = server.started_in.as_secs_f64();
            server
        };
        let mut times = Vec::new();
        for seed in 0..GROWTH_JOINS {
            let (socket, joined) = tokio::time::timeout(
                JOIN_TIMEOUT,
                client::join(server.addr, dialect(kind), seed as u32 + 7),
            )
            .await
            .map_err(|_| format!("a new client got no history within {JOIN_TIMEOUT:?}"))?
            .map_err(|why| with_log(why, &server.log_tail()))?;
            leave(socket).await;
            times.push(joined.took.as_secs_f64());
            result.welcome_bytes = joined.welcome_bytes;
        }
        result.joins = times.len();
        result.join_s = report::median(times);
        result.rss_bytes = server.rss_bytes();
        Ok::<(), String>(())
    };
    if let Err(why) = outcome.await {
        result.failure = Some(why);
    }
    result
}

/// Closes a client politely; best-effort, as the measurement is done.
async fn leave(mut socket: Socket) {
    socket.queue_close();
    let _ = tokio::time::timeout(Duration::from_millis(200), socket.flush()).await;
}

/// Writes `count` messages as JSON Lines for `lanboard import`.
fn write_history(path: &Path, count: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut text = Vec::with_capacity(dialect::TEXT_LEN);
    for id in 1..=count {
        text.clear();
        // The same shape as a generated message, from an unused sender number.
        dialect::write_text(
            dialect::Stamp {
                sender: u32::MAX,
                seq: (id % u64::from(u32::MAX)) as u32,
                sent_ns: 0,
            },
            &mut text,
        );
        out.write_all(br#"{"id":"#)?;
        write!(out, "{id}")?;
        out.write_all(br#","name":""#)?;
        out.write_all(dialect::NAME.as_bytes())?;
        out.write_all(br#"","message":""#)?;
        out.write_all(&text)?;
        writeln!(out, r#"","time":{}}}"#, 1_700_000_000_000u64 + id)?;
    }
    out.flush()
}
