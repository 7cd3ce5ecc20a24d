//! Protocol v1 against the real binary on a real socket, with a real
//! WebSocket client.

mod common;

use common::{get, ids, post, Board, Client};
use serde_json::{json, Value};

#[tokio::test]
async fn a_new_client_receives_messages_available_first() {
    let board = Board::start(&[]);
    let client = Client::connect(&board.ws_url()).await;
    assert_eq!(client.welcome["event"], "messages-available");
    assert_eq!(client.history, Vec::<Value>::new());
}

#[tokio::test]
async fn add_message_reaches_both_clients_with_the_same_id() {
    let board = Board::start(&[]);
    let mut alice = Client::connect(&board.ws_url()).await;
    let mut bob = Client::connect(&board.ws_url()).await;
    alice
        .send(json!({"event": "add-message", "data": {"name": "Alice", "message": "hello"}}))
        .await;
    let to_alice = alice.next_event("message-added").await;
    let to_bob = bob.next_event("message-added").await;
    assert_eq!(to_alice, to_bob);
    let message = &to_bob["data"];
    assert_eq!(message["id"], 1);
    assert_eq!(message["name"], "Alice");
    assert_eq!(message["message"], "hello");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let time = message["time"].as_i64().expect("time is an integer");
    assert!(
        (now_ms - time).abs() < 60_000,
        "time {time} is ms since the epoch"
    );
}

#[tokio::test]
async fn a_new_client_receives_earlier_messages_oldest_first() {
    let board = Board::start(&[]);
    let mut alice = Client::connect(&board.ws_url()).await;
    for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
        alice.add("Alice", text, i as u64).await;
        alice.next_event("ack").await;
    }
    let late = Client::connect(&board.ws_url()).await;
    assert_eq!(ids(&late.history), [1, 2, 3]);
    let texts: Vec<&str> = late
        .history
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
}

#[tokio::test]
async fn history_sends_only_the_newest_n_messages() {
    let board = Board::start(&["--history", "3"]);
    let mut client = Client::connect(&board.ws_url()).await;
    for i in 0..5 {
        client.add("a", &format!("m{i}"), i).await;
        client.next_event("ack").await;
    }
    let late = Client::connect(&board.ws_url()).await;
    assert_eq!(ids(&late.history), [3, 4, 5]);
}

#[tokio::test]
async fn concurrent_senders_are_seen_in_one_identical_order_by_every_client() {
    let board = Board::start(&["--rate-limit", "0"]);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(&board.ws_url()).await);
    }
    const EACH: usize = 50;
    // Every client sends its messages without waiting, all at once.
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..EACH {
            client
                .send(json!({"event": "add-message", "data": {"name": format!("c{c}"), "message": format!("{c}-{i}")}}))
                .await;
        }
    }
    let mut orders = Vec::new();
    for client in &mut clients {
        let mut seen = Vec::new();
        while seen.len() < 3 * EACH {
            let frame = client.next_event("message-added").await;
            seen.push((
                frame["data"]["id"].as_u64().unwrap(),
                frame["data"]["message"].as_str().unwrap().to_owned(),
            ));
        }
        orders.push(seen);
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
    let received_ids: Vec<u64> = orders[0].iter().map(|(id, _)| *id).collect();
    assert_eq!(
        received_ids,
        (1..=3 * EACH as u64).collect::<Vec<_>>(),
        "ids in order"
    );
    // Each sender's own messages keep the order it sent them in.
    for c in 0..3 {
        let mine: Vec<&str> = orders[0]
            .iter()
            .map(|(_, m)| m.as_str())
            .filter(|m| m.starts_with(&format!("{c}-")))
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("{c}-{i}")).collect();
        assert_eq!(mine, sent);
    }
}

