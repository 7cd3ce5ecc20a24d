//! Files on the board, as clients meet them: uploads over HTTP (real and
//! raw sockets that lie and trickle), downloads with their caching, range
//! and safety headers, posts that carry files to every client, limits,
//! removal, restarts and export/import, on the real binary.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{encode, Board, Client, WAIT};
use serde_json::{json, Value};

/// An answer with its body as bytes.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(WAIT * 3)
        .build()
        .expect("a plain HTTP client builds")
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = client().request(method, format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e:?}"));
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.expect("the body arrives").to_vec(),
    }
}

/// Uploads `bytes` as a file named `name` of type `kind` (none when empty).
async fn upload(addr: SocketAddr, name: &str, kind: &str, bytes: &[u8]) -> Answer {
    let path = format!("/api/files?name={}", encode(name));
    let headers: &[(&str, &str)] = if kind.is_empty() {
        &[]
    } else {
        &[("Content-Type", kind)]
    };
    request(addr, "POST", &path, headers, bytes.to_vec()).await
}

/// Uploads and expects a new file: its id.
async fn stored(addr: SocketAddr, name: &str, kind: &str, bytes: &[u8]) -> String {
    let answer = upload(addr, name, kind, bytes).await;
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["id"].as_str().expect("an id").to_owned()
}

