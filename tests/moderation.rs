//! Taking posts back: `edit-message`, `delete-message`, `block-sender`, their
//! HTTP twins, the change order a resuming client catches up with, the
//! operator link, and deleted text gone from the file, the export and Redis.
//! All against the real binary on a real socket with a real client.

mod common;

use std::collections::BTreeMap;

use common::redis::{Persistence, Redis};
use common::{get, http, Board, Client};
use serde_json::{json, Value};

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef00";

/// Posts `text` with `key` and returns the stored message from the ack.
async fn post_with_key(client: &mut Client, text: &str, key: &str, ack: u64) -> Value {
    client
        .send(json!({
            "event": "add-message",
            "data": {"name": "n", "message": text, "key": key},
            "ack": ack,
        }))
        .await;
    let reply = client.next_reply_to(ack).await;
    assert_eq!(reply["event"], "ack", "the post is stored: {reply}");
    reply["data"].clone()
}

/// Sends `event` with `data` and the ack `ack`, and returns the reply to it.
async fn ask(client: &mut Client, event: &str, data: Value, ack: u64) -> Value {
    client
        .send(json!({"event": event, "data": data, "ack": ack}))
        .await;
    client.next_reply_to(ack).await
}

/// The `code` of an `error` reply, failing on anything else.
fn code(reply: &Value) -> &str {
    assert_eq!(reply["event"], "error", "expected a refusal: {reply}");
    reply["data"]["code"].as_str().expect("an error has a code")
}

trait Replies {
    async fn next_reply_to(&mut self, ack: u64) -> Value;
}

impl Replies for Client {
    /// The next `ack` or `error` carrying `ack`, skipping broadcasts.
    async fn next_reply_to(&mut self, ack: u64) -> Value {
        loop {
            let frame = self.next().await.expect("the connection stays open");
            if frame["ack"] == ack && (frame["event"] == "ack" || frame["event"] == "error") {
                return frame;
            }
        }
    }
}

/// A board for one test, and the Redis it lives in when it is a node.
struct Setup {
    board: Board,
    redis: Option<Redis>,
}

impl Setup {
    fn sqlite(extra: &[&str]) -> Setup {
        Setup {
            board: Board::start(extra),
            redis: None,
        }
    }

    /// A node on a fresh `redis-server`; `None` (said loudly, and a failure
    /// under CI) when this machine has none.
    fn redis(extra: &[&str]) -> Option<Setup> {
        let redis = Redis::start(Persistence::None)?;
        Some(Setup {
            board: Board::node(&redis.url(), "board", extra),
            redis: Some(redis),
        })
    }