#[tokio::test]
async fn an_ack_returns_the_stored_message_to_the_sender_only() {
    let board = Board::start(&[]);
    let mut alice = Client::connect(&board.ws_url()).await;
    let mut bob = Client::connect(&board.ws_url()).await;
    alice.add("  Alice  ", "hi", 42).await;
    let mut ack = None;
    let mut added = None;
    while ack.is_none() || added.is_none() {
        let frame = alice.next_reply().await;
        match frame["event"].as_str().unwrap() {
            "ack" => ack = Some(frame),
            "message-added" => added = Some(frame),
            other => panic!("unexpected {other}"),
        }
    }
    let ack = ack.unwrap();
    assert_eq!(ack["ack"], 42);
    assert_eq!(ack["data"], added.unwrap()["data"]);
    assert_eq!(ack["data"]["name"], "Alice", "the name is trimmed");
    // Bob gets the message but not Alice's ack.
    assert_eq!(bob.next_reply().await["event"], "message-added");
    bob.add("Bob", "ping", 1).await;
    let reply = bob.next_reply().await;
    assert!(
        reply["event"] == "message-added" || reply["ack"] == 1,
        "{reply}"
    );
}

#[tokio::test]
async fn rejected_messages_get_an_error_with_the_ack_and_are_not_stored() {
    let board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    let cases = [
        (json!({"name": "a", "message": "   \n "}), "empty-message"),
        (
            json!({"name": "a", "message": "x".repeat(4001)}),
            "message-too-long",
        ),
        (
            json!({"name": "n".repeat(65), "message": "x"}),
            "name-too-long",
        ),
        (json!({"name": 7, "message": "x"}), "bad-request"),
        (json!({"name": "a"}), "empty-message"),
        (json!("just a string"), "bad-request"),
    ];
    for (ack, (data, code)) in cases.iter().enumerate() {
        client
            .send(json!({"event": "add-message", "data": data, "ack": ack}))
            .await;
        let reply = client.next_reply().await;
        assert_eq!(reply["event"], "error", "{data} -> {reply}");
        assert_eq!(reply["ack"], ack as u64);
        assert_eq!(reply["data"]["code"], *code, "{data}");
        assert!(reply["data"]["message"].as_str().unwrap().len() > 5);
    }
    // Without an ack the error still comes, without an ack field.
    client
        .send(json!({"event": "add-message", "data": {"message": ""}}))
        .await;
    let reply = client.next_reply().await;
    assert_eq!(reply["data"]["code"], "empty-message");
    assert_eq!(reply.get("ack"), None);
    // A name left empty becomes Anonymous, and the connection is still fine.
    client.add("", "still here", 99).await;
    let ack = client.next_event("ack").await;
    assert_eq!(ack["data"]["name"], "Anonymous");
    assert_eq!(ack["data"]["id"], 1, "nothing rejected was stored");
}

#[tokio::test]
async fn malformed_json_and_unknown_events_get_errors_and_the_connection_lives_on() {
    let board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    client.send_text("{this is not json").await;
    assert_eq!(client.next_reply().await["data"]["code"], "bad-json");
    client
        .send(json!({"event": "dance", "data": {}, "ack": 5}))
        .await;
    let reply = client.next_reply().await;
    assert_eq!(reply["data"]["code"], "unknown-event");
    assert_eq!(reply["ack"], 5);
    client.send(json!([1, 2, 3])).await;
    assert_eq!(client.next_reply().await["data"]["code"], "bad-request");
    client.add("a", "after the noise", 6).await;
    assert_eq!(
        client.next_event("ack").await["data"]["message"],
        "after the noise"
    );
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    client
        .send(json!({"event": "add-message", "v": 2, "data": {"name": "a", "message": "b", "color": "red"}, "ack": 1}))
        .await;
    let ack = client.next_event("ack").await;
    assert_eq!(ack["data"].as_object().unwrap().len(), 4, "{ack}");
}

