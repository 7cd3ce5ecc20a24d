//! Finding it again: `GET /api/search` and its query language, highlights
//! in characters, paging, limits, edits and deletions seen at once, on
//! SQLite and on Redis nodes, the migration of an older file, and deleted
//! words gone from the index's bytes. All against the real binary.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::{Persistence, Redis};
use common::{encode, get, http, Board};
use serde_json::{json, Value};

const ALICE: &str = "alice-key-0123456789abcdef";

/// The answer to a search for `q`, with `extra` query parameters (`&...`).
async fn search_with(addr: SocketAddr, q: &str, extra: &str) -> Value {
    let response = get(addr, &format!("/api/search?q={}{extra}", encode(q))).await;
    assert_eq!(response.status, 200, "{q:?}: {}", response.body);
    response.json()
}

/// The ids a search for `q` finds, newest first.
async fn found(addr: SocketAddr, q: &str) -> Vec<u64> {
    ids_of(&search_with(addr, q, "").await)
}

fn ids_of(answer: &Value) -> Vec<u64> {
    answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results is an array: {answer}"))
        .iter()
        .map(|hit| hit["id"].as_u64().expect("a hit has an id"))
        .collect()
}

/// Waits until a search for `q` finds exactly `ids` (a node's index
/// follows the stream), failing after [`common::WAIT`].
async fn until_found(addr: SocketAddr, q: &str, ids: &[u64]) {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let now = found(addr, q).await;
        if now == ids {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{q:?} finds {now:?}, not {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts over HTTP and returns the new message's id.
async fn post(addr: SocketAddr, name: &str, text: &str) -> u64 {
    let body = json!({"name": name, "message": text, "key": ALICE}).to_string();
    let response = common::post(addr, "/api/messages", &body).await;
    assert_eq!(response.status, 201, "{}", response.body);
    response.json()["id"].as_u64().unwrap()
}

/// Where `word` is in `text`, in characters: `[start, end)`.
fn span(text: &str, word: &str) -> [usize; 2] {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} is in {text:?}"));
    let start = text[..at].chars().count();
    [start, start + word.chars().count()]
}

/// A board for one test, and the Redis behind it when it is a node.
struct Setup {
    board: Board,
    _redis: Option<Redis>,
}

impl Setup {
    fn sqlite() -> Setup {
        Setup {
            board: Board::start(&["--rate-limit", "0"]),
            _redis: None,
        }
    }

    fn redis() -> Option<Setup> {
        let redis = Redis::start(Persistence::None)?;
        Some(Setup {
            board: Board::node(&redis.url(), "search", &["--rate-limit", "0"]),
            _redis: Some(redis),
        })
    }
}

/// Runs `$check` on a SQLite board and on a Redis node.
macro_rules! on_both_stores {
    ($check:ident) => {
        mod $check {
            #[tokio::test]
            async fn on_sqlite() {
                super::$check(super::Setup::sqlite()).await;
            }

            #[tokio::test]
            async fn on_redis() {
                if let Some(setup) = super::Setup::redis() {
                    super::$check(setup).await;
                }
            }
        }
    };
}

const PRINTER: &str = "The printer is at 10.0.0.7";
const CAFE: &str = "Café au lait for everyone";
const PARTY: &str = "🎉 party in the CAFÉ tonight, 日本語 テスト";
const TONER: &str = "printers need toner";
const DOOR: &str = "door code is 4711";
const CHANGED: &str = "the door code changed";
/// "école", its accent a combining character of its own.
const ECOLE: &str = "e\u{301}cole demain";

/// Posts the messages the query-language checks search, and waits until the
/// last of them is found.
async fn fill(addr: SocketAddr) {
    for (name, text) in [
        ("Ana", PRINTER),
        ("Bob", CAFE),
        ("Ana Lee", PARTY),
        ("Bob", TONER),
        ("Zoë", DOOR),
        ("Bob", CHANGED),
        ("Ana", ECOLE),
    ] {
        post(addr, name, text).await;
    }
    until_found(addr, "demain", &[7]).await;
}

on_both_stores!(words_are_whole_and_the_last_is_also_a_prefix);
async fn words_are_whole_and_the_last_is_also_a_prefix(setup: Setup) {
    let addr = setup.board.addr;
    fill(addr).await;
    assert_eq!(found(addr, "printer").await, [4, 1], "printer, printers");
    assert_eq!(
        found(addr, "print toner").await,
        [] as [u64; 0],
        "print is not a word here"
    );
    assert_eq!(
        found(addr, "toner print").await,
        [4],
        "but the start of the last one"
    );
    assert_eq!(
        found(addr, "printer at").await,
        [1],
        "every word must match"
    );
    assert_eq!(found(addr, "door tonight").await, [] as [u64; 0]);
    assert_eq!(found(addr, "nothing-like-this").await, [] as [u64; 0]);
}

on_both_stores!(case_and_accents_do_not_matter_and_highlights_count_characters);
async fn case_and_accents_do_not_matter_and_highlights_count_characters(setup: Setup) {
    let addr = setup.board.addr;
    fill(addr).await;
    for q in ["cafe", "CAFÉ", "Café", "caf"] {
        let answer = search_with(addr, q, "").await;
        assert_eq!(ids_of(&answer), [3, 2], "{q}");
        let hits = answer["results"].as_array().unwrap();
        assert_eq!(
            hits[0]["highlights"],
            json!({"name": [], "message": [span(PARTY, "CAFÉ")]}),
            "after an emoji, offsets count characters: {q}"
        );
        assert_eq!(hits[0]["message"], PARTY, "the message as posted");
        assert_eq!(hits[0]["name"], "Ana Lee");
        assert!(hits[0]["time"].is_i64(), "{}", hits[0]);
        assert_eq!(
            hits[1]["highlights"],
            json!({"name": [], "message": [span(CAFE, "Café")]})
        );
    }
    let answer = search_with(addr, "ecole", "").await;
    assert_eq!(ids_of(&answer), [7]);
    assert_eq!(
        answer["results"][0]["highlights"]["message"],
        json!([[0, 6]]),
        "the combining accent is part of the word"
    );
    let answer = search_with(addr, "テ", "").await;
    assert_eq!(
        ids_of(&answer),
        [3],
        "a word of another script, by its start"
    );
    assert_eq!(
        answer["results"][0]["highlights"]["message"],
        json!([span(PARTY, "テスト")])
    );
    let answer = search_with(addr, "zoe", "").await;
    assert_eq!(ids_of(&answer), [5]);
    assert_eq!(
        answer["results"][0]["highlights"],
        json!({"name": [[0, 3]], "message": []}),
        "names are searched too"
    );
}

on_both_stores!(phrases_from_and_minus);
async fn phrases_from_and_minus(setup: Setup) {
    let addr = setup.board.addr;
    fill(addr).await;
    assert_eq!(found(addr, "\"door code\"").await, [6, 5]);
    assert_eq!(found(addr, "\"code is\"").await, [5]);
    assert_eq!(
        found(addr, "\"code door\"").await,
        [] as [u64; 0],
        "in that order"
    );
    let answer = search_with(addr, "\"door code", "").await;
    assert_eq!(ids_of(&answer), [6, 5], "a phrase still being typed");
    assert_eq!(
        answer["results"][1]["highlights"]["message"],
        json!([span(DOOR, "door code")]),
        "a phrase is marked whole"
    );

    assert_eq!(found(addr, "from:ana").await, [7, 3, 1]);
    let answer = search_with(addr, "from:ana printer", "").await;
    assert_eq!(ids_of(&answer), [1]);
    assert_eq!(
        answer["results"][0]["highlights"],
        json!({"name": [[0, 3]], "message": [span(PRINTER, "printer")]})
    );
    assert_eq!(found(addr, "from:bob door").await, [6]);
    assert_eq!(found(addr, "from:lee").await, [3], "any word of the name");
    assert_eq!(found(addr, "from:door").await, [] as [u64; 0], "names only");

    assert_eq!(found(addr, "door -changed").await, [5]);
    assert_eq!(found(addr, "printer -toner -need").await, [1]);
    assert_eq!(
        found(addr, "-door").await,
        [] as [u64; 0],
        "nothing to look for"
    );
}

on_both_stores!(punctuation_never_fails_a_query);
async fn punctuation_never_fails_a_query(setup: Setup) {
    let addr = setup.board.addr;
    fill(addr).await;
    for q in [
        "", " ", "\"", "*", "(", ")", "-", "--", "from:", "\"\"", "NEAR(", "AND", "OR", "NOT", "^",
        ":", "{name}:", "a\"b", "'", "\\", "%", "🎉", "*)(\"",
    ] {
        let answer = search_with(addr, q, "").await;
        assert!(answer["results"].is_array(), "{q:?}: {answer}");
        assert_eq!(answer["more"], false, "{q:?}");
    }
    assert_eq!(
        found(addr, "printer*").await,
        [4, 1],
        "a star is punctuation"
    );
    assert_eq!(
        found(addr, "10.0.0.7").await,
        [1],
        "an address is its numbers in order"
    );
    assert_eq!(
        found(addr, "(door) OR").await,
        [] as [u64; 0],
        "OR is a word like others"
    );
}

on_both_stores!(pages_go_back_with_before_and_limits_are_checked);
async fn pages_go_back_with_before_and_limits_are_checked(setup: Setup) {
    let addr = setup.board.addr;
    for n in 1..=25 {
        post(addr, "n", &format!("lunch number {n}")).await;
    }
    post(addr, "n", "something else").await;
    until_found(addr, "else", &[26]).await;
    let mut seen = Vec::new();
    let mut before = String::new();
    let mut mores = Vec::new();
    loop {
        let answer = search_with(addr, "lunch", &format!("&limit=10{before}")).await;
        let page = ids_of(&answer);
        mores.push(answer["more"].as_bool().unwrap());
        before = format!("&before={}", page.last().unwrap());
        seen.extend(page);
        if mores.last() == Some(&false) {
            break;
        }
    }
    assert_eq!(
        seen,
        (1..=25).rev().collect::<Vec<u64>>(),
        "newest first, each once"
    );
    assert_eq!(mores, [true, true, false]);
    assert_eq!(found(addr, "lunch").await.len(), 20, "20 when not asked");
    let all = search_with(addr, "lunch", "&limit=100").await;
    assert_eq!(ids_of(&all).len(), 25);

    for bad in [
        "/api/search",
        "/api/search?q=x&limit=0",
        "/api/search?q=x&limit=101",
        "/api/search?q=x&limit=ten",
        "/api/search?q=x&before=-1",
        "/api/search?q=x&before=abc",
    ] {
        let response = get(addr, bad).await;
        assert_eq!(response.status, 400, "{bad}: {}", response.body);
        assert_eq!(response.json()["code"], "bad-request", "{bad}");
        assert!(response.json()["message"].is_string());
    }
    let long = get(addr, &format!("/api/search?q={}", "x".repeat(501))).await;
    assert_eq!(long.status, 400);
    assert_eq!(
        long.json()["message"],
        "the query is longer than 500 characters"
    );
    let many = get(
        addr,
        &format!("/api/search?q={}", encode(&["w"; 17].join(" "))),
    )
    .await;
    assert_eq!(many.status, 400, "{}", many.body);
}

on_both_stores!(an_edit_or_a_deletion_is_seen_by_the_next_search);
async fn an_edit_or_a_deletion_is_seen_by_the_next_search(setup: Setup) {
    let addr = setup.board.addr;
    let id = post(addr, "n", "the wifi password is hunter2").await;
    until_found(addr, "hunter2", &[id]).await;
    let edited = http(
        addr,
        "PATCH",
        &format!("/api/messages/{id}"),
        &[("Lanboard-Key", ALICE)],
        &json!({"message": "ask me for the wifi password"}).to_string(),
    )
    .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    assert_eq!(
        found(addr, "hunter2").await,
        [] as [u64; 0],
        "never by an old word, from the moment the edit is answered"
    );
    until_found(addr, "ask", &[id]).await;
    let answer = search_with(addr, "wifi", "").await;
    assert_eq!(
        answer["results"][0]["message"],
        "ask me for the wifi password"
    );
    assert!(answer["results"][0]["edited"].is_i64(), "{answer}");

    let deleted = http(
        addr,
        "DELETE",
        &format!("/api/messages/{id}"),
        &[("Lanboard-Key", ALICE)],
        "",
    )
    .await;
    assert_eq!(deleted.status, 204);
    for q in ["wifi", "ask", "password"] {
        assert_eq!(found(addr, q).await, [] as [u64; 0], "deleted: {q}");
    }
}

#[tokio::test]
async fn a_board_with_a_passphrase_asks_for_it_before_searching() {
    let board = Board::start(&["--password", "open sesame"]);
    let response = get(board.addr, "/api/search?q=x").await;
    assert_eq!(response.status, 401, "{}", response.body);
    let response = http(
        board.addr,
        "GET",
        "/api/search?q=x",
        &[("Authorization", "Bearer open sesame")],
        "",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
}

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn deleted_and_replaced_words_leave_the_index_in_the_file() {
    let board = Board::start(&[]);
    let addr = board.addr;
    // Words no other word shares a long start with, so that the index
    // stores most of each in one piece (it shortens a word by the start it
    // shares with the word before it).
    let deleted = post(addr, "n", "vault combination qqzxjvorangutan").await;
    let edited = post(addr, "n", "typo wwkxfmarmadillo here").await;
    post(addr, "n", "keep jjyhwplatypus").await;
    // New posts join the index a moment after they are stored: these two
    // are edited and deleted once they are in it, the next one before.
    until_indexed(&board.data, 3).await;
    let unindexed = post(addr, "n", "quick xxqvwombat").await;
    let bytes = || {
        let mut bytes = std::fs::read(&board.data).unwrap();
        bytes.extend(std::fs::read(board.data.with_extension("db-wal")).unwrap_or_default());
        bytes
    };
    // The index holds words folded to lower case without accents.
    assert!(contains(&bytes(), "zxjvorangutan"), "stored at first");
    assert!(contains(&bytes(), "kxfmarmadillo"), "stored at first");
    assert!(contains(&bytes(), "xxqvwombat"), "stored at first");

    let key = [("Lanboard-Key", ALICE)];
    for id in [deleted, unindexed] {
        let response = http(addr, "DELETE", &format!("/api/messages/{id}"), &key, "").await;
        assert_eq!(response.status, 204);
    }
    let body = json!({"message": "typo fixed here"}).to_string();
    let response = http(
        addr,
        "PATCH",
        &format!("/api/messages/{edited}"),
        &key,
        &body,
    )
    .await;
    assert_eq!(response.status, 200);

    let now = bytes();
    for gone in ["zxjvorangutan", "kxfmarmadillo", "xxqvwombat"] {
        assert!(
            !contains(&now, gone),
            "{gone} is still in the file or its WAL"
        );
    }
    assert!(
        contains(&now, "yhwplatypus"),
        "the check reads the real index"
    );
    assert_eq!(found(addr, "qqzxjvorangutan").await, [] as [u64; 0]);
}

/// Waits until the board's search index holds every message up to `id`
/// (new posts join it once the writer has been idle for a moment).
async fn until_indexed(data: &std::path::Path, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let conn =
            rusqlite::Connection::open_with_flags(data, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let indexed_to: i64 = conn
            .query_row("SELECT indexed_to FROM search_progress", [], |row| {
                row.get(0)
            })
            .unwrap();
        if indexed_to >= id {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the index stayed at {indexed_to}, short of {id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a lanboard file of schema version 2 (messages and cids, as
/// lanboard wrote it then) holding `count` messages: message `n` reads
/// "note n-<n> for the team".
fn write_version_2_file(path: &std::path::Path, count: u64) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
             message TEXT NOT NULL, time INTEGER NOT NULL);
         CREATE TABLE cids (cid TEXT PRIMARY KEY, id INTEGER NOT NULL,
             time INTEGER NOT NULL) WITHOUT ROWID;
         PRAGMA application_id = 1280197188;
         PRAGMA user_version = 2;",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO messages VALUES (?1, 'old', ?2, ?1)")
            .unwrap();
        for n in 1..=count {
            insert
                .execute(rusqlite::params![
                    n as i64,
                    format!("note n{n} for the team")
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

#[tokio::test]
async fn a_version_2_file_gains_the_index_and_every_message_is_found() {
    const COUNT: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("old.db");
    write_version_2_file(&data, COUNT);
    let started = Instant::now();
    let board = Board::start_on(&data, 0, &[]);
    let took = started.elapsed();
    assert!(
        board.stderr().contains("indexing messages for search"),
        "a large file says what it is doing: {}",
        board.stderr()
    );
    eprintln!("a {COUNT}-message version 2 file opened with its new index in {took:?}");

    // Every message, by the word they share, page after page.
    let mut seen = 0u64;
    let mut next = COUNT;
    let mut before = String::new();
    loop {
        let answer = search_with(board.addr, "team", &format!("&limit=100{before}")).await;
        let page = ids_of(&answer);
        for id in &page {
            assert_eq!(*id, next, "newest first, none missing");
            next -= 1;
        }
        seen += page.len() as u64;
        if answer["more"] == false {
            break;
        }
        before = format!("&before={}", page.last().unwrap());
    }
    assert_eq!(seen, COUNT);
    // And each by a word only it has, for a spread of them.
    for n in (1..=COUNT).step_by(997).chain([COUNT]) {
        assert_eq!(found(board.addr, &format!("n{n} team")).await, [n], "n{n}");
    }
}

macro_rules! redis_or_skip {
    () => {
        match Redis::start(Persistence::None) {
            Some(redis) => redis,
            None => return,
        }
    };
}

#[tokio::test]
async fn on_three_nodes_a_post_on_one_is_found_on_another_within_a_second() {
    let redis = redis_or_skip!();
    let nodes: Vec<Board> = (0..3)
        .map(|_| Board::node(&redis.url(), "three", &["--rate-limit", "0"]))
        .collect();
    for round in 0..5 {
        let word = format!("kiwi{round}");
        let id = post(nodes[0].addr, "a", &format!("fresh {word} on node A")).await;
        let posted = Instant::now();
        loop {
            if found(nodes[2].addr, &word).await == [id] {
                break;
            }
            assert!(
                posted.elapsed() < Duration::from_secs(1),
                "{word} not found on node C within a second"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // A deletion on B is never found on C once B has answered it.
    let id = post(nodes[0].addr, "a", "delete me please").await;
    until_found(nodes[2].addr, "delete", &[id]).await;
    let response = http(
        nodes[1].addr,
        "DELETE",
        &format!("/api/messages/{id}"),
        &[("Lanboard-Key", ALICE)],
        "",
    )
    .await;
    assert_eq!(response.status, 204);
    assert_eq!(found(nodes[2].addr, "delete").await, [] as [u64; 0]);
}

#[tokio::test]
async fn a_node_started_after_ten_thousand_posts_finds_every_one() {
    const COUNT: u64 = 10_000;
    let redis = redis_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (1..=COUNT)
        .map(|n| {
            json!({"id": n, "name": "bulk", "message": format!("entry e{n} of the log"), "time": n})
                .to_string()
                + "\n"
        })
        .collect();
    let file = dir.path().join("board.jsonl");
    std::fs::write(&file, lines).unwrap();
    let url = redis.url();
    let (status, _, stderr) = common::run(
        &[
            "import",
            file.to_str().unwrap(),
            "--redis",
            &url,
            "--redis-prefix",
            "late",
        ],
        dir.path(),
    );
    assert!(status.success(), "{stderr}");
    let index = dir.path().join("node.index");
    let index_arg = index.display().to_string();
    let mut node = Board::node(&url, "late", &["--search-index", &index_arg]);
    until_found(node.addr, "e10000", &[COUNT]).await;
    let mut seen = 0;
    let mut before = String::new();
    loop {
        let answer = search_with(node.addr, "log", &format!("&limit=100{before}")).await;
        let page = ids_of(&answer);
        seen += page.len() as u64;
        if answer["more"] == false {
            break;
        }
        before = format!("&before={}", page.last().unwrap());
    }
    assert_eq!(seen, COUNT, "every post is found");

    // A restarted node with a kept index reads only what it missed, and
    // what was deleted meanwhile leaves the index file.
    let other = Board::node(&url, "late", &["--rate-limit", "0"]);
    let doomed = post(other.addr, "n", "soon gone qqxylophonewx").await;
    until_found(node.addr, "qqxylophonewx", &[doomed]).await;
    node.stop();
    let response = http(
        other.addr,
        "DELETE",
        &format!("/api/messages/{doomed}"),
        &[("Lanboard-Key", ALICE)],
        "",
    )
    .await;
    assert_eq!(response.status, 204);
    let id = post(other.addr, "n", "written while the node was down").await;
    node.restart();
    until_found(node.addr, "while", &[id]).await;
    assert_eq!(found(node.addr, "qqxylophonewx").await, [] as [u64; 0]);
    assert_eq!(
        found(node.addr, "e1").await[..1],
        [COUNT],
        "still all there"
    );
    assert!(
        node.stderr()
            .contains(&format!("from message {doomed} to {id}")),
        "read only what it missed: {}",
        node.stderr()
    );
    let mut bytes = std::fs::read(&index).unwrap();
    bytes.extend(std::fs::read(dir.path().join("node.index-wal")).unwrap_or_default());
    assert!(!contains(&bytes, "xylophonewx"), "gone from the index file");
    assert!(
        contains(&bytes, "written while"),
        "the check reads the real file"
    );
}