    /// The board's operator secret, from the real `operator-link`.
    fn operator_secret(&self, extra: &[&str]) -> String {
        let data = self.board.data.display().to_string();
        let url = self.redis.as_ref().map(Redis::url);
        let mut args = vec!["operator-link", "--port", "4000"];
        match &url {
            Some(url) => args.extend(["--redis", url, "--redis-prefix", "board"]),
            None => args.extend(["--data", &data]),
        }
        args.extend_from_slice(extra);
        let (status, stdout, stderr) = common::run(&args, std::env::temp_dir().as_path());
        assert!(status.success(), "operator-link failed: {stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "only the link on stdout: {stdout:?}");
        let (base, secret) = lines[0]
            .split_once("/#operator=")
            .unwrap_or_else(|| panic!("a link with #operator=: {stdout}"));
        assert!(
            base.starts_with("http://") && base.ends_with(":4000"),
            "{base}"
        );
        assert!(
            secret.len() == 32 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
            "{secret}"
        );
        secret.to_owned()
    }
}

/// Runs the check `$check` on a board in SQLite and on a node of a board in
/// Redis, as `$check::on_sqlite` and `$check::on_redis`.
macro_rules! on_both_stores {
    ($check:ident, $extra:expr) => {
        mod $check {
            #[tokio::test]
            async fn on_sqlite() {
                super::$check(super::Setup::sqlite($extra)).await;
            }

            #[tokio::test]
            async fn on_redis() {
                if let Some(setup) = super::Setup::redis($extra) {
                    super::$check(setup).await;
                }
            }
        }
    };
}

on_both_stores!(
    an_author_edits_and_deletes_their_post_and_everyone_sees_it_in_the_one_order,
    &[]
);
on_both_stores!(every_refusal_has_its_code, &["--max-message-chars", "10"]);
on_both_stores!(
    wrong_keys_spend_the_guess_budget_and_then_every_key_is_refused,
    &[]
);
on_both_stores!(
    the_operator_deletes_any_post_and_blocks_its_sender_until_the_block_ends,
    &[]
);
on_both_stores!(
    a_rotated_operator_link_stops_working_even_while_the_board_runs,
    &[]
);
on_both_stores!(the_http_api_edits_and_deletes_with_the_key_header, &[]);
on_both_stores!(
    a_client_resuming_after_edits_and_deletions_ends_with_exactly_the_board,
    &["--rate-limit", "0"]
);
on_both_stores!(
    a_resume_learns_of_changes_the_board_no_longer_keeps_in_memory,
    &[]
);

async fn an_author_edits_and_deletes_their_post_and_everyone_sees_it_in_the_one_order(
    setup: Setup,
) {
    let board = &setup.board;
    let mut alice = Client::connect(&board.ws_url()).await;
    let mut watcher = Client::connect(&board.ws_url()).await;
    let posted = post_with_key(&mut alice, "frist", ALICE, 1).await;
    assert_eq!(posted["id"], 1);
    assert!(
        posted.get("key").is_none(),
        "the key is never sent back: {posted}"
    );

    let edited = ask(
        &mut alice,
        "edit-message",
        json!({"id": 1, "message": "first", "key": ALICE}),
        2,
    )
    .await;
    assert_eq!(edited["event"], "ack");
    assert_eq!(edited["data"]["message"], "first");
    assert_eq!(edited["data"]["change"], 2);
    let seen = watcher.next_event("message-edited").await;
    assert_eq!(seen["data"]["id"], 1);
    assert_eq!(seen["data"]["message"], "first");
    assert_eq!(seen["data"]["change"], 2);
    assert_eq!(
        seen["data"]["time"], posted["time"],
        "the time is the post's"
    );
    assert!(seen["data"]["edited"].as_i64().unwrap() >= posted["time"].as_i64().unwrap());

    let deleted = ask(
        &mut alice,
        "delete-message",
        json!({"id": 1, "key": ALICE}),
        3,
    )
    .await;
    assert_eq!(
        deleted,
        json!({"event": "ack", "ack": 3, "data": {"id": 1}})
    );
    let gone = watcher.next_event("message-deleted").await;
    assert_eq!(gone["data"], json!({"id": 1, "change": 3}));

    let next = post_with_key(&mut alice, "after", ALICE, 4).await;
    assert_eq!(next["id"], 4, "a post takes the id after the changes");
    // Once the board has published it (on Redis that follows the ack).
    assert_eq!(watcher.next_event("message-added").await["data"]["id"], 4);
    let fresh = Client::connect(&board.ws_url()).await;
    assert_eq!(
        common::ids(&fresh.history),
        [4],
        "a new client never sees it"
    );
    let listed = get(board.addr, "/api/messages").await.json();
    assert_eq!(common::ids(listed.as_array().unwrap()), [4]);
    assert!(
        board.stderr().contains("message 1 deleted by its author"),
        "deletions are logged by id: {}",
        board.stderr()
    );
    assert!(!board.stderr().contains("frist"), "never their text");
}

async fn every_refusal_has_its_code(setup: Setup) {
    let board = &setup.board;
    let mut alice = Client::connect(&board.ws_url()).await;
    let mut bob = Client::connect(&board.ws_url()).await;
    post_with_key(&mut alice, "alice's", ALICE, 1).await;
    bob.send(json!({"event": "add-message", "data": {"message": "keyless"}, "ack": 2}))
        .await;
    assert_eq!(bob.next_reply_to(2).await["event"], "ack");

    let cases = [
        (
            "edit-message",
            json!({"id": 1, "message": "x", "key": BOB}),
            "forbidden",
        ),
        ("delete-message", json!({"id": 1, "key": BOB}), "forbidden"),
        (
            "edit-message",
            json!({"id": 2, "message": "x", "key": BOB}),
            "forbidden",
        ),
        (
            "block-sender",
            json!({"id": 1, "minutes": 5, "key": ALICE}),
            "forbidden",
        ),
        (
            "edit-message",
            json!({"id": 99, "message": "x", "key": ALICE}),
            "not-found",
        ),
        (
            "delete-message",
            json!({"id": 99, "key": ALICE}),
            "not-found",
        ),
        (
            "edit-message",
            json!({"id": 1, "message": "  ", "key": ALICE}),
            "empty-message",
        ),
        (
            "edit-message",
            json!({"id": 1, "key": ALICE}),
            "empty-message",
        ),
        (
            "edit-message",
            json!({"id": 1, "message": "far too long", "key": ALICE}),
            "message-too-long",
        ),
        (
            "edit-message",
            json!({"id": 1, "message": "x"}),
            "bad-request",
        ),
        (
            "edit-message",
            json!({"id": 1, "message": "x", "key": "short"}),
            "bad-request",
        ),
        (
            "delete-message",
            json!({"id": "1", "key": ALICE}),
            "bad-request",
        ),
        (
            "delete-message",
            json!({"id": 0, "key": ALICE}),
            "bad-request",
        ),
        (
            "block-sender",
            json!({"id": 1, "minutes": 0, "key": ALICE}),
            "bad-request",
        ),
        (
            "block-sender",
            json!({"id": 1, "minutes": 10081, "key": ALICE}),
            "bad-request",
        ),
    ];
    for (n, (event, data, expected)) in cases.into_iter().enumerate() {
        let reply = ask(&mut bob, event, data.clone(), 10 + n as u64).await;
        assert_eq!(code(&reply), expected, "{event} {data}");
    }
    let listed = get(board.addr, "/api/messages").await.json();
    assert_eq!(listed[0]["message"], "alice's", "nothing changed");
    assert!(listed[0].get("edited").is_none());
}

async fn wrong_keys_spend_the_guess_budget_and_then_every_key_is_refused(setup: Setup) {
    let board = &setup.board;
    let mut alice = Client::connect(&board.ws_url()).await;
    post_with_key(&mut alice, "mine", ALICE, 1).await;
    let mut guesser = Client::connect(&board.ws_url()).await;
    for n in 0..20 {
        let key = format!("guess-{n:020}");
        let reply = ask(
            &mut guesser,
            "delete-message",
            json!({"id": 1, "key": key}),
            100 + n,
        )
        .await;
        assert_eq!(code(&reply), "forbidden");
    }
    // From the same address even the right key is refused now, over HTTP too.
    let reply = ask(
        &mut alice,
        "delete-message",
        json!({"id": 1, "key": ALICE}),
        2,
    )
    .await;
    assert_eq!(code(&reply), "rate-limited");
    let refused = http(
        board.addr,
        "DELETE",
        "/api/messages/1",
        &[("Lanboard-Key", ALICE)],
        "",
    )
    .await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        get(board.addr, "/api/messages").await.json()[0]["message"],
        "mine"
    );
}

