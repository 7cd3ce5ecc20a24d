//! Durable history: restarts, crashes, a large board, paging, bad files,
//! export and import, all through the real binary.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{get, ids, run, Board, Client};
use serde_json::{json, Value};

/// Writes `count` messages as JSON Lines and imports them into `data`.
fn import_messages(data: &Path, count: u64) {
    import_texts(data, count, |id| format!("message number {id}"));
}

/// Writes `count` messages whose text `text` makes from the id as JSON Lines
/// and imports them into `data`.
fn import_texts(data: &Path, count: u64, text: impl Fn(u64) -> String) {
    let dir = data.parent().unwrap();
    let file = dir.join("import.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for id in 1..=count {
        writeln!(
            out,
            "{}",
            json!({"id": id, "name": format!("user{}", id % 7), "message": text(id), "time": 1_700_000_000_000u64 + id})
        )
        .unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let (status, _, err) = run(
        &[
            "import",
            file.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
        dir,
    );
    assert!(status.success(), "import failed: {err}");
    assert!(
        err.contains(&format!("imported {count} message(s)")),
        "{err}"
    );
}

/// A running board whose file holds `count` imported messages; keep the
/// directory alive as long as the board.
fn board_with(count: u64) -> (tempfile::TempDir, Board) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("b.db");
    import_messages(&data, count);
    let board = Board::start_on(&data, 0, &[]);
    (dir, board)
}

#[tokio::test]
async fn messages_survive_a_restart_with_their_ids_and_the_sequence_continues() {
    let mut board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    for i in 0..5 {
        client.add("a", &format!("m{i}"), i).await;
        client.next_event("ack").await;
    }
    let before = get(board.addr, "/api/messages").await.json();
    drop(client);
    board.restart();
    let mut client = Client::connect(&board.ws_url()).await;
    assert_eq!(Value::from(client.history.clone()), before);
    assert_eq!(ids(&client.history), [1, 2, 3, 4, 5]);
    client.add("a", "after restart", 9).await;
    assert_eq!(client.next_event("ack").await["data"]["id"], 6);
    assert!(
        board.banner.contains(&board.data.display().to_string()),
        "the banner names the file"
    );
}

#[tokio::test]
async fn memory_mode_forgets_everything_on_restart() {
    let mut board = Board::start(&["--memory"]);
    let mut client = Client::connect(&board.ws_url()).await;
    client.add("a", "fleeting", 1).await;
    client.next_event("ack").await;
    drop(client);
    board.restart();
    assert!(Client::connect(&board.ws_url()).await.history.is_empty());
    assert!(!board.data.exists(), "--memory writes no file");
}

#[tokio::test]
async fn every_acked_message_survives_sigkill_exactly_once() {
    let mut board = Board::start(&["--rate-limit", "0"]);
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..4 {
        let mut client = Client::connect(&board.ws_url()).await;
        // Posts stream in, many in flight, while the server is killed at a
        // pseudo-random moment.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = Duration::from_millis(50 + seed % 250);
        let pid = board.pid();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            // SAFETY: kill(2) on our own child's pid has no memory-safety effects.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        let mut sent = 0u64;
        let mut in_flight = 0;
        'posting: loop {
            while in_flight < 16 {
                let text = format!("r{round}-{sent}");
                let frame = json!({"event": "add-message", "data": {"name": "k", "message": text}, "ack": sent});
                use futures_util::SinkExt;
                if client
                    .socket
                    .send(tokio_tungstenite::tungstenite::Message::text(
                        frame.to_string(),
                    ))
                    .await
                    .is_err()
                {
                    break 'posting;
                }
                sent += 1;
                in_flight += 1;
            }
            match client.next().await {
                Some(frame) if frame["event"] == "ack" => {
                    acked.push((
                        frame["data"]["id"].as_u64().unwrap(),
                        frame["data"]["message"].as_str().unwrap().to_owned(),
                    ));
                    in_flight -= 1;
                }
                Some(_) => {}
                None => break,
            }
        }
        killer.await.unwrap();
        board.wait_for_exit();
        board.restart();
        let stored: Vec<Value> = {
            let mut all = Vec::new();
            let mut since = 0;
            loop {
                let page = get(
                    board.addr,
                    &format!("/api/messages?since={since}&limit=500"),
                )
                .await
                .json();
                let page = page.as_array().unwrap().clone();
                if page.is_empty() {
                    break all;
                }
                since = page.last().unwrap()["id"].as_u64().unwrap();
                all.extend(page);
            }
        };
        let stored_ids = ids(&stored);
        assert!(
            stored_ids.windows(2).all(|w| w[0] < w[1]),
            "ids never repeat"
        );
        for (id, text) in &acked {
            let found: Vec<&Value> = stored
                .iter()
                .filter(|m| m["message"] == text.as_str())
                .collect();
            assert_eq!(
                found.len(),
                1,
                "acked {text} (id {id}) stored exactly once after round {round}"
            );
            assert_eq!(found[0]["id"], *id);
        }
        assert!(
            !acked.is_empty(),
            "round {round} acked something before the kill"
        );
    }
}