async fn download(addr: SocketAddr, id: &str, headers: &[(&str, &str)]) -> Answer {
    request(addr, "GET", &format!("/files/{id}"), headers, Vec::new()).await
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes that no other test or run shares: a counter-mode hash of a
/// random seed, cheap and incompressible.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut seed = [0u8; 16];
    getrandom::getrandom(&mut seed).expect("OS randomness");
    let mut out = Vec::with_capacity(len + 32);
    let mut block = 0u64;
    while out.len() < len {
        let mut input = seed.to_vec();
        input.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &input).as_ref());
        block += 1;
    }
    out.truncate(len);
    out
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\0\x05\0\x01\xff\x89\x99=\x1d\0\0\0\0IEND\xaeB`\x82";

/// Posts over HTTP; the JSON answer.
async fn post_json(addr: SocketAddr, body: Value) -> Answer {
    request(
        addr,
        "POST",
        "/api/messages",
        &[("Content-Type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await
}

const KEY: &str = "files-test-author-key";

#[tokio::test]
async fn an_upload_answers_with_its_file_and_the_same_content_is_stored_once() {
    let board = Board::start(&[]);
    let bytes = random_bytes(700_000);
    let first = upload(board.addr, "report.zip", "application/zip", &bytes).await;
    assert_eq!(first.status, 201);
    let file = first.json();
    assert_eq!(
        file,
        json!({"id": sha256_hex(&bytes), "name": "report.zip", "size": 700_000, "type": "application/zip"})
    );
    let again = upload(board.addr, "another name.bin", "text/plain", &bytes).await;
    assert_eq!(again.status, 200, "the same content is the same file");
    assert_eq!(again.json(), file, "answered with the file stored first");
    let got = download(board.addr, &sha256_hex(&bytes), &[]).await;
    assert_eq!(got.status, 200);
    assert!(
        got.body == bytes,
        "the download is the upload, byte for byte"
    );
    let conn = rusqlite::Connection::open(&board.data).unwrap();
    let (files, chunks): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM files), (SELECT count(*) FROM file_chunks)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (files, chunks),
        (1, 3),
        "one file of three 256 KiB chunks: the second upload's chunks are gone"
    );
}

#[tokio::test]
async fn a_file_is_served_with_a_strong_etag_that_answers_304_and_caches_for_a_year() {
    let board = Board::start(&[]);
    let id = stored(board.addr, "a.png", "image/png", PNG).await;
    let got = download(board.addr, &id, &[]).await;
    let etag = format!("\"{id}\"");
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    assert_eq!(
        got.header("cache-control"),
        Some("private, max-age=31536000, immutable")
    );
    assert_eq!(
        got.header("content-length"),
        Some(PNG.len().to_string().as_str())
    );
    assert_eq!(got.header("content-type"), Some("image/png"));
    let again = download(board.addr, &id, &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let other = download(board.addr, &id, &[("If-None-Match", "\"something else\"")]).await;
    assert_eq!(other.status, 200);
    let missing = download(board.addr, &"0".repeat(64), &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "not-found");
    assert_eq!(
        download(board.addr, "../../etc/passwd", &[]).await.status,
        404
    );
}

#[tokio::test]
async fn ranges_seek_within_and_across_chunks_and_a_range_past_the_end_is_416() {
    let board = Board::start(&[]);
    let bytes = random_bytes(600_000);
    let id = stored(board.addr, "clip.bin", "", &bytes).await;
    let chunk = 256 * 1024;
    for (asked, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=10-99", 10, 99),
        (
            &format!("bytes={}-{}", chunk - 5, chunk + 5) as &str,
            chunk - 5,
            chunk + 5,
        ),
        ("bytes=100000-", 100_000, 599_999),
        ("bytes=-1000", 599_000, 599_999),
        ("bytes=599990-700000", 599_990, 599_999),
    ] {
        let got = download(board.addr, &id, &[("Range", asked)]).await;
        assert_eq!(got.status, 206, "{asked}");
        assert_eq!(
            got.header("content-range"),
            Some(format!("bytes {start}-{end}/600000").as_str()),
            "{asked}"
        );
        assert!(
            got.body == bytes[start..=end],
            "{asked}: the bytes asked for"
        );
    }
    let past = download(board.addr, &id, &[("Range", "bytes=600000-")]).await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */600000"));
    let stale = download(
        board.addr,
        &id,
        &[("Range", "bytes=0-9"), ("If-Range", "\"another version\"")],
    )
    .await;
    assert_eq!(
        stale.status, 200,
        "If-Range that does not match: the whole file"
    );
    assert_eq!(stale.body.len(), 600_000);
    let several = download(board.addr, &id, &[("Range", "bytes=0-1,5-6")]).await;
    assert_eq!(several.status, 200, "several ranges: the whole file");
}

/// Every file answer keeps the file from acting as part of the page.
fn assert_inert(got: &Answer, what: &str) {
    assert_eq!(
        got.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        got.header("content-security-policy"),
        Some("sandbox; default-src 'none'"),
        "{what}"
    );
}

#[tokio::test]
async fn only_real_raster_images_audio_and_video_are_inline_and_everything_else_downloads() {
    let board = Board::start(&[]);
    let html = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'><script>alert(2)</script></svg>".to_vec();
    let mut polyglot = PNG.to_vec();
    polyglot.extend_from_slice(b"<html><script>alert(3)</script></html>");
    // The same bytes would be the same file (stored first under the first
    // claim), so each case differs by a byte.
    let with = |bytes: &[u8], tail: &[u8]| [bytes, tail].concat();
    let mp4 = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
    let cases: Vec<(&str, &str, Vec<u8>, &str, &str)> = vec![
        // name, claimed type, content, served type, disposition
        ("a.png", "image/png", PNG.to_vec(), "image/png", "inline"),
        ("clip.mp4", "video/mp4", mp4, "video/mp4", "inline"),
        (
            "page.html",
            "text/html",
            html.clone(),
            "text/html",
            "attachment; filename*=UTF-8''page.html",
        ),
        (
            "logo.svg",
            "image/svg+xml",
            svg,
            "image/svg+xml",
            "attachment; filename*=UTF-8''logo.svg",
        ),
        (
            "doc.pdf",
            "application/pdf",
            b"%PDF-1.7 x".to_vec(),
            "application/pdf",
            "attachment; filename*=UTF-8''doc.pdf",
        ),
        (
            "feed.xml",
            "text/xml",
            b"<?xml version='1.0'?><a/>".to_vec(),
            "text/xml",
            "attachment; filename*=UTF-8''feed.xml",
        ),
        (
            "fake.png",
            "image/png",
            with(&html, b"1"),
            "application/octet-stream",
            "attachment; filename*=UTF-8''fake.png",
        ),
        (
            "fake.mp4",
            "video/mp4",
            with(&html, b"2"),
            "application/octet-stream",
            "attachment; filename*=UTF-8''fake.mp4",
        ),
        (
            "poly.png",
            "image/png",
            polyglot.clone(),
            "image/png",
            "inline",
        ),
        (
            "poly.html",
            "text/html",
            with(&polyglot, b" "),
            "text/html",
            "attachment; filename*=UTF-8''poly.html",
        ),
        (
            "mystery",
            "",
            b"\x00\x01whatever".to_vec(),
            "application/octet-stream",
            "attachment; filename*=UTF-8''mystery",
        ),
        (
            "shot",
            "",
            PNG.iter().chain(b"x").copied().collect(),
            "image/png",
            "inline",
        ),
    ];
    for (name, claimed, content, served, disposition) in cases {
        let answer = upload(board.addr, name, claimed, &content).await;
        assert!(
            answer.status == 201 || answer.status == 200,
            "{name}: {}",
            answer.status
        );
        assert_eq!(answer.json()["type"], served, "{name}: the File's type");
        let got = download(board.addr, answer.json()["id"].as_str().unwrap(), &[]).await;
        assert_eq!(got.header("content-type"), Some(served), "{name}");
        assert_eq!(
            got.header("content-disposition"),
            Some(disposition),
            "{name}"
        );
        assert_inert(&got, name);
        assert!(got.body == content, "{name}: served as uploaded");
    }
}

#[tokio::test]
async fn names_are_cleaned_of_paths_controls_and_bidirectional_tricks() {
    let board = Board::start(&[]);
    for (raw, clean) in [
        ("../../etc/passwd", ".._.._etc_passwd"),
        ("line\nbreak.txt", "linebreak.txt"),
        ("invoice\u{202e}fdp.exe", "invoicefdp.exe"),
        ("C:\\Users\\x.doc", "C:_Users_x.doc"),
        ("", "file"),
        ("  ", "file"),
    ] {
        let answer = upload(board.addr, raw, "text/plain", &random_bytes(10)).await;
        assert_eq!(answer.status, 201, "{raw:?}");
        assert_eq!(answer.json()["name"], clean, "{raw:?}");
    }
    let long = "é".repeat(200) + ".txt";
    let answer = upload(board.addr, &long, "text/plain", &random_bytes(10)).await;
    let name = answer.json()["name"].as_str().unwrap().to_owned();
    assert!(name.len() <= 255 && name.ends_with(".txt"), "{name}");
    let none = request(
        board.addr,
        "POST",
        "/api/files",
        &[],
        b"no name given".to_vec(),
    )
    .await;
    assert_eq!(none.status, 201);
    assert_eq!(none.json()["name"], "file");
}

/// Sends `head` (a request head without its blank line) and `body` in
/// pieces of `piece` bytes `pause` apart on a raw socket; returns what the
/// server answered, once it answered or closed.
fn raw(addr: SocketAddr, head: &str, body: &[u8], piece: usize, pause: Duration) -> String {
    let mut socket = TcpStream::connect(addr).expect("connects");
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .expect("the head is sent");
    send_and_read(socket, body, piece, pause)
}

/// Sends `bytes` as they are in one go; returns the answers.
fn raw_bytes(addr: SocketAddr, bytes: &[u8]) -> String {
    let socket = TcpStream::connect(addr).expect("connects");
    socket.set_read_timeout(Some(WAIT)).unwrap();
    send_and_read(socket, bytes, bytes.len(), Duration::ZERO)
}

fn send_and_read(mut socket: TcpStream, body: &[u8], piece: usize, pause: Duration) -> String {
    for part in body.chunks(piece.max(1)) {
        // The server may answer and close before the body is all sent.
        if socket.write_all(part).is_err() {
            break;
        }
        std::thread::sleep(pause);
    }
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_any_body_is_read() {
    let board = Board::start(&["--max-file-bytes", "100000"]);
    let addr = board.addr;
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            "POST /api/files?name=huge HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000",
            b"",
            1,
            Duration::ZERO,
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too-large"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not after a timeout"
    );
    let just_over = upload(addr, "x", "", &random_bytes(100_001)).await;
    assert_eq!(just_over.status, 413);
    assert_eq!(just_over.json()["code"], "too-large");
    let at_limit = upload(addr, "x", "", &random_bytes(100_000)).await;
    assert_eq!(at_limit.status, 201, "the limit itself is allowed");
}

#[tokio::test]
async fn a_chunked_body_that_passes_the_limit_is_cut_off_with_413_and_leaves_nothing() {
    let board = Board::start(&["--max-file-bytes", "300000"]);
    let addr = board.addr;
    // Chunked transfer: no length declared, the body just keeps coming.
    let mut body = Vec::new();
    for _ in 0..100 {
        body.extend_from_slice(b"2710\r\n");
        body.extend_from_slice(&[b'x'; 10_000]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            "POST /api/files?name=stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
            &body,
            16 * 1024,
            Duration::from_millis(1),
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The chunks written before the limit was passed are gone again.
    let deadline = Instant::now() + WAIT;
    loop {
        let conn = rusqlite::Connection::open(&board.data).unwrap();
        let (chunks, uploads): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM file_chunks), (SELECT count(*) FROM files)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        if (chunks, uploads) == (0, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{chunks} chunks of {uploads} uploads left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_body_that_trickles_in_and_requests_pipelined_on_one_connection_are_both_served() {
    let board = Board::start(&[]);
    let addr = board.addr;
    let slow = random_bytes(3000);
    let expected = sha256_hex(&slow);
    let sent = slow.clone();
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            &format!(
                "POST /api/files?name=slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}",
                sent.len()
            ),
            &sent,
            7,
            Duration::from_millis(2),
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains(&expected), "{answer}");
    // Two uploads back to back in one write, then a download.
    let (a, b) = (random_bytes(5000), random_bytes(6000));
    let mut pipelined = Vec::new();
    for (name, bytes) in [("a", &a), ("b", &b)] {
        pipelined.extend_from_slice(
            format!(
                "POST /api/files?name={name} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                bytes.len()
            )
            .as_bytes(),
        );
        pipelined.extend_from_slice(bytes);
    }
    let (id_a, id_b) = (sha256_hex(&a), sha256_hex(&b));
    pipelined.extend_from_slice(
        format!("GET /files/{id_a} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let answer = tokio::task::spawn_blocking(move || raw_bytes(addr, &pipelined))
        .await
        .unwrap();
    assert_eq!(answer.matches("HTTP/1.1 201").count(), 2, "{answer:.300}");
    assert!(answer.contains(&sha256_hex(&a)) && answer.contains(&id_b));
    assert!(answer.contains("HTTP/1.1 200"), "the download after them");
}

#[tokio::test]
async fn the_boards_files_are_held_to_their_quota_and_a_refused_upload_gives_its_room_back() {
    let board = Board::start(&["--max-files-bytes", "1000000"]);
    let first = stored(board.addr, "one", "", &random_bytes(600_000)).await;
    let over = upload(board.addr, "two", "", &random_bytes(600_000)).await;
    assert_eq!(over.status, 507);
    assert_eq!(over.json()["code"], "files-full");
    // Without a declared length the quota is met while the body streams.
    let addr = board.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        for _ in 0..60 {
            body.extend_from_slice(b"2710\r\n");
            body.extend_from_slice(&[b'y'; 10_000]);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        raw(
            addr,
            "POST /api/files?name=chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
            &body,
            64 * 1024,
            Duration::ZERO,
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 507"), "{answer}");
    // The refused uploads hold no room: what is left still fits.
    let fits = upload(board.addr, "three", "", &random_bytes(390_000)).await;
    assert_eq!(fits.status, 201, "{}", String::from_utf8_lossy(&fits.body));
    // A deleted message takes its file, and the room with it.
    let posted = post_json(board.addr, json!({"files": [first], "key": KEY})).await;
    assert_eq!(posted.status, 201);
    let id = posted.json()["id"].as_u64().unwrap();
    let deleted = request(
        board.addr,
        "DELETE",
        &format!("/api/messages/{id}"),
        &[("Lanboard-Key", KEY)],
        Vec::new(),
    )
    .await;
    assert_eq!(deleted.status, 204);
    let again = upload(board.addr, "four", "", &random_bytes(600_000)).await;
    assert_eq!(again.status, 201);
}

#[tokio::test]
async fn uploading_the_largest_file_raises_the_servers_memory_by_a_few_mib_at_most() {
    let board = Board::start(&[]);
    let size = 25 * 1024 * 1024;
    let bytes = random_bytes(size);
    // Warm up: the first upload's code paths and SQLite's page cache.
    stored(board.addr, "warm", "", &random_bytes(2 * 1024 * 1024)).await;
    let before = common::rss_kib(board.pid());
    let pid = board.pid();
    let addr = board.addr;
    let id = sha256_hex(&bytes);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !sampling.load(std::sync::atomic::Ordering::SeqCst) {
            peak = peak.max(common::rss_kib(pid));
            std::thread::sleep(Duration::from_millis(5));
        }
        peak.max(common::rss_kib(pid))
    });
    // Sent over a raw socket in pieces, so the server reads it as it comes.
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            &format!(
                "POST /api/files?name=big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {size}"
            ),
            &bytes,
            256 * 1024,
            Duration::from_millis(1),
        )
    })
    .await
    .unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:.300}");
    assert!(answer.contains(&id));
    let grown = peak.saturating_sub(before);
    eprintln!("RSS {before} KiB before, {peak} KiB at the peak of a 25 MiB upload");
    assert!(
        grown < 8 * 1024,
        "the server grew by {grown} KiB while taking a 25 MiB upload"
    );
}

#[tokio::test]
async fn a_post_with_files_reaches_every_client_and_survives_a_restart_and_a_kill() {
    let mut board = Board::start(&[]);
    let image = stored(board.addr, "shot.png", "image/png", PNG).await;
    let doc_bytes = random_bytes(300_000);
    let doc = stored(board.addr, "notes.txt", "text/plain", &doc_bytes).await;
    let mut alice = Client::connect(&board.ws_url()).await;
    let mut bob = Client::connect(&board.ws_url()).await;
    alice
        .send(json!({"event": "add-message", "ack": 1,
            "data": {"name": "alice", "message": "", "files": [image, doc]}}))
        .await;
    let ack = alice.next_event("ack").await;
    let files = json!([
        {"id": image, "name": "shot.png", "size": PNG.len(), "type": "image/png"},
        {"id": doc, "name": "notes.txt", "size": 300_000, "type": "text/plain"},
    ]);
    assert_eq!(ack["data"]["files"], files);
    assert_eq!(ack["data"]["message"], "", "files need no text");
    let seen = bob.next_event("message-added").await;
    assert_eq!(
        seen["data"]["files"], files,
        "the other client sees the files"
    );
    // A text post carries no "files" at all: protocol v1 frames stay as they were.
    alice.add("alice", "plain text", 2).await;
    let plain = bob.next_event("message-added").await;
    assert!(plain["data"].get("files").is_none(), "{plain}");
    board.restart();
    let history = common::get(board.addr, "/api/messages").await.json();
    assert_eq!(history[0]["files"], files, "after a restart");
    board.stop_with(libc::SIGKILL);
    board.restart();
    let after_kill = Client::connect(&board.ws_url()).await;
    assert_eq!(after_kill.history[0]["files"], files, "after a kill");
    let got = download(board.addr, &doc, &[]).await;
    assert!(got.body == doc_bytes, "the content survived too");
}

#[tokio::test]
async fn a_post_naming_an_unknown_or_malformed_file_or_too_many_is_refused() {
    let board = Board::start(&[]);
    let mut client = Client::connect(&board.ws_url()).await;
    let unknown = "ab".repeat(32);
    client
        .send(json!({"event": "add-message", "ack": 1,
            "data": {"name": "a", "message": "see file", "files": [unknown]}}))
        .await;
    let refused = client.next_event("error").await;
    assert_eq!(refused["data"]["code"], "bad-request");
    assert_eq!(refused["ack"], 1);
    let id = stored(board.addr, "x", "", b"x").await;
    for (files, why) in [
        (json!(["not hex"]), "not an id"),
        (json!([id.to_uppercase()]), "upper case"),
        (json!(id), "not a list"),
        (
            json!(vec![id.clone(); 1]
                .into_iter()
                .chain((0..10).map(|i| format!("{i:064}")))
                .collect::<Vec<_>>()),
            "eleven",
        ),
    ] {
        let answer = post_json(board.addr, json!({"message": "m", "files": files})).await;
        assert_eq!(answer.status, 400, "{why}");
        assert_eq!(answer.json()["code"], "bad-request", "{why}");
    }
    let blank = post_json(board.addr, json!({"message": "  "})).await;
    assert_eq!(
        blank.json()["code"],
        "empty-message",
        "no files, no text: refused"
    );
    let ok = post_json(board.addr, json!({"files": [id]})).await;
    assert_eq!(ok.status, 201, "files alone, no message field at all");
    let twice = post_json(board.addr, json!({"message": "x", "files": [id, id]})).await;
    assert_eq!(
        twice.json()["files"].as_array().unwrap().len(),
        1,
        "listed twice, carried once"
    );
}

#[tokio::test]
async fn a_file_no_message_carries_is_removed_after_its_time_and_a_carried_one_stays() {
    let board = Board::start(&["--orphan-files-after", "1"]);
    let orphan = stored(board.addr, "orphan", "", &random_bytes(1000)).await;
    let carried = stored(board.addr, "carried", "", &random_bytes(1000)).await;
    let posted = post_json(board.addr, json!({"message": "keep", "files": [carried]})).await;
    assert_eq!(posted.status, 201);
    let deadline = Instant::now() + WAIT;
    loop {
        // HEAD, not GET: a body cut short by the removal is an error.
        let path = format!("/files/{orphan}");
        if request(board.addr, "HEAD", &path, &[], Vec::new())
            .await
            .status
            == 404
        {
            break;
        }
        assert!(Instant::now() < deadline, "the orphan was never removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(download(board.addr, &carried, &[]).await.status, 200);
    let late = post_json(
        board.addr,
        json!({"message": "too late", "files": [orphan]}),
    )
    .await;
    assert_eq!(
        late.json()["code"],
        "bad-request",
        "a removed file cannot be posted"
    );
}

#[tokio::test]
async fn a_deleted_messages_file_goes_once_no_message_carries_it_and_its_bytes_leave_the_disk() {
    let board = Board::start(&[]);
    let mut secret = b"SECRET-FILE-CONTENT-".to_vec();
    secret.extend_from_slice(sha256_hex(&random_bytes(16)).as_bytes());
    let mut bytes = random_bytes(400_000);
    bytes[300_000..300_000 + secret.len()].copy_from_slice(&secret);
    let id = stored(board.addr, "secret.bin", "", &bytes).await;
    let mut ids = Vec::new();
    for text in ["first", "second"] {
        let posted = post_json(
            board.addr,
            json!({"message": text, "files": [id], "key": KEY}),
        )
        .await;
        ids.push(posted.json()["id"].as_u64().unwrap());
    }
    let addr = board.addr;
    let delete = |message: u64| async move {
        request(
            addr,
            "DELETE",
            &format!("/api/messages/{message}"),
            &[("Lanboard-Key", KEY)],
            Vec::new(),
        )
        .await
    };
    assert_eq!(delete(ids[0]).await.status, 204);
    assert_eq!(
        download(board.addr, &id, &[]).await.status,
        200,
        "another message still carries it"
    );
    assert_eq!(delete(ids[1]).await.status, 204);
    assert_eq!(download(board.addr, &id, &[]).await.status, 404);
    let on_disk = |path: std::path::PathBuf| {
        std::fs::read(&path)
            .map(|b| b.windows(secret.len()).any(|w| w == secret.as_slice()))
            .unwrap_or(false)
    };
    let wal = board.data.with_extension("db-wal");
    assert!(
        !on_disk(board.data.clone()),
        "the content is gone from the file"
    );
    assert!(!on_disk(wal), "and from its WAL");
}

#[tokio::test]
async fn uploads_need_the_passphrase_the_boards_origin_and_count_as_posts() {
    let board = Board::start(&[
        "--password",
        "open sesame",
        "--rate-limit",
        "1",
        "--rate-burst",
        "2",
    ]);
    let locked = upload(board.addr, "x", "", b"x").await;
    assert_eq!(locked.status, 401);
    let bearer = ("Authorization", "Bearer open sesame");
    let id = {
        let answer = request(
            board.addr,
            "POST",
            "/api/files?name=x",
            &[bearer],
            b"x".to_vec(),
        )
        .await;
        assert_eq!(answer.status, 201);
        answer.json()["id"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        download(board.addr, &id, &[]).await.status,
        401,
        "downloads too"
    );
    assert_eq!(download(board.addr, &id, &[bearer]).await.status, 200);
    let foreign = request(
        board.addr,
        "POST",
        "/api/files?name=x",
        &[bearer, ("Origin", "http://evil.example")],
        b"y".to_vec(),
    )
    .await;
    assert_eq!(foreign.status, 403);
    // The burst of two is spent (the upload above and the refused one's
    // turn do not matter: at most two pass in a row).
    let mut limited = false;
    for n in 0..4 {
        let answer = request(board.addr, "POST", "/api/files?name=x", &[bearer], vec![n]).await;
        if answer.status == 429 {
            assert_eq!(answer.json()["code"], "rate-limited");
            limited = true;
        }
    }
    assert!(limited, "an upload counts as a post against --rate-limit");
}

#[tokio::test]
async fn a_memory_board_keeps_files_in_memory_and_serves_them() {
    let board = Board::start(&["--memory"]);
    let bytes = random_bytes(300_000);
    let id = stored(board.addr, "m.bin", "", &bytes).await;
    let posted = post_json(board.addr, json!({"message": "m", "files": [id]})).await;
    assert_eq!(posted.json()["files"][0]["size"], 300_000);
    let got = download(board.addr, &id, &[("Range", "bytes=262143-262144")]).await;
    assert_eq!(got.status, 206);
    assert!(got.body == bytes[262_143..=262_144]);
    let found = common::get(board.addr, "/api/search?q=m").await.json();
    assert_eq!(
        found["results"][0]["files"][0]["id"],
        id.as_str(),
        "search results carry files"
    );
}

#[tokio::test]
async fn export_and_import_carry_the_files_byte_for_byte() {
    let mut board = Board::start(&[]);
    let bytes = random_bytes(700_000);
    let id = stored(board.addr, "deck.pdf", "application/pdf", &bytes).await;
    let image = stored(board.addr, "i.png", "image/png", PNG).await;
    post_json(board.addr, json!({"message": "deck", "files": [id, image]})).await;
    post_json(board.addr, json!({"message": "again", "files": [image]})).await;
    post_json(board.addr, json!({"message": "text only"})).await;
    board.stop();
    let dir = tempfile::tempdir().unwrap();
    let data = board.data.display().to_string();
    let files = dir.path().join("files");
    let (status, out, err) = common::run(
        &[
            "export",
            "--data",
            &data,
            "--files",
            &files.display().to_string(),
        ],
        dir.path(),
    );
    assert!(status.success(), "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["files"][0]["id"], id.as_str());
    assert_eq!(lines[0]["files"][0]["name"], "deck.pdf");
    assert!(
        std::fs::read(files.join(&id)).unwrap() == bytes,
        "written by id"
    );
    assert_eq!(std::fs::read(files.join(&image)).unwrap(), PNG);
    assert_eq!(
        std::fs::read_dir(&files).unwrap().count(),
        2,
        "each file once"
    );
    let export = dir.path().join("board.jsonl");
    std::fs::write(&export, &out).unwrap();
    let copy = dir.path().join("copy.db");
    let export_arg = export.display().to_string();
    let copy_arg = copy.display().to_string();
    let (status, _, err) = common::run(&["import", &export_arg, "--data", &copy_arg], dir.path());
    assert!(
        !status.success(),
        "without --files, messages with files are refused"
    );
    assert!(err.contains("--files"), "{err}");
    let (status, _, err) = common::run(
        &[
            "import",
            &export_arg,
            "--data",
            &copy_arg,
            "--files",
            &files.display().to_string(),
        ],
        dir.path(),
    );
    assert!(status.success(), "{err}");
    let copied = Board::start_on(&copy, 0, &[]);
    let got = download(copied.addr, &id, &[]).await;
    assert!(got.body == bytes, "imported byte for byte");
    assert_eq!(got.header("content-type"), Some("application/pdf"));
    let history = common::get(copied.addr, "/api/messages").await.json();
    assert_eq!(history[1]["files"][0]["id"], image.as_str());
    // A file whose content is not what its id says is refused.
    std::fs::write(files.join(&image), b"tampered").unwrap();
    let third = dir.path().join("third.db");
    let (status, _, err) = common::run(
        &[
            "import",
            &export_arg,
            "--data",
            &third.display().to_string(),
            "--files",
            &files.display().to_string(),
        ],
        dir.path(),
    );
    assert!(!status.success());
    assert!(err.contains(&image), "{err}");
}

#[tokio::test]
async fn a_body_shorter_than_its_declared_length_stores_nothing() {
    let board = Board::start(&[]);
    let addr = board.addr;
    tokio::task::spawn_blocking(move || {
        let mut socket = TcpStream::connect(addr).expect("connects");
        socket
            .write_all(
                b"POST /api/files?name=liar HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n",
            )
            .unwrap();
        // Past the first chunk, then the client goes away.
        socket.write_all(&random_bytes(300_000)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    })
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let conn = rusqlite::Connection::open(&board.data).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM file_chunks) + (SELECT count(*) FROM files)",
                [],
                |row| row.get(0),
            )
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} rows of the cut-off upload left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The board still takes uploads.
    stored(board.addr, "honest", "", &random_bytes(1000)).await;
}
