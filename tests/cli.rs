//! The real binary with its real flags: banner, errors, signals.

mod common;

use std::process::{Command, Stdio};

use common::{binary, get, http, post, run, Board, Client};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as Frame;

#[test]
fn help_and_version_work() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out, _) = run(&["--help"], dir.path());
    assert!(status.success());
    for flag in [
        "--port",
        "--bind",
        "--history",
        "--data",
        "--memory",
        "--no-qr",
        "LANBOARD_PORT",
        "LANBOARD_BIND",
    ] {
        assert!(out.contains(flag), "--help mentions {flag}:\n{out}");
    }
    let (status, out, _) = run(&["--version"], dir.path());
    assert!(status.success());
    // The commit it was built from follows: see the test of --version below.
    assert!(
        out.starts_with(&format!("lanboard {} (", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

#[test]
fn port_zero_prints_the_port_actually_bound_and_the_local_address() {
    let board = Board::start(&[]);
    assert_ne!(board.addr.port(), 0);
    let port_line = board.banner.lines().next().unwrap();
    assert!(
        port_line.contains(&format!("port {}", board.addr.port())),
        "{port_line}"
    );
    let local = board
        .banner
        .lines()
        .find(|l| l.contains(&board.url()))
        .expect("the local address is printed");
    assert!(local.contains("this computer only"), "{local}");
    assert!(board.banner.contains("History: "), "{}", board.banner);
}

#[test]
fn binding_all_interfaces_lists_every_lan_address_marked_to_send() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .args(["--port", "0", "--bind", "0.0.0.0", "--no-qr", "--memory"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let lan: Vec<_> = lanboard::net::lan_ipv4_addresses();
    for ip in &lan {
        let line = banner
            .lines()
            .find(|l| l.contains(&format!("http://{ip}:")))
            .unwrap_or_else(|| panic!("{ip} missing from:\n{banner}"));
        assert!(line.contains("send this one"), "{line}");
    }
    assert!(banner.contains("http://127.0.0.1:"), "{banner}");
    assert!(!banner.contains("http://0.0.0.0"), "{banner}");
}

#[test]
fn the_port_can_come_from_the_environment() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .args(["--no-qr", "--memory"])
        .env("LANBOARD_PORT", port.to_string())
        .env("LANBOARD_BIND", "127.0.0.1")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let first = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.contains(&format!("port {port}")), "{first}");
}

#[test]
fn a_port_already_in_use_gives_one_clear_line_and_a_failure_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (status, out, err) = run(
        &["--port", &port, "--bind", "127.0.0.1", "--memory"],
        dir.path(),
    );
    assert!(!status.success());
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    assert!(
        err.contains("already in use") && err.contains(&port),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(out.is_empty(), "no banner: {out}");
}

#[test]
fn a_bad_bind_address_gives_one_clear_line_and_a_failure_exit() {
    let dir = tempfile::tempdir().unwrap();
    for address in ["not-an-address", "300.1.1.1"] {
        let (status, _, err) = run(&["--port", "0", "--bind", address, "--memory"], dir.path());
        assert!(!status.success());
        assert_eq!(err.trim().lines().count(), 1, "{err:?}");
        assert!(err.contains("--bind") && err.contains(address), "{err}");
    }
    // A well-formed address this machine does not have.
    let (status, _, err) = run(
        &["--port", "0", "--bind", "203.0.113.77", "--memory"],
        dir.path(),
    );
    assert!(!status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
    assert!(err.contains("203.0.113.77"), "{err}");
}

/// Sends SIGTERM to the board without waiting for it to exit.
fn terminate(board: &Board) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety effects.
    unsafe { libc::kill(board.pid() as i32, libc::SIGTERM) };
}

fn exits_zero(board: &mut Board) {
    let status = board.wait_for_exit();
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{}",
        board.stderr()
    );
}

#[tokio::test]
async fn sigterm_closes_every_connection_with_a_close_frame_and_exits_zero() {
    let mut board = Board::start(&[]);
    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(Client::connect(&board.ws_url()).await);
    }
    terminate(&board);
    for (i, mut client) in clients.into_iter().enumerate() {
        let close = loop {
            match tokio::time::timeout(common::WAIT, client.socket.next()).await {
                Ok(Some(Ok(Frame::Close(frame)))) => break frame,
                Ok(Some(Ok(_))) => continue,
                other => panic!("client {i}: expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(
            close.expect("a close reason").code,
            CloseCode::Away,
            "client {i}"
        );
    }
    exits_zero(&mut board);
}

#[tokio::test]
async fn sigterm_delivers_what_each_connection_had_queued_before_its_close_frame() {
    const POSTS: usize = 800;
    let mut board = Board::start(&["--rate-limit", "0"]);
    // Readers with a small receive buffer that read nothing until the board
    // stops: what the kernel cannot hold waits in the board's queue for each
    // (800 posts of 3,000 characters: about 2.4 MB each, under the 4 MiB a
    // connection may have queued before it counts as too slow).
    let mut readers = Vec::new();
    for _ in 0..4 {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.connect(&board.addr.into()).unwrap();
        socket.set_nonblocking(true).unwrap();
        let stream = tokio::net::TcpStream::from_std(socket.into()).unwrap();
        let (reader, _) = tokio_tungstenite::client_async(board.ws_url(), stream)
            .await
            .unwrap();
        readers.push(reader);
    }
    let mut sender = Client::connect(&board.ws_url()).await;
    let text = "x".repeat(3000);
    for ack in 1..=POSTS as u64 {
        sender.add("load", &text, ack).await;
    }
    // Once the sender has its own copy of the last post, every post is queued
    // to every reader.
    let mut echoed = 0;
    while echoed < POSTS {
        if sender.next().await.expect("a frame")["event"] == "message-added" {
            echoed += 1;
        }
    }
    terminate(&board);
    for (i, mut reader) in readers.into_iter().enumerate() {
        let mut delivered = 0;
        let close = loop {
            match tokio::time::timeout(common::WAIT, reader.next()).await {
                Ok(Some(Ok(Frame::Text(text)))) => {
                    delivered += usize::from(text.contains(r#""event":"message-added""#));
                }
                Ok(Some(Ok(Frame::Close(frame)))) => break frame,
                Ok(Some(Ok(_))) => continue,
                other => panic!(
                    "reader {i} after {delivered} posts: expected a close frame, got {other:?}\n{}",
                    board.stderr()
                ),
            }
        };
        assert_eq!(
            delivered, POSTS,
            "reader {i} got every post before the close"
        );
        assert_eq!(
            close.expect("a close reason").code,
            CloseCode::Away,
            "reader {i}"
        );
    }
    exits_zero(&mut board);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_does_not_hold_up_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut board = Board::start(&[]);
    // A browser keeps the connection it loaded the page over open for more;
    // raw, since the test needs that connection left open and idle.
    let mut idle = tokio::net::TcpStream::connect(board.addr).await.unwrap();
    idle.write_all(format!("GET /api/info HTTP/1.1\r\nHost: {}\r\n\r\n", board.addr).as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[9..12], b"200");
    let stopping = std::time::Instant::now();
    terminate(&board);
    exits_zero(&mut board);
    // Waiting it out would take the whole 3 s shutdown grace.
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(2),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

#[test]
fn sigint_stops_the_board_with_exit_zero() {
    let mut board = Board::start(&[]);
    let status = board.stop_with(libc::SIGINT);
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_login_survives_a_restart_on_the_same_file() {
    let mut board = Board::start(&["--password", "correct horse"]);
    let login = post(board.addr, "/api/login", r#"{"password":"correct horse"}"#).await;
    assert_eq!(login.status, 204);
    let cookie = login
        .header("set-cookie")
        .expect("a login cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    board.restart();
    let listed = http(
        board.addr,
        "GET",
        "/api/messages",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(
        listed.status, 200,
        "the cookie from before the restart still works: {}",
        listed.body
    );
    let without = get(board.addr, "/api/messages").await;
    assert_eq!(without.status, 401, "and the board is still protected");
}

#[test]
fn version_names_the_release_and_the_commit_it_was_built_from() {
    let out = Command::new(binary()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short=10", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let commit = match head {
        Some(hash) => hash,
        None => {
            eprintln!("NOT A GIT CHECKOUT: --version can only say `unknown` here");
            "unknown".to_owned()
        }
    };
    let expected = format!("lanboard {} ({commit}", env!("CARGO_PKG_VERSION"));
    assert!(
        printed.starts_with(&expected),
        "{printed:?} should start with {expected:?}"
    );
}

/// The banner of the binary started with its open-file limit set to `soft`
/// and `hard`, and the soft limit the running board holds.
#[cfg(unix)]
// `rlim_t` is 64 bits on most Unix targets, 32 on some: the casts stay.
#[allow(clippy::unnecessary_cast)]
fn banner_with_open_files(soft: u64, hard: u64) -> (String, Option<u64>) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command
        .args(["--port", "0", "--bind", "127.0.0.1", "--no-qr", "--memory"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = command.spawn().unwrap();
    let mut banner = String::new();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).ok();
    let held = limits.as_deref().and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    (banner, held)
}

/// This process's hard open-file limit.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
fn hard_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_max as u64
}

#[cfg(target_os = "linux")]
#[test]
fn the_board_raises_its_open_file_limit_to_the_hard_limit() {
    let hard = hard_open_files();
    assert!(hard > 1_024, "this test needs a hard limit above 1,024");
    let (banner, held) = banner_with_open_files(1_024, hard);
    assert_eq!(held, Some(hard), "{banner}");
    if hard >= 10_100 {
        assert!(!banner.contains("Connections:"), "{banner}");
    }
}

#[cfg(unix)]
#[test]
fn the_banner_says_how_many_connections_a_low_open_file_limit_holds() {
    let (banner, _) = banner_with_open_files(1_000, 2_000);
    assert!(
        banner.contains("Connections: up to 1900 at once (open-file limit 2000)"),
        "{banner}"
    );
}