#[tokio::test]
async fn a_client_that_missed_more_than_the_window_still_gets_every_missed_message() {
    let (_dir, board) = board_with(3000);
    let resumed = Client::connect(&format!("{}?since=500", board.ws_url())).await;
    assert_eq!(ids(&resumed.history), (501..=3000).collect::<Vec<_>>());
    assert_eq!(resumed.welcome.get("gap"), None);
    // Beyond the cap the newest messages come, flagged so the page can page back.
    let far = Client::connect(&format!("{}?since=0", board.ws_url())).await;
    assert_eq!(far.history.len(), 3000, "within the resume cap of 5000");
}

#[tokio::test]
async fn a_resume_beyond_the_cap_sends_the_newest_messages_and_flags_the_gap() {
    let (_dir, board) = board_with(7000);
    let resumed = Client::connect(&format!("{}?since=10", board.ws_url())).await;
    assert_eq!(resumed.welcome["gap"], true);
    assert_eq!(ids(&resumed.history), (2001..=7000).collect::<Vec<_>>());
}

/// The catch-up budget of `protocol::CATCH_UP_BYTES`, as the tests see it.
const CATCH_UP_BYTES: usize = 1 << 20;

/// A board of 600 messages of 3,900 characters: 2.3 MB, more than two
/// catch-up budgets, though far fewer messages than any count cap.
fn board_of_long_messages() -> (tempfile::TempDir, Board) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("b.db");
    import_texts(&data, 600, |id| format!("{id:>3} ").repeat(975));
    let board = Board::start_on(&data, 0, &[]);
    (dir, board)
}

/// Bytes of the messages' JSON in a catch-up answer.
fn json_bytes(messages: &[Value]) -> usize {
    messages.iter().map(|m| m.to_string().len() + 1).sum()
}

#[tokio::test]
async fn a_resume_of_long_messages_stops_at_the_byte_budget_and_flags_the_gap() {
    let (_dir, board) = board_of_long_messages();
    let mut client = Client::connect(&format!("{}?since=1", board.ws_url())).await;
    assert_eq!(client.welcome["gap"], true);
    let got = ids(&client.history);
    assert!(json_bytes(&client.history) <= CATCH_UP_BYTES);
    assert!(got.len() > 200, "the budget holds {} messages", got.len());
    // The newest ones that fit, as for a resume past the count cap.
    let newest = 601 - got.len() as u64;
    assert_eq!(got, (newest..=600).collect::<Vec<_>>());
    // Paging back fills the rest, each page within the budget too.
    let mut seen = got;
    loop {
        client
            .send(json!({"event": "load-older", "data": {"before": seen[0], "limit": 500}}))
            .await;
        let reply = client.next_event("older-messages").await;
        let messages = reply["data"]["messages"].as_array().unwrap();
        assert!(json_bytes(messages) <= CATCH_UP_BYTES);
        let mut page = ids(messages);
        page.extend(seen);
        seen = page;
        if reply["data"]["more"] == false {
            break;
        }
        assert!(
            messages.len() < 500,
            "500 long messages are more than the budget holds"
        );
    }
    assert_eq!(seen, (1..=600).collect::<Vec<_>>());
}

