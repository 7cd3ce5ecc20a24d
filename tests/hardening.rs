//! Bad input, floods, slow clients and strangers: the board keeps serving
//! everyone else, loses nothing, and tells the offender what it did wrong.

mod common;

use std::time::{Duration, Instant};

use common::{get, http, ids, post, Board, Client, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use tokio_tungstenite::tungstenite::Message as Frame;

/// Reads frames until the server closes; returns the close code.
async fn close_code(client: &mut Client) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, client.socket.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Frame::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Proves the board still works: a fresh client posts and reads back.
async fn board_still_works(board: &Board) {
    let mut probe = Client::connect(&board.ws_url()).await;
    probe.add("probe", "still alive", 777).await;
    assert_eq!(
        probe.next_event("ack").await["data"]["message"],
        "still alive"
    );
}

/// Waits until `client` receives the message with text `text`.
async fn receives(client: &mut Client, text: &str) {
    while client.next_event("message-added").await["data"]["message"] != text {}
}

async fn online(board: &Board) -> u64 {
    get(board.addr, "/api/info").await.json()["online"]
        .as_u64()
        .unwrap()
}

/// Waits until `/api/info` reports `expected` connections.
async fn wait_for_online(board: &Board, expected: u64) {
    let deadline = Instant::now() + WAIT;
    while online(board).await != expected {
        assert!(
            Instant::now() < deadline,
            "online never became {expected} (is {})",
            online(board).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_one_mebibyte_frame_closes_its_connection_with_1009_and_nothing_else() {
    let board = Board::start(&[]);
    let mut bystander = Client::connect(&board.ws_url()).await;
    let mut big = Client::connect(&board.ws_url()).await;
    let message = "x".repeat(1024 * 1024);
    big.send(json!({"event": "add-message", "data": {"name": "big", "message": message}}))
        .await;
    assert_eq!(close_code(&mut big).await, Some(CloseCode::Size));
    board_still_works(&board).await;
    receives(&mut bystander, "still alive").await;
}

#[tokio::test]
async fn frame_and_message_limits_follow_their_flags() {
    let board = Board::start(&[
        "--max-frame-bytes",
        "2048",
        "--max-message-chars",
        "10",
        "--max-name-chars",
        "3",
    ]);
    let mut client = Client::connect(&board.ws_url()).await;
    client.add("abcd", "ok", 1).await;
    assert_eq!(client.next_reply().await["data"]["code"], "name-too-long");
    client.add("abc", "eleven char", 2).await;
    assert_eq!(
        client.next_reply().await["data"]["code"],
        "message-too-long"
    );
    let response = post(
        board.addr,
        "/api/messages",
        &json!({"name": "a", "message": "x".repeat(3000)}).to_string(),
    )
    .await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["code"], "too-large");
    client.send_text(&"y".repeat(3000)).await;
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Size));
}

#[tokio::test]
async fn ten_thousand_random_strings_and_wrong_shapes_leave_the_board_intact() {
    let board = Board::start(&["--rate-limit", "0"]);
    let mut bystander = Client::connect(&board.ws_url()).await;
    bystander.add("b", "before the storm", 1).await;
    bystander.next_event("ack").await;
    let fuzzer = Client::connect(&board.ws_url()).await;
    let (mut sink, mut stream) = fuzzer.socket.split();
    let wrong_shapes: Vec<Value> = vec![
        json!(null),
        json!(1),
        json!("add-message"),
        json!([]),
        json!({}),
        json!({"event": null}),
        json!({"event": 5, "data": {}}),
        json!({"event": "add-message"}),
        json!({"event": "add-message", "data": []}),
        json!({"event": "add-message", "data": {"message": 5}}),
        json!({"event": "add-message", "data": {"message": {"nested": true}}}),
        json!({"event": "add-message", "data": {"name": false, "message": "x"}}),
        json!({"event": "add-message", "data": {"message": ""}}),
        json!({"event": "add-message", "data": {"message": " \t\n "}}),
        json!({"event": "load-older", "data": {"before": "x"}}),
        json!({"event": "load-older", "data": {"before": -1, "limit": 5}}),
        json!({"event": "add-message", "ack": "seven", "data": {"message": "x"}}),
        json!({"event": "message-added", "data": {}}),
        json!({"event": "messages-available", "data": []}),
        json!({"event": "\u{0}", "data": {}}),
    ];
    let sender = tokio::spawn(async move {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..10_000 {
            let len = (next() % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Text frames must be UTF-8, so the random bytes go through lossily.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            sink.send(Frame::text(text)).await.unwrap();
            let shape = &wrong_shapes[i % wrong_shapes.len()];
            sink.send(Frame::text(shape.to_string())).await.unwrap();
        }
        sink
    });
    let mut errors = 0;
    let mut stored_by_fuzzer = 0;
    while errors + stored_by_fuzzer < 20_000 {
        let frame = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("replies keep coming")
            .unwrap()
            .unwrap();
        let Frame::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(&text).unwrap();
        match value["event"].as_str().unwrap() {
            "error" => errors += 1,
            // A random string can be valid JSON only by luck; count it, never hang on it.
            "ack" | "older-messages" => stored_by_fuzzer += 1,
            _ => {}
        }
    }
    let _sink = sender.await.unwrap();
    assert!(
        errors >= 19_990,
        "every bad frame is answered with an error ({errors})"
    );
    board_still_works(&board).await;
    receives(&mut bystander, "still alive").await;
    let history = get(board.addr, "/api/messages").await.json();
    assert_eq!(history[0]["message"], "before the storm");
}

#[tokio::test]
async fn binary_frames_get_an_error_and_invalid_utf8_closes_with_1007() {
    let board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    client
        .socket
        .send(Frame::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let reply = client.next_reply().await;
    assert_eq!(reply["event"], "error");
    assert_eq!(reply["data"]["code"], "bad-request");
    client.add("a", "after binary", 1).await;
    client.next_event("ack").await;
    let invalid = RawFrame::message(vec![0xff, 0xfe, b'{'], OpCode::Data(Data::Text), true);
    client.socket.send(Frame::Frame(invalid)).await.unwrap();
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Invalid));
    board_still_works(&board).await;
}

#[tokio::test]
async fn fragmented_messages_are_reassembled_within_the_limit_and_refused_beyond_it() {
    let board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    let text =
        json!({"event": "add-message", "data": {"name": "frag", "message": "in pieces"}, "ack": 1})
            .to_string();
    let pieces: Vec<&[u8]> = text.as_bytes().chunks(7).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = RawFrame::message(piece.to_vec(), opcode, i == pieces.len() - 1);
        client.socket.send(Frame::Frame(frame)).await.unwrap();
    }
    assert_eq!(
        client.next_event("ack").await["data"]["message"],
        "in pieces"
    );
    // 100 fragments of 1 KiB: each small, together over the 64 KiB limit.
    let mut flood = Client::connect(&board.ws_url()).await;
    for i in 0..100 {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = RawFrame::message(vec![b'a'; 1024], opcode, false);
        if flood.socket.send(Frame::Frame(frame)).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut flood).await, Some(CloseCode::Size));
    board_still_works(&board).await;
}