async fn the_operator_deletes_any_post_and_blocks_its_sender_until_the_block_ends(setup: Setup) {
    let board = &setup.board;
    let secret = setup.operator_secret(&[]);
    assert!(!board.banner.contains(&secret), "never in the banner");
    let mut operator = Client::connect(&board.ws_url()).await;
    let mut spammer = Client::connect(&board.ws_url()).await;
    let spam = post_with_key(&mut spammer, "spam", BOB, 1).await;
    spammer
        .send(json!({"event": "add-message", "data": {"message": "keyless spam"}, "ack": 2}))
        .await;
    let keyless = spammer.next_reply_to(2).await["data"].clone();

    let deleted = ask(
        &mut operator,
        "delete-message",
        json!({"id": keyless["id"], "key": secret}),
        3,
    )
    .await;
    assert_eq!(deleted["data"], json!({"id": keyless["id"]}));
    let edit = ask(
        &mut operator,
        "edit-message",
        json!({"id": spam["id"], "message": "x", "key": secret}),
        4,
    )
    .await;
    assert_eq!(
        code(&edit),
        "forbidden",
        "the operator does not put words in mouths"
    );

    let blocked = ask(
        &mut operator,
        "block-sender",
        json!({"id": spam["id"], "minutes": 60, "key": secret}),
        5,
    )
    .await;
    assert_eq!(blocked["event"], "ack");
    let until = blocked["data"]["until"].as_i64().expect("until");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (until - now - 3_600_000).abs() < 60_000,
        "an hour from now: {until}"
    );

    spammer
        .send(json!({"event": "add-message", "data": {"message": "again"}, "ack": 6}))
        .await;
    let refused = spammer.next_reply_to(6).await;
    assert_eq!(code(&refused), "blocked");
    assert_eq!(refused["data"]["until"], until);
    let over_http = http(
        board.addr,
        "POST",
        "/api/messages",
        &[],
        r#"{"message":"again"}"#,
    )
    .await;
    assert_eq!(over_http.status, 403);
    assert_eq!(over_http.json()["code"], "blocked");
    assert!(
        board
            .stderr()
            .contains(&format!("blocked the sender of message {}", spam["id"])),
        "{}",
        board.stderr()
    );
    assert!(
        !board.stderr().contains(&secret),
        "the secret is never logged"
    );

    // The block is kept in the store: a restart does not lift it.
    let mut setup = setup;
    let board = &mut setup.board;
    board.restart();
    let refused = http(
        board.addr,
        "POST",
        "/api/messages",
        &[],
        r#"{"message":"after restart"}"#,
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
}