#[tokio::test]
async fn http_pages_of_long_messages_stop_at_the_byte_budget_and_say_so_in_a_header() {
    let (_dir, board) = board_of_long_messages();
    let mut since = 0;
    let mut all = Vec::new();
    loop {
        let response = get(
            board.addr,
            &format!("/api/messages?since={since}&limit=500"),
        )
        .await;
        let page = response.json().as_array().unwrap().clone();
        assert!(json_bytes(&page) <= CATCH_UP_BYTES);
        let more = response.header("lanboard-more");
        all.extend(ids(&page));
        if more == Some("false") {
            break;
        }
        assert_eq!(
            more,
            Some("true"),
            "a page below the limit says whether more follow"
        );
        since = *all.last().unwrap();
    }
    assert_eq!(all, (1..=600).collect::<Vec<_>>());
    let response = get(board.addr, "/api/messages?before=601&limit=500").await;
    let page = response.json().as_array().unwrap().clone();
    assert_eq!(response.header("lanboard-more"), Some("true"));
    assert_eq!(
        *ids(&page).last().unwrap(),
        600,
        "the newest ones before the id"
    );
    let response = get(board.addr, "/api/messages?before=3&limit=500").await;
    assert_eq!(ids(response.json().as_array().unwrap()), [1, 2]);
    assert_eq!(response.header("lanboard-more"), Some("false"));
}

#[tokio::test]
async fn a_board_of_100000_messages_opens_with_only_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.db");
    let large = dir.path().join("large.db");
    import_messages(&small, 100);
    std::fs::remove_file(dir.path().join("import.jsonl")).unwrap();
    import_messages(&large, 100_000);
    let mut sizes = Vec::new();
    for data in [&small, &large] {
        let board = Board::start_on(data, 0, &["--history", "100"]);
        let client = Client::connect(&board.ws_url()).await;
        assert_eq!(client.history.len(), 100);
        sizes.push(client.welcome.to_string().len());
        if data == &large {
            assert_eq!(ids(&client.history), (99_901..=100_000).collect::<Vec<_>>());
        }
    }
    // The same count of similar messages: the frame differs only by the
    // digits of the larger ids.
    let (small_bytes, large_bytes) = (sizes[0], sizes[1]);
    assert!(
        large_bytes < small_bytes + 100 * 12,
        "{small_bytes} vs {large_bytes} bytes"
    );
}

#[tokio::test]
async fn load_older_walks_back_through_the_whole_history_without_gaps_or_duplicates() {
    let (_dir, board) = board_with(2500);
    let mut client = Client::connect(&board.ws_url()).await;
    let mut seen: Vec<u64> = ids(&client.history);
    loop {
        let before = seen[0];
        client
            .send(json!({"event": "load-older", "data": {"before": before, "limit": 500}}))
            .await;
        let reply = client.next_event("older-messages").await;
        let mut page = ids(reply["data"]["messages"].as_array().unwrap());
        assert!(page.len() <= 500);
        page.extend(seen);
        seen = page;
        if reply["data"]["more"] == false {
            break;
        }
    }
    assert_eq!(seen, (1..=2500).collect::<Vec<_>>());
    // The HTTP API pages the same way.
    let page = get(board.addr, "/api/messages?before=1001&limit=3")
        .await
        .json();
    assert_eq!(ids(page.as_array().unwrap()), [998, 999, 1000]);
}

#[test]
fn a_file_that_is_not_a_lanboard_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "shopping list: milk, eggs\n".repeat(100)).unwrap();
    let before = std::fs::read(&notes).unwrap();
    let (status, _, err) = run(
        &[
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--data",
            notes.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("is not a lanboard database") && err.contains("notes.txt"),
        "{err}"
    );
    assert_eq!(std::fs::read(&notes).unwrap(), before);
}