#[tokio::test]
async fn a_ping_flood_is_answered_and_the_connection_keeps_working() {
    let board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    for i in 0..10_000u32 {
        client
            .socket
            .send(Frame::Ping(i.to_be_bytes().to_vec().into()))
            .await
            .unwrap();
    }
    client.add("p", "after pings", 1).await;
    let mut pongs = 0;
    loop {
        match tokio::time::timeout(WAIT, client.socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Frame::Pong(_) => pongs += 1,
            Frame::Text(text) if text.contains("\"ack\"") => break,
            _ => {}
        }
    }
    assert!(pongs > 0, "pings are answered");
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_while_everyone_else_gets_every_message() {
    let board = Board::start(&["--rate-limit", "0"]);
    // A reader with a tiny receive buffer that never reads a byte.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(board.addr).await.unwrap();
    let (stalled, _) = tokio_tungstenite::client_async(board.ws_url(), stream)
        .await
        .unwrap();
    let mut reader = Client::connect(&board.ws_url()).await;
    let writer = Client::connect(&board.ws_url()).await;
    wait_for_online(&board, 3).await;
    let rss_before = common::rss_kib(board.pid());

    const COUNT: u64 = 10_000;
    let body = "z".repeat(1000);
    let (mut sink, mut replies) = writer.socket.split();
    let posting = tokio::spawn(async move {
        for i in 0..COUNT {
            let frame = json!({"event": "add-message", "data": {"name": "w", "message": format!("{i} {body}")}});
            sink.send(Frame::text(frame.to_string())).await.unwrap();
        }
        sink
    });
    // The writer's own copies must be drained too, or it would be the slow one.
    let draining = tokio::spawn(async move {
        let mut seen = 0;
        while seen < COUNT {
            match tokio::time::timeout(WAIT, replies.next()).await {
                Ok(Some(Ok(Frame::Text(text)))) if text.contains("message-added") => seen += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("writer lost its connection: {other:?}"),
            }
        }
        replies
    });
    let mut received = Vec::with_capacity(COUNT as usize);
    while received.len() < COUNT as usize {
        received.push(
            reader.next_event("message-added").await["data"]["id"]
                .as_u64()
                .unwrap(),
        );
    }
    // The writer stays connected: keep both halves of its socket.
    let _writer = (posting.await.unwrap(), draining.await.unwrap());
    assert_eq!(
        received,
        (1..=COUNT).collect::<Vec<_>>(),
        "the reader got all, in order"
    );
    wait_for_online(&board, 2).await;
    let rss_after = common::rss_kib(board.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory stays bounded: {rss_before} KiB before, {rss_after} KiB after"
    );
    drop(stalled);
}

#[tokio::test]
async fn a_connection_that_stops_answering_pings_is_dropped() {
    let board = Board::start(&["--heartbeat", "0.2", "--client-timeout", "1"]);
    // A bare upgrade from a client that then goes silent and never reads;
    // raw, since a WebSocket library would answer the pings by itself.
    let mut silent = tokio::net::TcpStream::connect(board.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        board.addr
    );
    silent.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    silent.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    wait_for_online(&board, 1).await;
    let started = Instant::now();
    wait_for_online(&board, 0).await;
    assert!(started.elapsed() < Duration::from_secs(8));
    // A client that answers pings stays.
    let mut lively = Client::connect(&board.ws_url()).await;
    // Reading is what makes the client answer pings.
    let until = Instant::now() + Duration::from_millis(1500);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let _ = tokio::time::timeout(left, lively.socket.next()).await;
    }
    lively.add("l", "still here", 1).await;
    assert_eq!(
        lively.next_event("ack").await["data"]["message"],
        "still here"
    );
}

