//! `lanboard send` and `lanboard tail` as scripts use them: the real binary
//! as a child process against a real board on 127.0.0.1, over http and https.
//! Every wait has a timeout and every child is killed when its test ends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{binary, Board, WAIT};
use serde_json::Value;

/// What a finished `lanboard send` left behind.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    /// The one id printed by a successful send.
    fn id(&self) -> u64 {
        assert!(
            self.status.success(),
            "send failed ({}): {}",
            self.status,
            self.stderr
        );
        self.stdout
            .strip_suffix('\n')
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("stdout is one id and a newline: {:?}", self.stdout))
    }

    /// The one stderr line of a failed send, after checking the exit status.
    fn failure(&self) -> &str {
        assert_eq!(self.status.code(), Some(1), "stderr: {}", self.stderr);
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout: {:?}",
            self.stdout
        );
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one line on stderr: {:?}",
            self.stderr
        );
        self.stderr.trim_end()
    }
}

/// A `lanboard` command with none of the client's environment variables
/// inherited from whoever runs the tests.
fn lanboard(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command.args(args);
    for var in [
        "LANBOARD_URL",
        "LANBOARD_PASSWORD",
        "LANBOARD_NAME",
        "LANBOARD_CA_CERT",
        "LANBOARD_INSECURE",
        "USER",
        "USERNAME",
        "LOGNAME",
        "NO_COLOR",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command
}

/// Runs `lanboard send ARGS` with `stdin` to completion, within the test wait.
fn send(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = lanboard(&[&["send"], args].concat(), env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lanboard starts");
    let mut input = child.stdin.take().expect("piped stdin");
    // A send that exits before reading stdin closes the pipe; that is its answer.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let status = wait(&mut child, &format!("lanboard send {args:?}"));
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut stdout)
        .expect("stdout is UTF-8");
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("stderr is UTF-8");
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Waits for `child` to exit, killing it and failing after the test wait.
fn wait(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return status;
        }
        if Instant::now() > deadline {
            // Already failing; the kill only keeps the process from outliving the test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one async request of the test suite's HTTP client to completion.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// Every message on the board, oldest first, over the HTTP API.
fn stored(board: &Board) -> Vec<Value> {
    let listed = block_on(common::get(board.addr, "/api/messages?since=0&limit=500"));
    assert_eq!(listed.status, 200, "{}", listed.body);
    listed.json().as_array().expect("an array").clone()
}

/// Posts a message over the HTTP API; returns its id.
fn post(board: &Board, message: &str) -> u64 {
    let body = serde_json::json!({"name": "poster", "message": message}).to_string();
    let response = block_on(common::post(board.addr, "/api/messages", &body));
    assert_eq!(response.status, 201, "{}", response.body);
    response.json()["id"].as_u64().expect("an id")
}

/// A running `lanboard tail`, its stdout read line by line; killed when dropped.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Tail {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Tail {
        let mut child = lanboard(&[&["tail"], args].concat(), env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lanboard starts");
        let lines = forward(child.stdout.take().expect("piped stdout"));
        let stderr = forward(child.stderr.take().expect("piped stderr"));
        Tail {
            child,
            lines,
            stderr,
        }
    }

    /// The next line on stdout, failing the test after the test wait.
    fn line(&mut self) -> String {
        self.lines.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "tail printed no line in {WAIT:?}; stderr: {}",
                self.stderr.try_iter().collect::<Vec<_>>().join("\n")
            )
        })
    }

    /// The next `count` lines on stdout.
    fn lines(&mut self, count: usize) -> Vec<String> {
        (0..count).map(|_| self.line()).collect()
    }

    /// The ids of the next JSON lines, up to and including `last`.
    fn ids_through(&mut self, last: u64) -> Vec<u64> {
        let mut ids = Vec::new();
        while ids.last() != Some(&last) {
            let line = self.line();
            let message: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("a JSON line ({e}): {line}"));
            ids.push(message["id"].as_u64().expect("an id"));
            assert!(ids.len() < 10_000, "tail keeps printing: {ids:?}");
        }
        ids
    }

    /// Whatever stdout line arrives within `wait`.
    fn quiet_for(&mut self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    fn exit(&mut self) -> ExitStatus {
        wait(&mut self.child, "lanboard tail")
    }

    /// What the tail printed on stderr so far.
    fn stderr(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Everything the tail printed on stderr, once it has exited (the
    /// reading thread ends when the pipe closes).
    fn stderr_after_exit(&self) -> String {
        self.stderr.iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // The tail may have exited already; either way it is reaped here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends each line `pipe` yields into a channel, from a thread of its own.
fn forward(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// A port nothing listens on: bound, then let go.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").port()
}

#[test]
fn send_prints_the_id_of_the_message_it_stored_from_its_arguments() {
    let board = Board::start(&[]);
    let url = board.url();
    let sent = send(
        &["--url", &url, "build", "green", "on", "main"],
        &[("LANBOARD_NAME", "ci")],
        "",
    );
    let id = sent.id();
    let messages = stored(&board);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["id"], id);
    assert_eq!(messages[0]["name"], "ci");
    assert_eq!(messages[0]["message"], "build green on main");
    assert!(sent.stderr.is_empty(), "{}", sent.stderr);
}

#[test]
fn send_reads_stdin_without_its_final_line_break_when_given_no_words_or_a_dash() {
    let board = Board::start(&[]);
    let env = [("LANBOARD_URL", board.url()), ("USER", "alice".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = send(&[], &env, "error: linker failed\nmake: *** [all] Error 1\n").id();
    let second = send(&["-"], &env, "from a dash\n").id();
    let named = send(&["--name", "bob", "-"], &env, "named\r\n").id();
    let messages = stored(&board);
    assert_eq!(common::ids(&messages), [first, second, named]);
    assert_eq!(
        messages[0]["message"],
        "error: linker failed\nmake: *** [all] Error 1"
    );
    // Without --name or LANBOARD_NAME, the login name.
    assert_eq!(messages[0]["name"], "alice");
    assert_eq!(messages[1]["message"], "from a dash");
    assert_eq!(messages[2]["name"], "bob");
    assert_eq!(messages[2]["message"], "named");
}

#[test]
fn send_takes_its_name_from_lanboard_name_before_the_login_name() {
    let board = Board::start(&[]);
    let url = board.url();
    let id = send(
        &["--url", &url, "hi"],
        &[("LANBOARD_NAME", "deploy-bot"), ("LOGNAME", "alice")],
        "",
    )
    .id();
    let by_logname = send(&["--url", &url, "hi"], &[("LOGNAME", "carol")], "").id();
    let messages = stored(&board);
    assert_eq!(common::ids(&messages), [id, by_logname]);
    assert_eq!(messages[0]["name"], "deploy-bot");
    assert_eq!(messages[1]["name"], "carol");
}

#[test]
fn send_to_a_port_nobody_listens_on_fails_with_one_line() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let sent = send(&["--url", &url, "hello"], &[], "");
    let line = sent.failure();
    assert!(
        line.starts_with(&format!("lanboard: cannot reach the board at {url}")),
        "{line}"
    );
}

#[test]
fn send_with_a_wrong_or_missing_passphrase_fails_and_the_right_one_posts() {
    let board = Board::start(&["--password", "open sesame"]);
    let url = board.url();
    let wrong = send(
        &["--url", &url, "hi"],
        &[("LANBOARD_PASSWORD", "guess")],
        "",
    );
    assert!(
        wrong.failure().contains("refused the passphrase (401"),
        "{}",
        wrong.stderr
    );
    let missing = send(&["--url", &url, "hi"], &[], "");
    assert!(
        missing.failure().contains("needs a passphrase"),
        "{}",
        missing.stderr
    );
    let right = send(&["--url", &url, "--password", "open sesame", "hi"], &[], "").id();
    let by_env = send(
        &["--url", &url, "hi"],
        &[("LANBOARD_PASSWORD", "open sesame")],
        "",
    )
    .id();
    assert_eq!(by_env, right + 1);
}

#[test]
fn send_of_a_body_over_the_boards_frame_limit_fails_with_413() {
    let board = Board::start(&["--max-frame-bytes", "1024", "--max-message-chars", "100000"]);
    let url = board.url();
    let sent = send(&["--url", &url, "-"], &[], &"x".repeat(4000));
    let line = sent.failure();
    assert!(line.contains("413 too-large"), "{line}");
    assert!(line.contains("larger than 1024 bytes"), "{line}");
    assert!(stored(&board).is_empty());
}

#[test]
fn send_over_the_rate_limit_fails_with_429_and_the_boards_reason() {
    let board = Board::start(&["--rate-limit", "0.01", "--rate-burst", "1"]);
    let url = board.url();
    send(&["--url", &url, "first"], &[], "").id();
    let second = send(&["--url", &url, "second"], &[], "");
    let line = second.failure();
    assert!(line.contains("429 rate-limited"), "{line}");
    assert_eq!(stored(&board).len(), 1);
}

#[test]
fn send_of_a_message_longer_than_the_board_allows_fails_with_400() {
    let board = Board::start(&["--max-message-chars", "10"]);
    let url = board.url();
    let sent = send(&["--url", &url, "far more than ten characters"], &[], "");
    let line = sent.failure();
    assert!(line.contains("400 message-too-long"), "{line}");
}

#[test]
fn send_of_an_empty_stdin_fails_with_the_boards_reason() {
    let board = Board::start(&[]);
    let url = board.url();
    let line = send(&["--url", &url], &[], "\n").failure().to_owned();
    assert!(line.contains("400 empty-message"), "{line}");
}

#[test]
fn send_with_the_same_cid_twice_stores_one_message_and_prints_its_id_twice() {
    let board = Board::start(&[]);
    let url = board.url();
    let args = ["--url", &url, "--cid", "deploy-4711", "deployed"];
    let first = send(&args, &[], "").id();
    let again = send(&args, &[], "").id();
    assert_eq!(first, again);
    assert_eq!(common::ids(&stored(&board)), [first]);
}

#[test]
fn tail_prints_the_newest_messages_then_each_new_one_as_it_arrives() {
    let board = Board::start(&[]);
    for i in 1..=12 {
        post(&board, &format!("old {i}"));
    }
    let url = board.url();
    let mut tail = Tail::start(&["--url", &url, "--history", "3"], &[]);
    let history = tail.lines(3);
    for (line, n) in history.iter().zip(10..) {
        // HH:MM name: text, in local time.
        let (clock, rest) = line.split_once(' ').expect("a clock first");
        assert!(clock.len() == 5 && clock.as_bytes()[2] == b':', "{line:?}");
        assert_eq!(rest, format!("poster: old {n}"));
    }
    post(&board, "live one\nsecond line\nthird");
    let live = tail.lines(3);
    assert!(live[0].ends_with(" poster: live one"), "{live:?}");
    // Continuation lines start under the text, after "HH:MM poster: ".
    let indent = " ".repeat("12:34 poster: ".len());
    assert_eq!(live[1], format!("{indent}second line"));
    assert_eq!(live[2], format!("{indent}third"));
    // Not a terminal, so no colour codes.
    assert!(!history.concat().contains('\x1b'));
    assert_eq!(tail.quiet_for(Duration::from_millis(300)), None);
}

#[test]
fn tail_json_prints_each_message_exactly_as_the_board_stores_it() {
    let board = Board::start(&[]);
    post(&board, "one");
    let url = board.url();
    let mut tail = Tail::start(&["--url", &url, "--json"], &[]);
    let first: Value = serde_json::from_str(&tail.line()).expect("a JSON line");
    post(&board, "two\nlines");
    let second: Value = serde_json::from_str(&tail.line()).expect("a JSON line");
    assert_eq!(vec![first, second], stored(&board));
}

#[test]
fn tail_no_follow_prints_the_newest_n_or_everything_after_since_and_exits_zero() {
    let board = Board::start(&[]);
    for i in 1..=15 {
        post(&board, &format!("m{i}"));
    }
    let url = board.url();
    let mut newest = Tail::start(
        &["--url", &url, "--no-follow", "--json", "--history", "5"],
        &[],
    );
    assert_eq!(newest.ids_through(15), [11, 12, 13, 14, 15]);
    assert!(newest.exit().success(), "{}", newest.stderr());
    let mut since = Tail::start(
        &["--url", &url, "--no-follow", "--json", "--since", "12"],
        &[],
    );
    assert_eq!(since.ids_through(15), [13, 14, 15]);
    assert!(since.exit().success(), "{}", since.stderr());
}

#[test]
fn tail_since_pages_through_more_than_one_page_of_history() {
    let board = Board::start(&["--rate-limit", "0"]);
    for i in 1..=620 {
        post(&board, &format!("m{i}"));
    }
    let url = board.url();
    let mut since = Tail::start(
        &["--url", &url, "--no-follow", "--json", "--since", "3"],
        &[],
    );
    assert_eq!(since.ids_through(620), (4..=620).collect::<Vec<_>>());
    assert!(since.exit().success(), "{}", since.stderr());
    let mut newest = Tail::start(
        &["--url", &url, "--no-follow", "--json", "--history", "600"],
        &[],
    );
    assert_eq!(newest.ids_through(620), (21..=620).collect::<Vec<_>>());
}

#[test]
fn tail_pages_on_when_the_boards_byte_budget_cuts_a_page_short() {
    // 600 messages of 3,900 characters: about 2.3 MiB, so every page of
    // 500 is cut at the board's 1 MiB budget, well short of its limit.
    let board = Board::start(&["--rate-limit", "0"]);
    let text = "x".repeat(3900);
    for _ in 1..=600 {
        post(&board, &text);
    }
    let url = board.url();
    let mut since = Tail::start(
        &["--url", &url, "--no-follow", "--json", "--since", "0"],
        &[],
    );
    assert_eq!(since.ids_through(600), (1..=600).collect::<Vec<_>>());
    assert!(since.exit().success(), "{}", since.stderr());
    let mut newest = Tail::start(
        &["--url", &url, "--no-follow", "--json", "--history", "550"],
        &[],
    );
    assert_eq!(newest.ids_through(600), (51..=600).collect::<Vec<_>>());
    assert!(newest.exit().success(), "{}", newest.stderr());
}

#[test]
fn tail_across_a_board_restart_prints_every_message_once_and_in_order() {
    let mut board = Board::start(&[]);
    for i in 1..=3 {
        post(&board, &format!("before {i}"));
    }
    let url = board.url();
    let mut tail = Tail::start(&["--url", &url, "--json", "--history", "100"], &[]);
    let mut seen = tail.ids_through(3);
    post(&board, "live 4");
    seen.extend(tail.ids_through(4));
    board.restart();
    // Posted by someone else while the tail is still waiting to reconnect.
    let mut last = 0;
    for i in 5..=9 {
        last = post(&board, &format!("after restart {i}"));
    }
    seen.extend(tail.ids_through(last));
    let final_id = post(&board, "after the tail is back");
    seen.extend(tail.ids_through(final_id));
    assert_eq!(seen, (1..=final_id).collect::<Vec<_>>());
    assert_eq!(tail.quiet_for(Duration::from_millis(300)), None);
    let notices = tail.stderr();
    assert!(notices.contains("reconnecting"), "{notices}");
}

#[test]
fn tail_exits_zero_on_ctrl_c() {
    let board = Board::start(&[]);
    post(&board, "hello");
    let url = board.url();
    let mut tail = Tail::start(&["--url", &url], &[]);
    tail.line();
    // SAFETY: kill(2) on our own child's pid has no memory-safety effects.
    unsafe { libc::kill(tail.child.id() as i32, libc::SIGINT) };
    assert!(tail.exit().success(), "{}", tail.stderr());
}

#[test]
fn tail_with_a_wrong_passphrase_fails_with_one_line_and_the_right_one_follows() {
    let board = Board::start(&["--password", "open sesame"]);
    let url = board.url();
    let mut wrong = Tail::start(&["--url", &url, "--password", "guess"], &[]);
    assert_eq!(wrong.exit().code(), Some(1));
    let stderr = wrong.stderr_after_exit();
    assert!(stderr.contains("refused the passphrase"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let mut right = Tail::start(
        &["--url", &url, "--json"],
        &[("LANBOARD_PASSWORD", "open sesame")],
    );
    // History is empty: the line can only come over the WebSocket, whose
    // upgrade carried the passphrase.
    std::thread::sleep(Duration::from_millis(300));
    let body = serde_json::json!({"message": "for members"}).to_string();
    let posted = block_on(common::http(
        board.addr,
        "POST",
        "/api/messages",
        &[("Authorization", "Bearer open sesame")],
        &body,
    ));
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert_eq!(right.ids_through(1), [1]);
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost, made with
/// the `openssl` command in `dir`: (CA certificate, server certificate, key).
fn make_certificates(dir: &Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed (.ci/run installs it)");
        assert!(
            made.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca, ca_key) = (path("ca.pem"), path("ca.key"));
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=lanboard test CA",
            ][..],
            &ec,
            &["-keyout", &ca_key, "-out", &ca],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign"],
        ]
        .concat(),
    );
    let (key, request, cert) = (path("key.pem"), path("board.csr"), path("cert.pem"));
    openssl(
        &[
            &["req", "-new", "-subj", "/CN=localhost"][..],
            &ec,
            &["-keyout", &key, "-out", &request],
        ]
        .concat(),
    );
    let extensions = path("extensions");
    std::fs::write(
        &extensions,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("the extensions file is written");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &request,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &extensions,
        "-out",
        &cert,
    ]);
    (ca, cert, key)
}

#[test]
fn send_and_tail_over_tls_validate_the_certificate_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ca, cert, key) = make_certificates(dir.path());
    let board = Board::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("https://{}", board.addr);

    let untrusted = send(&["--url", &url, "hi"], &[], "");
    let line = untrusted.failure();
    assert!(
        line.starts_with(&format!(
            "lanboard: the certificate of {url} could not be verified ("
        )),
        "{line}"
    );
    assert!(line.contains("use --insecure"), "{line}");
    assert!(line.contains("--ca-cert FILE"), "{line}");

    let insecure = send(&["--url", &url, "--insecure", "one"], &[], "").id();
    let trusted = send(&["--url", &url, "--ca-cert", &ca, "two"], &[], "").id();
    let by_env = send(&["--url", &url, "three"], &[("LANBOARD_CA_CERT", &ca)], "").id();
    assert_eq!([insecure, trusted, by_env], [1, 2, 3]);

    // The same trust for the tail's HTTP history and its wss:// WebSocket.
    let mut tail = Tail::start(&["--url", &url, "--json"], &[("LANBOARD_CA_CERT", &ca)]);
    assert_eq!(tail.ids_through(3), [1, 2, 3]);
    let live = send(&["--url", &url, "--insecure", "four"], &[], "").id();
    assert_eq!(tail.ids_through(live), [4]);

    let mut refused = Tail::start(&["--url", &url], &[]);
    assert_eq!(refused.exit().code(), Some(1));
    let stderr = refused.stderr_after_exit();
    assert!(stderr.contains("could not be verified"), "{stderr}");
}

/// A stand-in board that answers as a real one would after events a real one
/// makes rare and slow to provoke (a resume cut short, a lost history): its
/// HTTP API serves ids 1 to `ids` from one list, its WebSocket sends one
/// scripted set of frames per connection. Every request's path is recorded.
struct FakeBoard {
    addr: std::net::SocketAddr,
    paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn fake_message(id: u64) -> String {
    format!(r#"{{"id":{id},"name":"fake","message":"m{id}","time":1764000000000}}"#)
}

impl FakeBoard {
    /// `history` answers `GET /api/messages?limit=..`; `sessions[i]` is the
    /// frames of the i-th WebSocket connection.
    fn start(ids: u64, history: Vec<u64>, sessions: Vec<Vec<String>>) -> FakeBoard {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = paths.clone();
        std::thread::spawn(move || {
            let mut sessions = sessions.into_iter();
            for stream in listener.incoming().map_while(Result::ok) {
                let mut stream = stream;
                stream
                    .set_read_timeout(Some(WAIT))
                    .expect("a read timeout can be set");
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                recorded.lock().expect("not poisoned").push(path.clone());
                let key = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("sec-websocket-key:")
                        .then(|| l[18..].trim().to_owned())
                });
                match key {
                    Some(key) => {
                        let frames = sessions.next().unwrap_or_default();
                        std::thread::spawn(move || serve_websocket(stream, &key, frames));
                    }
                    None => {
                        let body = fake_page(&path, ids, &history);
                        // The client may have given up; the next request tells.
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                }
            }
        });
        FakeBoard { addr, paths }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("not poisoned").clone()
    }
}

/// The JSON array a real board gives for `path`, from ids 1 to `ids`.
fn fake_page(path: &str, ids: u64, history: &[u64]) -> String {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let page: Vec<u64> = match param("since") {
        Some(since) => (since + 1..=ids)
            .take(param("limit").unwrap_or(500) as usize)
            .collect(),
        None => history.to_vec(),
    };
    let messages: Vec<String> = page.into_iter().map(fake_message).collect();
    format!("[{}]", messages.join(","))
}

/// Accepts the upgrade, sends `frames` as text frames, then holds the
/// connection until the client lets go.
fn serve_websocket(mut stream: std::net::TcpStream, key: &str, frames: Vec<String>) {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    for frame in frames {
        out.push(0x81);
        match frame.len() {
            len @ 0..=125 => out.push(len as u8),
            len @ 126..=65535 => {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(frame.as_bytes());
    }
    if stream.write_all(&out).is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

#[test]
fn tail_pages_over_http_what_a_resume_cut_short_left_out_and_ignores_unknown_events() {
    // The history is message 1; the WebSocket then says it kept only the
    // newest 100 of 1,200 ("gap"): 2 to 1,100 must come over HTTP, in pages.
    let newest: Vec<String> = (1101..=1200).map(fake_message).collect();
    let welcome = format!(
        r#"{{"event":"messages-available","gap":true,"data":[{}]}}"#,
        newest.join(",")
    );
    let board = FakeBoard::start(
        1200,
        vec![1],
        vec![vec![
            r#"{"event":"presence","data":{"online":3}}"#.to_owned(),
            welcome,
            r#"{"event":"from-a-later-version","data":{"id":99999}}"#.to_owned(),
            format!(
                r#"{{"event":"message-added","data":{}}}"#,
                fake_message(1201)
            ),
        ]],
    );
    let url = format!("http://{}", board.addr);
    let mut tail = Tail::start(&["--url", &url, "--json", "--history", "1"], &[]);
    assert_eq!(tail.ids_through(1201), (1..=1201).collect::<Vec<_>>());
    assert_eq!(tail.quiet_for(Duration::from_millis(300)), None);
    let paths = board.paths();
    assert_eq!(
        paths,
        [
            "/api/messages?limit=1",
            "/ws?since=1",
            "/api/messages?since=1&limit=500",
            "/api/messages?since=501&limit=500",
            "/api/messages?since=1001&limit=500",
        ]
    );
}

#[test]
fn tail_follows_the_new_board_after_a_board_reset() {
    let board = FakeBoard::start(
        0,
        vec![7, 8],
        vec![
            vec![
                r#"{"event":"messages-available","epoch":"e1","data":[]}"#.to_owned(),
                r#"{"event":"board-reset","data":{"message":"the board's history was lost"}}"#
                    .to_owned(),
            ],
            vec![format!(
                r#"{{"event":"messages-available","epoch":"e2","data":[{},{}]}}"#,
                fake_message(1),
                fake_message(2)
            )],
        ],
    );
    let url = format!("http://{}", board.addr);
    let mut tail = Tail::start(&["--url", &url, "--json"], &[]);
    assert_eq!(tail.ids_through(8), [7, 8]);
    // The new board's ids start over; they are new messages all the same.
    assert_eq!(tail.ids_through(2), [1, 2]);
    let paths = board.paths();
    assert_eq!(
        paths,
        ["/api/messages?limit=10", "/ws?since=8", "/ws?since=0"]
    );
    let stderr = tail.stderr();
    assert!(stderr.contains("the board started over"), "{stderr}");
}

#[test]
fn send_with_files_uploads_them_and_posts_a_message_that_carries_them() {
    let board = Board::start(&[]);
    let url = board.url();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("failing screen.png");
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    std::fs::write(&image, &png).unwrap();
    let log = dir.path().join("build.log");
    let text: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    std::fs::write(&log, &text).unwrap();
    let sent = send(
        &[
            "--url",
            &url,
            "--file",
            &image.display().to_string(),
            "--file",
            &log.display().to_string(),
            "the",
            "build",
            "broke",
        ],
        &[("LANBOARD_NAME", "ci")],
        "",
    );
    let id = sent.id();
    let messages = stored(&board);
    assert_eq!(messages[0]["id"], id);
    assert_eq!(messages[0]["message"], "the build broke");
    let files = messages[0]["files"]
        .as_array()
        .expect("the message carries files");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["name"], "failing screen.png");
    assert_eq!(files[0]["type"], "image/png");
    assert_eq!(files[1]["name"], "build.log");
    assert_eq!(files[1]["size"], text.len());
    let path = format!("/files/{}", files[1]["id"].as_str().unwrap());
    let got = block_on(common::get(board.addr, &path));
    assert_eq!(got.status, 200);
    assert!(
        got.body.as_bytes() == text.as_slice(),
        "the log arrived whole"
    );

    // Files alone: no words, and stdin is not read.
    let alone = send(
        &["--url", &url, "--file", &log.display().to_string()],
        &[],
        "ignored",
    );
    let id = alone.id();
    let messages = stored(&board);
    let last = messages.iter().find(|m| m["id"] == id).unwrap();
    assert_eq!(last["message"], "");
    assert_eq!(last["files"][0]["name"], "build.log");
}

#[test]
fn send_of_a_file_over_the_boards_limit_or_missing_fails_with_one_line_and_posts_nothing() {
    let board = Board::start(&["--max-file-bytes", "1000"]);
    let url = board.url();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 5000]).unwrap();
    let sent = send(
        &["--url", &url, "--file", &big.display().to_string(), "hi"],
        &[],
        "",
    );
    let line = sent.failure();
    assert!(line.contains("413 too-large"), "{line}");
    let missing = dir.path().join("nowhere.txt");
    let sent = send(
        &[
            "--url",
            &url,
            "--file",
            &missing.display().to_string(),
            "hi",
        ],
        &[],
        "",
    );
    let line = sent.failure();
    assert!(line.contains("nowhere.txt"), "{line}");
    assert!(stored(&board).is_empty());
}