#[test]
fn a_second_lanboard_on_the_same_file_is_refused() {
    let first = Board::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (status, _, err) = run(
        &[
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--data",
            first.data.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("in use by another running lanboard"), "{err}");
}

#[test]
fn a_read_only_file_is_refused_with_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("b.db");
    import_messages(&data, 3);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut command = std::process::Command::new(common::binary());
    command.args([
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--data",
        data.to_str().unwrap(),
    ]);
    // Root may write anything, so run as nobody to make the file read-only to lanboard.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        command.uid(65534).gid(65534);
    }
    let output = command.output().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot be written") && err.contains("b.db"),
        "{err}"
    );
}

#[test]
fn export_prints_json_lines_and_import_restores_them_into_an_empty_board() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("b.db");
    import_messages(&data, 25);
    let (status, out, _) = run(&["export", "--data", data.to_str().unwrap()], dir.path());
    assert!(status.success());
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 25);
    assert_eq!(
        lines[24],
        json!({"id": 25, "name": "user4", "message": "message number 25", "time": 1_700_000_000_025u64})
    );
    let file = dir.path().join("backup.jsonl");
    std::fs::write(&file, &out).unwrap();
    let copy = dir.path().join("copy.db");
    let (status, _, err) = run(
        &[
            "import",
            file.to_str().unwrap(),
            "--data",
            copy.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(status.success(), "{err}");
    let wal = std::fs::metadata(copy.with_extension("db-wal")).map_or(0, |m| m.len());
    assert_eq!(
        wal, 0,
        "the imported messages are in the file itself, not left in its WAL"
    );
    let (_, again, _) = run(&["export", "--data", copy.to_str().unwrap()], dir.path());
    assert_eq!(again, out, "a round trip changes nothing");
    // Importing into a board that has messages is refused, and changes nothing.
    let (status, _, err) = run(
        &[
            "import",
            file.to_str().unwrap(),
            "--data",
            copy.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!status.success());
    assert!(err.contains("empty board"), "{err}");
    // A broken line names its line number.
    std::fs::write(&file, format!("{}\nnot json\n", lines[0])).unwrap();
    let (status, _, err) = run(
        &[
            "import",
            file.to_str().unwrap(),
            "--data",
            dir.path().join("x.db").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!status.success());
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn export_works_while_the_board_is_running() {
    let board = Board::start(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        common::post(
            board.addr,
            "/api/messages",
            r#"{"name":"a","message":"live"}"#,
        )
        .await;
    });
    let (status, out, err) = run(
        &["export", "--data", board.data.to_str().unwrap()],
        Path::new("."),
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("\"live\""), "{out}");
}

/// `GET /api/messages?around=...` on `board`: the ids it answered, and its
/// `Lanboard-More` (older ones left) and `Lanboard-Newer` (newer ones left).
async fn around(board: &Board, query: &str) -> (Vec<u64>, String, String) {
    let response = get(board.addr, &format!("/api/messages?around={query}")).await;
    assert_eq!(response.status, 200, "around={query}: {}", response.body);
    let header = |name| response.header(name).unwrap_or("(none)").to_owned();
    (
        ids(response.json().as_array().unwrap()),
        header("lanboard-more"),
        header("lanboard-newer"),
    )
}

fn range(ids: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    ids.collect()
}

#[tokio::test]
async fn around_gives_a_message_amid_its_neighbours_oldest_first_from_the_window_and_the_store() {
    // 3,000 messages: the newest 1,000 in the board's window, the rest in
    // the file only.
    let (_dir, board) = board_with(3000);
    let t = |s: &str| s.to_owned();
    // In the middle of the window, of the file, and across their border.
    assert_eq!(
        around(&board, "2500&limit=3").await,
        (range(2497..=2503), t("true"), t("true"))
    );
    assert_eq!(
        around(&board, "700&limit=3").await,
        (range(697..=703), t("true"), t("true"))
    );
    assert_eq!(
        around(&board, "2001&limit=4").await,
        (range(1997..=2005), t("true"), t("true"))
    );
    // Near the start and at the end, the side that runs out is short and says so.
    assert_eq!(
        around(&board, "2&limit=5").await,
        (range(1..=7), t("false"), t("true"))
    );
    assert_eq!(
        around(&board, "2998&limit=5").await,
        (range(2993..=3000), t("true"), t("false"))
    );
    // Exactly as many as there are is not "more".
    assert_eq!(
        around(&board, "6&limit=5").await,
        (range(1..=11), t("false"), t("true"))
    );
    // The largest limit, and the default: the board's history (200).
    let (got, _, _) = around(&board, "1500&limit=500").await;
    assert_eq!(got, range(1000..=2000));
    let (got, _, _) = around(&board, "1500").await;
    assert_eq!(got, range(1300..=1700));
    // An id past the newest: just the newest before it.
    assert_eq!(
        around(&board, "5000&limit=2").await,
        (vec![2999, 3000], t("true"), t("false"))
    );
}

#[tokio::test]
async fn around_a_deleted_message_gives_its_neighbours() {
    let board = Board::start(&["--rate-limit", "0"]);
    const KEY: &str = "author-key-0123456789";
    for n in 1..=9 {
        let body = json!({"name": "a", "message": format!("m{n}"), "key": KEY}).to_string();
        assert_eq!(
            common::post(board.addr, "/api/messages", &body)
                .await
                .status,
            201
        );
    }
    for id in [5, 7] {
        let deleted = common::http(
            board.addr,
            "DELETE",
            &format!("/api/messages/{id}"),
            &[("Lanboard-Key", KEY)],
            "",
        )
        .await;
        assert_eq!(deleted.status, 204, "{}", deleted.body);
    }
    let t = |s: &str| s.to_owned();
    assert_eq!(
        around(&board, "5&limit=2").await,
        (vec![3, 4, 6, 8], t("true"), t("true"))
    );
    assert_eq!(
        around(&board, "6&limit=1").await,
        (vec![4, 6, 8], t("true"), t("true"))
    );
    assert_eq!(
        around(&board, "7&limit=9").await,
        (vec![1, 2, 3, 4, 6, 8, 9], t("false"), t("false"))
    );
}

#[tokio::test]
async fn around_of_long_messages_keeps_to_the_byte_budget_and_shows_both_sides() {
    let (_dir, board) = board_of_long_messages();
    let response = get(board.addr, "/api/messages?around=300&limit=500").await;
    let page = response.json().as_array().unwrap().clone();
    assert!(json_bytes(&page) <= CATCH_UP_BYTES);
    let got = ids(&page);
    let (first, last) = (got[0], *got.last().unwrap());
    assert_eq!(got, range(first..=last), "one run, oldest first");
    assert!(
        first < 250 && last > 350,
        "both sides of 300 get a share: {first}..={last}"
    );
    assert_eq!(response.header("lanboard-more"), Some("true"));
    assert_eq!(response.header("lanboard-newer"), Some("true"));
}

#[tokio::test]
async fn around_is_refused_with_since_or_before_and_when_it_is_no_id() {
    let (_dir, board) = board_with(20);
    for query in [
        "around=5&since=2",
        "around=5&before=9",
        "around=5&since=2&before=9",
        "around=abc",
        "around=",
        "around=-1",
        "around=0",
        "around=5&limit=0",
        "around=5&limit=501",
    ] {
        let response = get(board.addr, &format!("/api/messages?{query}")).await;
        assert_eq!(response.status, 400, "{query}: {}", response.body);
        assert_eq!(response.json()["code"], "bad-request", "{query}");
    }
    // The other forms say nothing of newer ones.
    let response = get(board.addr, "/api/messages?before=5").await;
    assert_eq!(response.header("lanboard-newer"), None);
}