async fn a_rotated_operator_link_stops_working_even_while_the_board_runs(setup: Setup) {
    let board = &setup.board;
    let old = setup.operator_secret(&[]);
    assert_eq!(
        setup.operator_secret(&[]),
        old,
        "the same link until rotated"
    );
    let mut client = Client::connect(&board.ws_url()).await;
    post_with_key(&mut client, "one", ALICE, 1).await;
    post_with_key(&mut client, "two", ALICE, 2).await;
    let new = setup.operator_secret(&["--rotate"]);
    assert_ne!(new, old);
    let stale = ask(
        &mut client,
        "delete-message",
        json!({"id": 1, "key": old}),
        3,
    )
    .await;
    assert_eq!(code(&stale), "forbidden");
    let fresh = ask(
        &mut client,
        "delete-message",
        json!({"id": 1, "key": new}),
        4,
    )
    .await;
    assert_eq!(fresh["event"], "ack");
}

async fn the_http_api_edits_and_deletes_with_the_key_header(setup: Setup) {
    let board = &setup.board;
    let created = http(
        board.addr,
        "POST",
        "/api/messages",
        &[],
        &json!({"name": "script", "message": "build failed", "key": ALICE}).to_string(),
    )
    .await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_u64().unwrap();
    let path = format!("/api/messages/{id}");
    let body = r#"{"message":"build passed"}"#;
    let wrong = http(board.addr, "PATCH", &path, &[("Lanboard-Key", BOB)], body).await;
    assert_eq!(
        (wrong.status, wrong.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    let missing = http(
        board.addr,
        "PATCH",
        "/api/messages/99",
        &[("Lanboard-Key", ALICE)],
        body,
    )
    .await;
    assert_eq!(
        (missing.status, missing.json()["code"].as_str()),
        (404, Some("not-found"))
    );
    let no_key = http(board.addr, "PATCH", &path, &[], body).await;
    assert_eq!(no_key.status, 400);
    let empty = http(
        board.addr,
        "PATCH",
        &path,
        &[("Lanboard-Key", ALICE)],
        r#"{"message":" "}"#,
    )
    .await;
    assert_eq!(
        (empty.status, empty.json()["code"].as_str()),
        (400, Some("empty-message"))
    );
    let not_json = http(board.addr, "PATCH", &path, &[("Lanboard-Key", ALICE)], "{").await;
    assert_eq!(
        (not_json.status, not_json.json()["code"].as_str()),
        (400, Some("bad-json"))
    );
    let bad_id = http(
        board.addr,
        "DELETE",
        "/api/messages/x",
        &[("Lanboard-Key", ALICE)],
        "",
    )
    .await;
    assert_eq!(bad_id.status, 400);

    let edited = http(board.addr, "PATCH", &path, &[("Lanboard-Key", ALICE)], body).await;
    assert_eq!(edited.status, 200);
    assert_eq!(edited.json()["message"], "build passed");
    assert!(edited.json()["edited"].is_i64());
    until_board(board, "the edit is listed", |listed| {
        listed
            .first()
            .is_some_and(|m| m["message"] == "build passed")
    })
    .await;
    let listed = get(board.addr, "/api/messages").await;
    assert_eq!(listed.json()[0]["message"], "build passed");
    assert!(listed.json()[0]["edited"].is_i64());
    assert!(!listed.body.contains(ALICE), "the key is never served");

    let deleted = http(board.addr, "DELETE", &path, &[("Lanboard-Key", ALICE)], "").await;
    assert_eq!((deleted.status, deleted.body.as_str()), (204, ""));
    let again = http(board.addr, "DELETE", &path, &[("Lanboard-Key", ALICE)], "").await;
    assert_eq!(again.status, 404);
    until_board(board, "the deletion is listed", |listed| listed.is_empty()).await;
}

/// What a client shows, built only from the frames it received.
#[derive(Default)]
struct Shown {
    messages: BTreeMap<u64, Value>,
    /// The largest id or change seen: where it resumes.
    last: u64,
}

impl Shown {
    fn apply(&mut self, frame: &Value) {
        let data = &frame["data"];
        match frame["event"].as_str().unwrap_or_default() {
            "messages-available" => {
                for message in data.as_array().unwrap() {
                    self.add(message);
                }
            }
            "message-added" => self.add(data),
            "message-edited" => {
                let id = data["id"].as_u64().unwrap();
                self.last = self.last.max(data["change"].as_u64().unwrap());
                if let Some(shown) = self.messages.get_mut(&id) {
                    let mut message = data.clone();
                    message.as_object_mut().unwrap().remove("change");
                    *shown = message;
                }
            }
            "message-deleted" => {
                self.messages.remove(&data["id"].as_u64().unwrap());
                self.last = self.last.max(data["change"].as_u64().unwrap());
            }
            _ => {}
        }
    }

    fn add(&mut self, message: &Value) {
        let id = message["id"].as_u64().unwrap();
        self.last = self.last.max(id);
        self.messages.insert(id, message.clone());
    }

    fn list(&self) -> Vec<Value> {
        self.messages.values().cloned().collect()
    }
}

/// Reads frames until `quiet` passes with none, applying each.
async fn take_frames(client: &mut Client, shown: &mut Shown, quiet: std::time::Duration) {
    while let Ok(Some(frame)) = tokio::time::timeout(quiet, client.next()).await {
        shown.apply(&frame);
    }
}

/// Waits until what the board lists passes `done`: on Redis an ack can come
/// before the node's tail has read the post (or change) back.
async fn until_board(board: &Board, what: &str, done: impl Fn(&[Value]) -> bool) {
    let deadline = std::time::Instant::now() + common::WAIT;
    while !done(&board_now(board.addr).await) {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every message of the board now, as the HTTP API lists it.
async fn board_now(addr: std::net::SocketAddr) -> Vec<Value> {
    get(addr, "/api/messages?limit=500")
        .await
        .json()
        .as_array()
        .unwrap()
        .clone()
}

async fn a_client_resuming_after_edits_and_deletions_ends_with_exactly_the_board(setup: Setup) {
    let board = &setup.board;
    let mut others = Client::connect(&board.ws_url()).await;
    for n in 1..=50 {
        post_with_key(&mut others, &format!("message {n}"), ALICE, n).await;
    }
    // On Redis an ack can come before the node's tail has read the post back.
    let deadline = std::time::Instant::now() + common::WAIT;
    while board_now(board.addr).await.len() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the posts reach the board"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut away = Client::connect(&board.ws_url()).await;
    let mut shown = Shown::default();
    shown.apply(&away.welcome);
    assert_eq!(shown.messages.len(), 50);
    away.socket.close(None).await.ok();
    drop(away);

    let edit = json!({"id": 10, "message": "ten, edited", "key": ALICE});
    assert_eq!(
        ask(&mut others, "edit-message", edit, 100).await["event"],
        "ack"
    );
    let delete = json!({"id": 11, "key": ALICE});
    assert_eq!(
        ask(&mut others, "delete-message", delete, 101).await["event"],
        "ack"
    );
    post_with_key(&mut others, "fifty-one", ALICE, 102).await;
    until_board(board, "the changes are listed", |listed| {
        listed.last().is_some_and(|m| m["id"] == 53)
    })
    .await;

    let resume = format!("{}?since={}", board.ws_url(), shown.last);
    let mut back = Client::connect(&resume).await;
    assert_eq!(
        common::ids(&back.history),
        [53],
        "only the new post, in full"
    );
    shown.apply(&back.welcome);
    take_frames(&mut back, &mut shown, std::time::Duration::from_millis(500)).await;
    assert_eq!(shown.list(), board_now(board.addr).await);
    assert_eq!(shown.messages[&10]["message"], "ten, edited");
    assert!(!shown.messages.contains_key(&11));
    assert_eq!(shown.last, 53);
}

async fn a_resume_learns_of_changes_the_board_no_longer_keeps_in_memory(mut setup: Setup) {
    let board = &mut setup.board;
    let mut client = Client::connect(&board.ws_url()).await;
    for n in 1..=5 {
        post_with_key(&mut client, &format!("m{n}"), ALICE, n).await;
    }
    ask(
        &mut client,
        "edit-message",
        json!({"id": 2, "message": "m2, edited", "key": ALICE}),
        6,
    )
    .await;
    ask(
        &mut client,
        "delete-message",
        json!({"id": 4, "key": ALICE}),
        7,
    )
    .await;
    ask(
        &mut client,
        "edit-message",
        json!({"id": 2, "message": "m2, again", "key": ALICE}),
        8,
    )
    .await;
    drop(client);
    board.restart();
    let mut back = Client::connect(&format!("{}?since=5", board.ws_url())).await;
    assert_eq!(back.history, json!([]).as_array().unwrap().clone());
    let first = back.next_reply().await;
    let second = back.next_reply().await;
    assert_eq!(first["event"], "message-deleted");
    assert_eq!(first["data"], json!({"id": 4, "change": 7}));
    assert_eq!(second["event"], "message-edited");
    assert_eq!(second["data"]["message"], "m2, again");
    assert_eq!(
        second["data"]["change"], 8,
        "one frame per message: its latest change"
    );
}

/// True when `needle` occurs anywhere in `haystack`.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn deleted_text_is_gone_from_the_file_its_wal_and_the_export() {
    let board = &Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    // One short text, one long enough to spill into overflow pages.
    let short = "wifi password: hunter2-zebra";
    let long = format!("customer phone {}", "ü-0123456789-".repeat(300));
    let edited_away = "typo-with-a-secret-token-xyzzy";
    for (n, text) in [short, long.as_str(), edited_away, "keep me"]
        .into_iter()
        .enumerate()
    {
        post_with_key(&mut client, text, ALICE, n as u64 + 1).await;
    }
    let wal = board.data.with_extension("db-wal");
    let file = || {
        let mut bytes = std::fs::read(&board.data).unwrap();
        bytes.extend(std::fs::read(&wal).unwrap_or_default());
        bytes
    };
    assert!(
        contains(&file(), short) && contains(&file(), &long[..60]),
        "stored at first"
    );

    for (n, id) in [1, 2].into_iter().enumerate() {
        let reply = ask(
            &mut client,
            "delete-message",
            json!({"id": id, "key": ALICE}),
            10 + n as u64,
        )
        .await;
        assert_eq!(reply["event"], "ack");
    }
    let reply = ask(
        &mut client,
        "edit-message",
        json!({"id": 3, "message": "fixed", "key": ALICE}),
        20,
    )
    .await;
    assert_eq!(reply["event"], "ack");
    // The acks come after the commit, and the commit after the scrub.
    let bytes = file();
    for gone in [short, &long[..60], &long[long.len() - 60..], edited_away] {
        assert!(
            !contains(&bytes, gone),
            "{gone:?} is still in the file or its WAL"
        );
    }
    assert!(contains(&bytes, "keep me"), "the check reads the real file");

    let (status, exported, stderr) = common::run(
        &["export", "--data", board.data.to_str().unwrap()],
        std::env::temp_dir().as_path(),
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(exported.lines().count(), 2, "{exported}");
    assert!(exported.contains("keep me") && exported.contains(r#""edited":"#));
    for gone in [short, &long[..60], edited_away] {
        assert!(!exported.contains(gone));
    }
}

macro_rules! redis_or_skip {
    ($persistence:expr) => {
        match Redis::start($persistence) {
            Some(redis) => redis,
            None => return,
        }
    };
}

#[tokio::test]
async fn an_edit_on_one_node_and_a_deletion_on_another_reach_a_third_in_the_one_order() {
    let redis = redis_or_skip!(Persistence::None);
    let nodes: Vec<Board> = (0..3)
        .map(|_| Board::node(&redis.url(), "mod", &[]))
        .collect();
    let mut a = Client::connect(&nodes[0].ws_url()).await;
    let mut b = Client::connect(&nodes[1].ws_url()).await;
    let mut watchers = Vec::new();
    for node in [2, 0, 1] {
        watchers.push(Client::connect(&nodes[node].ws_url()).await);
    }
    let first = post_with_key(&mut a, "first", ALICE, 1).await;
    let second = post_with_key(&mut b, "second", BOB, 2).await;
    let edit = json!({"id": first["id"], "message": "first, edited", "key": ALICE});
    let delete = json!({"id": second["id"], "key": BOB});
    let (edited, deleted) = tokio::join!(
        ask(&mut a, "edit-message", edit, 3),
        ask(&mut b, "delete-message", delete, 4)
    );
    assert_eq!(
        (edited["event"].as_str(), deleted["event"].as_str()),
        (Some("ack"), Some("ack"))
    );

    // Every client hears the changes in the same order, whatever node it
    // came through, each event in the board's one order (positions only
    // grow). A node whose tail reads a post only after its deletion skips
    // the post (its text is gone) and still tells of the deletion.
    let mut changes = Vec::new();
    for client in &mut watchers {
        let mut positions = Vec::new();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let frame = client.next().await.expect("the connection stays open");
            let data = &frame["data"];
            match frame["event"].as_str().unwrap_or_default() {
                "message-added" => positions.push(data["id"].as_u64().unwrap()),
                event @ ("message-edited" | "message-deleted") => {
                    let change = data["change"].as_u64().unwrap();
                    positions.push(change);
                    seen.push((event.to_owned(), data["id"].as_u64().unwrap(), change));
                }
                _ => {}
            }
        }
        assert!(positions.windows(2).all(|p| p[0] < p[1]), "{positions:?}");
        changes.push(seen);
    }
    assert!(
        changes.windows(2).all(|pair| pair[0] == pair[1]),
        "{changes:?}"
    );

    // A resume on the third node learns both, and Redis holds no deleted text.
    let mut late = Client::connect(&format!("{}?since={}", nodes[2].ws_url(), second["id"])).await;
    let mut shown = Shown::default();
    for message in [&first, &second] {
        shown.add(message);
    }
    shown.apply(&late.welcome);
    take_frames(&mut late, &mut shown, std::time::Duration::from_millis(500)).await;
    assert_eq!(shown.list(), board_now(nodes[2].addr).await);
    assert_eq!(shown.list().len(), 1);
    let second_key = format!("mod:message:{}", second["id"]);
    assert_eq!(
        redis.cli(&["EXISTS", &second_key]).trim(),
        "0",
        "the deleted message is gone"
    );
    let first_key = format!("mod:message:{}", first["id"]);
    assert_eq!(
        redis.cli(&["HGET", &first_key, "message"]).trim(),
        "first, edited"
    );
    let operator = redis.cli(&["GET", "mod:operator"]);
    assert_eq!(
        operator.trim().len(),
        32,
        "every node shares one operator secret"
    );
}

/// Every byte of every file under `dir`.
fn files_under(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            bytes.extend(files_under(&path));
        } else if let Ok(content) = std::fs::read(&path) {
            bytes.extend(content);
        }
    }
    bytes
}

#[tokio::test]
async fn deleted_and_edited_away_text_is_gone_from_redis_its_files_and_the_export() {
    // Uncompressed snapshots, so that reading the files' bytes can find text.
    let Some(redis) = Redis::start_with(Persistence::AppendOnly, &["--rdbcompression", "no"])
    else {
        return;
    };
    let node = Board::node(&redis.url(), "gone", &[]);
    let mut client = Client::connect(&node.ws_url()).await;
    let secret = "door code 4711-redis-only";
    let edited_away = "first draft: token plugh-9";
    let doomed = post_with_key(&mut client, secret, ALICE, 1).await;
    let fixed = post_with_key(&mut client, edited_away, ALICE, 2).await;
    post_with_key(&mut client, "stays-42", ALICE, 3).await;
    assert!(
        contains(&files_under(redis.dir()), secret),
        "written at first"
    );
    let deleted = json!({"id": doomed["id"], "key": ALICE});
    assert_eq!(
        ask(&mut client, "delete-message", deleted, 4).await["event"],
        "ack"
    );
    let edit = json!({"id": fixed["id"], "message": "fixed-77", "key": ALICE});
    assert_eq!(
        ask(&mut client, "edit-message", edit, 5).await["event"],
        "ack"
    );
    let key = format!("gone:message:{}", doomed["id"]);
    assert_eq!(redis.cli(&["EXISTS", &key]).trim(), "0");
    let stream = redis.cli(&["XRANGE", "gone:messages", "-", "+"]);
    assert!(
        !stream.contains(&format!("{}-0", doomed["id"])),
        "its entry is gone: {stream}"
    );

    // The node asks Redis to rewrite its files, which Redis does in the background.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let files = files_under(redis.dir());
        let left: Vec<&str> = [secret, edited_away]
            .into_iter()
            .filter(|text| contains(&files, text))
            .collect();
        if left.is_empty() {
            assert!(
                contains(&files, "stays-42") && contains(&files, "fixed-77"),
                "the check reads the real files"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left:?} still in Redis's files; node: {}",
            node.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, exported, stderr) = common::run(
        &["export", "--redis", &redis.url(), "--redis-prefix", "gone"],
        std::env::temp_dir().as_path(),
    );
    assert!(status.success(), "{stderr}");
    assert!(
        exported.contains("stays-42") && exported.contains("fixed-77"),
        "{exported}"
    );
    assert!(!exported.contains(secret) && !exported.contains(edited_away));
}

#[tokio::test]
async fn edits_draw_on_the_posting_budget_like_posts() {
    let board = &Board::start(&["--rate-limit", "1", "--rate-burst", "3"]);
    let mut alice = Client::connect(&board.ws_url()).await;
    post_with_key(&mut alice, "v0", ALICE, 1).await;
    let mut codes = Vec::new();
    for n in 1..=4 {
        let edit = json!({"id": 1, "message": format!("v{n}"), "key": ALICE});
        let reply = ask(&mut alice, "edit-message", edit, 10 + n).await;
        codes.push(reply["data"]["code"].as_str().unwrap_or("done").to_owned());
    }
    assert_eq!(codes, ["done", "done", "rate-limited", "rate-limited"]);
}

#[test]
fn operator_link_refuses_a_file_that_holds_no_board_and_makes_none() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    let (status, stdout, stderr) = common::run(
        &["operator-link", "--data", missing.to_str().unwrap()],
        dir.path(),
    );
    assert!(!status.success());
    assert_eq!(stdout, "", "no link for a board that does not exist");
    assert!(stderr.contains("typo.db does not exist"), "{stderr}");
    assert!(!missing.exists(), "no new board was made");
}