#[tokio::test]
async fn posting_faster_than_the_rate_limit_is_refused_and_not_stored() {
    let board = Board::start(&["--rate-limit", "2", "--rate-burst", "5"]);
    let mut client = Client::connect(&board.ws_url()).await;
    for i in 0..30 {
        client.add("f", &format!("flood {i}"), i).await;
    }
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < 30 {
        let reply = client.next_reply().await;
        match reply["event"].as_str().unwrap() {
            "ack" => acked += 1,
            "error" => {
                assert_eq!(reply["data"]["code"], "rate-limited");
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(
        (5..=7).contains(&acked),
        "the burst passes, little more ({acked})"
    );
    let stored = get(board.addr, "/api/messages").await.json();
    assert_eq!(
        stored.as_array().unwrap().len(),
        acked,
        "refused messages are not stored"
    );
    // The HTTP API is limited per address the same way.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let response = post(
            board.addr,
            "/api/messages",
            &json!({"message": format!("http {i}")}).to_string(),
        )
        .await;
        if response.status == 429 {
            assert_eq!(response.json()["code"], "rate-limited");
        }
        statuses.push(response.status);
    }
    assert!(
        statuses.contains(&201) && statuses.contains(&429),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn connections_per_address_are_limited_but_this_computer_is_not() {
    let board = Board::start(&["--max-connections-per-ip", "3"]);
    let url = board.ws_url();
    let from = |ip: [u8; 4]| {
        let url = url.clone();
        let addr = board.addr;
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind((std::net::Ipv4Addr::from(ip), 0).into())
                .unwrap();
            let stream = socket.connect(addr).await.unwrap();
            tokio_tungstenite::client_async(url, stream).await
        }
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(from([127, 0, 0, 2]).await.expect("within the limit"));
    }
    match from([127, 0, 0, 2]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("the fourth connection is refused, got {other:?}"),
    }
    // Another address has its own count, and 127.0.0.1 is not counted.
    held.push(from([127, 0, 0, 3]).await.expect("another address"));
    for _ in 0..5 {
        held.push(from([127, 0, 0, 1]).await.expect("this computer"));
    }
    // Closing one frees its place at once.
    drop(held.remove(0));
    let deadline = Instant::now() + WAIT;
    while from([127, 0, 0, 2]).await.is_err() {
        assert!(Instant::now() < deadline, "the place was freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a WebSocket upgrade request for `path` and reads the whole answer.
/// Raw bytes: the handshakes are deliberately broken, which neither an HTTP
/// nor a WebSocket client crate would send.
async fn raw_upgrade(addr: std::net::SocketAddr, path: &str, version: &str) -> common::Response {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("a refusal ends the connection")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    common::Response {
        status,
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn an_upgrade_anywhere_but_ws_or_with_a_broken_handshake_is_refused_with_a_json_error() {
    let board = Board::start(&[]);
    let elsewhere = raw_upgrade(board.addr, "/api/messages", "13").await;
    assert_eq!(elsewhere.status, 404);
    assert_eq!(elsewhere.json()["code"], "bad-request");
    assert_eq!(elsewhere.header("x-content-type-options"), Some("nosniff"));
    let old_version = raw_upgrade(board.addr, "/ws", "8").await;
    assert_eq!(old_version.status, 400);
    assert_eq!(old_version.json()["code"], "bad-request");
    let bad_since = raw_upgrade(board.addr, "/ws?since=soon", "13").await;
    assert_eq!(bad_since.status, 400);
    assert!(bad_since.json()["message"]
        .as_str()
        .unwrap()
        .contains("since"));
    let no_upgrade = get(board.addr, "/ws").await;
    assert_eq!(no_upgrade.status, 400);
    assert_eq!(no_upgrade.json()["code"], "bad-request");
    board_still_works(&board).await;
}

#[tokio::test]
async fn a_foreign_origin_is_refused_unless_allowed() {
    let board = Board::start(&["--allow-origin", "http://intranet.example:8080"]);
    let upgrade = |origin: Option<&'static str>| {
        let addr = board.addr;
        async move {
            let mut headers = vec![
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ];
            if let Some(origin) = origin {
                headers.push(("Origin", origin));
            }
            // Raw bytes: exactly these upgrade headers, and only the status line read.
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut request = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n");
            for (name, value) in headers {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await.unwrap();
            String::from_utf8_lossy(&head[9..12]).into_owned()
        }
    };
    assert_eq!(upgrade(Some("http://evil.example")).await, "403");
    assert_eq!(upgrade(None).await, "101", "scripts send no Origin");
    let own: &'static str = Box::leak(board.url().into_boxed_str());
    assert_eq!(upgrade(Some(own)).await, "101");
    assert_eq!(upgrade(Some("http://intranet.example:8080")).await, "101");
    let response = http(
        board.addr,
        "POST",
        "/api/messages",
        &[("Origin", "http://evil.example")],
        r#"{"message":"csrf"}"#,
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.json()["code"], "forbidden-origin");
    assert_eq!(get(board.addr, "/api/messages").await.json(), json!([]));
}

#[tokio::test]
async fn a_passphrase_guards_the_websocket_and_the_api_and_is_never_printed() {
    const SECRET: &str = "correct horse battery staple";
    let board = Board::start(&["--password", SECRET]);
    assert!(board.banner.contains("passphrase"), "{}", board.banner);
    match tokio_tungstenite::connect_async(board.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401, got {other:?}"),
    }
    for path in ["/api/messages", "/api/info"] {
        let response = get(board.addr, path).await;
        assert_eq!(response.status, 401, "{path}");
        assert_eq!(response.json()["code"], "unauthorized");
    }
    assert_eq!(
        post(board.addr, "/api/messages", r#"{"message":"sneaky"}"#)
            .await
            .status,
        401
    );
    assert_eq!(
        get(board.addr, "/").await.status,
        200,
        "the page itself loads, to ask for the passphrase"
    );
    // Scripts present it as a bearer token.
    let bearer = format!("Bearer {SECRET}");
    let response = http(
        board.addr,
        "POST",
        "/api/messages",
        &[("Authorization", &bearer)],
        r#"{"message":"by script"}"#,
    )
    .await;
    assert_eq!(response.status, 201);
    // Browsers log in once and carry a cookie, also to the WebSocket.
    let wrong = post(board.addr, "/api/login", r#"{"password":"guess"}"#).await;
    assert_eq!(wrong.status, 401);
    let login = post(
        board.addr,
        "/api/login",
        &json!({"password": SECRET}).to_string(),
    )
    .await;
    assert_eq!(login.status, 204);
    let cookie = login
        .header("set-cookie")
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        !cookie.contains("horse"),
        "the cookie does not hold the passphrase"
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            board.ws_url(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("Cookie", cookie.parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the cookie opens the socket");
    drop(socket);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let printed = format!("{}\n{}", board.banner, board.stderr());
    assert!(
        !printed.contains("horse"),
        "the passphrase is never printed:\n{printed}"
    );
}

#[tokio::test]
async fn html_and_control_characters_come_back_as_literal_text() {
    let board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    let payload = "<img src=x onerror=alert(1)><script>alert(2)</script>";
    client
        .add(
            payload,
            &format!("{payload}\u{7}\u{1b}[2J\nline two\tand a tab"),
            1,
        )
        .await;
    let stored = client.next_event("ack").await["data"].clone();
    assert_eq!(stored["name"], payload);
    assert_eq!(
        stored["message"],
        format!("{payload}[2J\nline two\tand a tab")
    );
    let listed = get(board.addr, "/api/messages").await.json();
    assert_eq!(listed[0], stored);
    assert_eq!(ids(listed.as_array().unwrap()), [1]);
}

#[tokio::test]
async fn tls_serves_https_and_wss() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let board = Board::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        board
            .banner
            .contains(&format!("https://127.0.0.1:{}", board.addr.port())),
        "{}",
        board.banner
    );
    let page = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://{}/", board.addr))
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert_eq!(String::from_utf8_lossy(&page.stdout), "200");
    // Someone who typed http:// is sent to https://, not left with an
    // empty reply.
    let plain = common::http(board.addr, "GET", "/wall?from=plain", &[], "").await;
    assert_eq!(plain.status, 307, "{}", plain.body);
    assert_eq!(
        plain.header("location"),
        Some(format!("https://{}/wall?from=plain", board.addr).as_str())
    );
    assert!(plain.body.contains("HTTPS"), "{}", plain.body);
    // A WebSocket upgrade over TLS, answered with the board's history.
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(board.addr.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::{Read, Write};
    write!(
        client.stdin.as_mut().unwrap(),
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        board.addr
    )
    .unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let reading = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("messages-available") {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let deadline = Instant::now() + WAIT;
    while !reading.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = client.kill();
    let _ = client.wait();
    let seen = reading.join().unwrap();
    assert!(seen.starts_with("HTTP/1.1 101"), "{seen}");
    assert!(seen.contains("messages-available"), "{seen}");
}
