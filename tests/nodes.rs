//! Nodes of one Redis board agree on what is not a message: logins and the
//! epoch. (Delivery across nodes is in `cluster.rs`.)

mod common;

use common::redis::{Persistence, Redis};
use common::{get, http, post, Board, Client};
use futures_util::StreamExt;
use serde_json::json;

fn cookie_from(response: &common::Response) -> String {
    let header = response.header("set-cookie").expect("a login cookie");
    header.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_login_on_one_node_is_good_on_every_node_and_a_new_passphrase_voids_it() {
    let Some(redis) = Redis::start(Persistence::None) else {
        return;
    };
    let a = Board::node(&redis.url(), "login", &["--password", "correct horse"]);
    let b = Board::node(&redis.url(), "login", &["--password", "correct horse"]);
    let login = post(a.addr, "/api/login", r#"{"password":"correct horse"}"#).await;
    assert_eq!(login.status, 204);
    let cookie = cookie_from(&login);
    for node in [&a, &b] {
        let listed = http(
            node.addr,
            "GET",
            "/api/messages",
            &[("Cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(listed.status, 200, "the cookie works on {}", node.addr);
    }
    let without = get(b.addr, "/api/messages").await;
    assert_eq!(without.status, 401);
    // Restarted with another passphrase, the board no longer takes the old cookie.
    let c = Board::node(&redis.url(), "login", &["--password", "battery staple"]);
    let refused = http(c.addr, "GET", "/api/messages", &[("Cookie", &cookie)], "").await;
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn after_the_stream_is_lost_clients_are_told_and_ids_never_repeat() {
    let Some(redis) = Redis::start(Persistence::None) else {
        return;
    };
    let node = Board::node(&redis.url(), "lost", &["--rate-limit", "0"]);
    let mut client = Client::connect(&node.ws_url()).await;
    let old_epoch = client.welcome["epoch"]
        .as_str()
        .expect("a Redis board names its epoch")
        .to_owned();
    for n in 1..=3 {
        client.add("ada", &format!("before {n}"), n).await;
    }
    let mut seen = 0;
    while seen < 3 {
        if client.next_event("message-added").await["data"]["id"].as_u64() == Some(seen + 1) {
            seen += 1;
        }
    }
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let reset = client.next_event("board-reset").await;
    assert!(reset["data"]["message"].is_string(), "{reset}");
    // Once the node has begun the new board, posts go through again.
    let deadline = std::time::Instant::now() + common::WAIT;
    let stored = loop {
        let answer = post(
            node.addr,
            "/api/messages",
            r#"{"name":"ada","message":"after"}"#,
        )
        .await;
        if answer.status == 201 {
            break answer.json();
        }
        assert_eq!(
            answer.json()["code"],
            "storage-unavailable",
            "{}",
            answer.json()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "posting never resumed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        stored["id"].as_u64().unwrap() > 3,
        "a new id above every id clients saw: {stored}"
    );
    let listed = get(node.addr, "/api/messages").await.json();
    assert_eq!(listed, json!([stored]), "the node shows the new board only");

    // A client that was away during the reset and resumes from the old
    // history is told first, then gets the new board, not "messages after 3".
    let url = format!("{}?since=3&epoch={old_epoch}", node.ws_url());
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut first_frames = Vec::new();
    while first_frames.len() < 2 {
        let frame = tokio::time::timeout(common::WAIT, socket.next())
            .await
            .expect("frames in time")
            .expect("the socket stays open")
            .unwrap();
        if let Ok(text) = frame.to_text() {
            first_frames.push(serde_json::from_str::<serde_json::Value>(text).unwrap());
        }
    }
    assert_eq!(first_frames[0]["event"], "board-reset");
    assert_eq!(first_frames[1]["event"], "messages-available");
    assert_eq!(first_frames[1]["data"], json!([stored]));
    assert_ne!(first_frames[1]["epoch"], json!(old_epoch));
    // With the current epoch, resuming works as usual.
    let current = first_frames[1]["epoch"].as_str().unwrap();
    let resumed = Client::connect(&format!("{}?since=0&epoch={current}", node.ws_url())).await;
    assert_eq!(resumed.history, vec![stored]);
}

#[tokio::test]
async fn an_entry_that_is_not_a_message_is_passed_over_and_delivery_goes_on() {
    let Some(redis) = Redis::start(Persistence::None) else {
        return;
    };
    let node = Board::node(&redis.url(), "foreign", &[]);
    let mut client = Client::connect(&node.ws_url()).await;
    // Someone with access to Redis writes to the board's stream by hand.
    assert_eq!(
        redis.cli(&["XADD", "foreign:messages", "1-0", "note", "not a message"]),
        "1-0"
    );
    assert_eq!(redis.cli(&["SET", "foreign:last-id", "1"]), "OK");
    client.add("ada", "still here", 1).await;
    let added = client.next_event("message-added").await;
    assert_eq!(added["data"]["id"], 2);
    assert_eq!(added["data"]["message"], "still here");
}