#[tokio::test]
async fn since_resumes_with_exactly_the_missed_messages() {
    let board = Board::start(&[]);
    let mut writer = Client::connect(&board.ws_url()).await;
    for i in 0..5 {
        writer.add("w", &format!("m{i}"), i).await;
        writer.next_event("ack").await;
    }
    let resumed = Client::connect(&format!("{}?since=2", board.ws_url())).await;
    assert_eq!(ids(&resumed.history), [3, 4, 5]);
    let up_to_date = Client::connect(&format!("{}?since=5", board.ws_url())).await;
    assert!(up_to_date.history.is_empty());
    let bad = common::get(board.addr, "/ws?since=yesterday").await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn load_older_pages_back_through_history() {
    let board = Board::start(&["--history", "2"]);
    let mut client = Client::connect(&board.ws_url()).await;
    for i in 0..5 {
        client.add("a", &format!("m{i}"), i).await;
        client.next_event("ack").await;
    }
    client
        .send(json!({"event": "load-older", "data": {"before": 4, "limit": 2}, "ack": 9}))
        .await;
    let reply = client.next_event("older-messages").await;
    assert_eq!(reply["ack"], 9);
    assert_eq!(ids(reply["data"]["messages"].as_array().unwrap()), [2, 3]);
    assert_eq!(reply["data"]["more"], true);
    client
        .send(json!({"event": "load-older", "data": {"before": 2, "limit": 2}}))
        .await;
    let reply = client.next_event("older-messages").await;
    assert_eq!(ids(reply["data"]["messages"].as_array().unwrap()), [1]);
    assert_eq!(reply["data"]["more"], false);
}

#[tokio::test]
async fn presence_counts_the_open_connections() {
    let board = Board::start(&[]);
    let mut first = Client::connect(&board.ws_url()).await;
    assert_eq!(first.next_event("presence").await["data"]["online"], 1);
    let second = Client::connect(&board.ws_url()).await;
    assert_eq!(first.next_event("presence").await["data"]["online"], 2);
    drop(second);
    assert_eq!(first.next_event("presence").await["data"]["online"], 1);
}

#[tokio::test]
async fn a_post_to_the_http_api_reaches_websocket_clients() {
    let board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    let response = post(
        board.addr,
        "/api/messages",
        r#"{"name":"ci","message":"build green"}"#,
    )
    .await;
    assert_eq!(response.status, 201);
    let stored = response.json();
    assert_eq!(stored["id"], 1);
    assert_eq!(stored["message"], "build green");
    let added = client.next_event("message-added").await;
    assert_eq!(added["data"], stored);
}

#[tokio::test]
async fn the_http_api_rejects_bad_posts_with_a_code() {
    let board = Board::start(&[]);
    for (body, code) in [
        ("not json", "bad-json"),
        (r#"{"name":"a","message":"  "}"#, "empty-message"),
        (r#"{"name":["a"],"message":"x"}"#, "bad-request"),
    ] {
        let response = post(board.addr, "/api/messages", body).await;
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.json()["code"], code, "{body}");
        assert!(response.json()["message"].is_string());
    }
    assert_eq!(get(board.addr, "/api/messages").await.json(), json!([]));
}

#[tokio::test]
async fn the_http_api_lists_messages_with_since_before_and_limit() {
    let board = Board::start(&[]);
    for i in 1..=6 {
        let body = json!({"name": "n", "message": format!("m{i}")}).to_string();
        assert_eq!(post(board.addr, "/api/messages", &body).await.status, 201);
    }
    let list = |path: &'static str| async move {
        let response = get(board.addr, path).await;
        assert_eq!(response.status, 200, "{path}");
        assert!(response
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        ids(response.json().as_array().unwrap())
    };
    assert_eq!(list("/api/messages").await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(list("/api/messages?since=2&limit=3").await, [3, 4, 5]);
    assert_eq!(list("/api/messages?limit=2").await, [5, 6]);
    assert_eq!(list("/api/messages?before=4&limit=2").await, [2, 3]);
    assert_eq!(get(board.addr, "/api/messages?limit=0").await.status, 400);
    assert_eq!(get(board.addr, "/api/messages?since=x").await.status, 400);
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_types_and_etags() {
    let board = Board::start(&[]);
    let page = get(board.addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.body.contains("id=\"create-message\""),
        "the original form id"
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "nothing from the internet"
    );
    let etag = page.header("etag").expect("an ETag").to_owned();
    let again = common::http(board.addr, "GET", "/", &[("If-None-Match", &etag)], "").await;
    assert_eq!(again.status, 304);
    for (path, kind) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let file = get(board.addr, path).await;
        assert_eq!(file.status, 200, "{path}");
        assert!(
            file.header("content-type").unwrap().starts_with(kind),
            "{path}: {:?}",
            file.header("content-type")
        );
    }
    assert_eq!(get(board.addr, "/wall").await.body, page.body);
    assert_eq!(get(board.addr, "/no-such-file.js").await.status, 404);
}

#[tokio::test]
async fn every_page_response_carries_the_security_headers() {
    let board = Board::start(&[]);
    let page = get(board.addr, "/").await;
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
}

#[tokio::test]
async fn info_lists_the_addresses_and_the_qr_code_is_svg() {
    let board = Board::start(&[]);
    let info = get(board.addr, "/api/info").await.json();
    assert_eq!(info["urls"], json!([board.url()]));
    assert_eq!(info["limits"]["max_message_chars"], 4000);
    let qr = get(board.addr, "/api/qr.svg").await;
    assert_eq!(qr.header("content-type"), Some("image/svg+xml"));
    assert!(qr.body.starts_with("<?xml") || qr.body.starts_with("<svg"));
}

#[tokio::test]
async fn a_resend_with_the_same_cid_is_answered_with_the_original_and_not_broadcast_again() {
    let board = Board::start(&[]);
    let mut alice = Client::connect(&board.ws_url()).await;
    let mut bob = Client::connect(&board.ws_url()).await;
    let post = |text: &str, cid: &str, ack: u64| {
        json!({"event": "add-message", "ack": ack,
               "data": {"name": "Alice", "message": text, "cid": cid}})
    };
    alice.send(post("lunch?", "c-1", 1)).await;
    let first = bob.next_event("message-added").await["data"].clone();
    // The ack was "lost": Alice sends again with the same cid (and, say, a
    // fixed typo), over a new connection as after a reconnect.
    let mut again = Client::connect(&board.ws_url()).await;
    again.send(post("lunch??", "c-1", 7)).await;
    let ack = again.next_event("ack").await;
    assert_eq!(ack["ack"], 7);
    assert_eq!(ack["data"], first, "the original message, same id and text");
    // Bob's next message is the next new one, not a second copy.
    alice.send(post("12:30", "c-2", 2)).await;
    let next = bob.next_event("message-added").await["data"].clone();
    assert_eq!(next["message"], "12:30");
    assert_eq!(next["id"], first["id"].as_u64().unwrap() + 1);
    let stored = get(board.addr, "/api/messages").await.json();
    assert_eq!(ids(stored.as_array().unwrap()), [1, 2]);
}

#[tokio::test]
async fn the_http_api_answers_a_repeated_cid_with_200_and_the_original() {
    let board = Board::start(&[]);
    let body = r#"{"name":"ci","message":"deployed","cid":"deploy-481"}"#;
    let created = post(board.addr, "/api/messages", body).await;
    assert_eq!(created.status, 201);
    let repeated = post(board.addr, "/api/messages", body).await;
    assert_eq!(repeated.status, 200);
    assert_eq!(repeated.json(), created.json());
    let bad = post(board.addr, "/api/messages", r#"{"message":"x","cid":""}"#).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["code"], "bad-request");
    let stored = get(board.addr, "/api/messages").await.json();
    assert_eq!(stored.as_array().unwrap().len(), 1);
}
