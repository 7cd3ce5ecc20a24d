//! `cargo bench --bench backlog`: what a search costs while posts wait
//! outside a SQLite board's index (its backlog), which the search then
//! indexes for itself. Measured in-process on the store, so that the backlog
//! holds exactly as many posts as asked (over HTTP the writer would index
//! them as soon as it is idle).
//!
//! For backlogs of 0, 64, 256 and 511 posts (the writer takes 512 in at
//! once), it runs a two-word query 200 times and prints p50 and p99. Without
//! `--bench` on its command line (as under `cargo test --benches`) it runs
//! 5 queries per size as a self-check.

use std::time::Instant;

use lanboard::protocol::Draft;
use lanboard::search::Query;
use lanboard::store::{Access, Log, SqliteLog, SyncMode, Tidy};

const WORDS: [&str; 12] = [
    "printer", "coffee", "the", "door", "code", "lunch", "meeting", "server", "deploy", "today",
    "team", "link",
];

/// Message `n`: 14 of the words and a word of its own.
fn text(n: usize) -> String {
    let mut text: String = (0..14)
        .map(|k| WORDS[(n * 7 + k * 3) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ");
    text.push_str(&format!(" n{n}"));
    text
}

fn main() {
    let measured = std::env::args().any(|arg| arg == "--bench");
    let rounds = if measured { 200 } else { 5 };
    let dir = tempfile::tempdir().expect("a scratch folder");
    let log = SqliteLog::open(&dir.path().join("b.db"), Access::Write, SyncMode::Normal)
        .expect("the board opens");
    let limits = lanboard::cli::default_config().session.limits;
    // Every third message has both "printer" and a word starting "do".
    let query = Query::parse("printer do").expect("a query");
    let mut posted = 0;
    println!("| posts outside the index | two-word query p50 | p99 |\n|---|---|---|");
    for backlog in [0, 64, 256, 511] {
        let drafts = (posted..posted + backlog)
            .map(|n| Draft::new("n", &text(n), limits).expect("a post"))
            .collect::<Vec<_>>();
        posted += backlog;
        if !drafts.is_empty() {
            log.append(drafts, 1).expect("the posts are stored");
        }
        let mut times: Vec<f64> = (0..rounds)
            .map(|_| {
                let started = Instant::now();
                let found = log.search(&query, u64::MAX, 20).expect("the search runs");
                assert_eq!(found.hits.is_empty(), posted == 0, "found what was posted");
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!("| {backlog} | {:.2} ms | {:.2} ms |", at(0.5), at(0.99));
        // The writer's idle housekeeping: the backlog joins the index.
        loop {
            match log.tidy().expect("housekeeping") {
                Tidy::Done => break,
                Tidy::More => {}
                Tidy::After(wait) => std::thread::sleep(wait),
            }
        }
    }
}
