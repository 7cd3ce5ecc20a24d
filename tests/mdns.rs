//! `--mdns` on a network of its own. mDNS is multicast, so no packet of these
//! tests may reach a real interface: each test runs itself again inside a
//! fresh network namespace (`unshare --net`) whose only interface is a
//! loopback with two documentation addresses (192.0.2.10 and .11) standing in
//! for a LAN. There the real binary advertises, and an mdns-sd resolver in the
//! test process checks what the network hears. Where no namespace can be
//! made, a test says so on stderr, and fails under `CI=true`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mdns_sd::{HostnameResolutionEvent, ResolvedService, ServiceDaemon, ServiceEvent};

/// Set in the namespace: the test body runs there, and only there.
const INSIDE: &str = "LANBOARD_TEST_PRIVATE_NETWORK";

/// The namespace's stand-in LAN addresses, from TEST-NET-1 (RFC 5737), which
/// no real network routes.
const LAN_A: &str = "192.0.2.10";
const LAN_B: &str = "192.0.2.11";
/// The stand-in LAN's IPv6 address, from the documentation prefix (RFC 3849).
const LAN_V6: &str = "2001:db8::10";

/// Makes the namespace's network and runs the rest of the command in it.
/// `lo` gets multicast (off by default) and the stand-in addresses; the
/// multicast route sends 224.0.0.251 there too.
const SETUP: &str = "set -e
ip link set lo up
ip link set lo multicast on
ip addr add 192.0.2.10/24 dev lo
ip addr add 192.0.2.11/24 dev lo
ip -6 addr add 2001:db8::10/64 dev lo nodad
ip route add 224.0.0.0/4 dev lo
exec \"$@\"";

/// How long any single wait may take; probing alone takes about a second,
/// and a rename about another.
const WAIT: Duration = Duration::from_secs(15);

/// Runs `body` inside a private network namespace: this is the test named
/// `name` run again by the test binary under `unshare --net`.
fn in_private_network(name: &str, body: impl FnOnce()) {
    if std::env::var_os(INSIDE).is_some() {
        assert_private_network();
        body();
        return;
    }
    if !namespaces_available() {
        return;
    }
    let exe = std::env::current_exe().expect("a test binary knows its own path");
    let output = Command::new("unshare")
        .args(["--net", "sh", "-c", SETUP, "sh"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("unshare, found a moment ago, runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} failed in its network namespace ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// Refuses to go on anywhere but in the namespace made above: every
/// interface there is `lo`. (Multicast sent from a real network's interface
/// would reach that network.)
fn assert_private_network() {
    let interfaces = if_addrs::get_if_addrs().expect("the interface list can be read");
    let others: Vec<&str> = interfaces
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| *name != "lo")
        .collect();
    assert!(
        others.is_empty(),
        "{INSIDE} is set, but this network has interfaces besides lo ({others:?}): \
         refusing to send mDNS here"
    );
}

/// True when `unshare --net` can make a namespace here (it takes root, or
/// user namespaces, and util-linux and iproute2). When it cannot, says so on
/// stderr, and fails under `CI=true`, where the tests must really run.
fn namespaces_available() -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let probe = AVAILABLE.get_or_init(|| {
        let output = Command::new("unshare")
            .args(["--net", "sh", "-c", SETUP, "sh", "true"])
            .output()
            .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`unshare --net` with iproute2's `ip` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    });
    match probe {
        Ok(()) => true,
        Err(reason) => {
            eprintln!(
                "\n!!! SKIPPED: the mDNS tests need a private network namespace: {reason}\n\
                 !!! (run them as root with util-linux and iproute2 installed)\n"
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the mDNS tests must run under CI=true: {reason}"
            );
            false
        }
    }
}

/// A `lanboard --mdns` process, stopped when dropped.
struct Board {
    child: Child,
    port: u16,
    banner: String,
    stderr: mpsc::Receiver<String>,
}

impl Board {
    /// Starts the binary with an in-memory board on a free port, `extra`
    /// flags appended, and waits for its whole banner.
    fn start(extra: &[&str]) -> Board {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lanboard"));
        command
            .args(["--memory", "--port", "0", "--no-qr"])
            .args(extra)
            .env("RUST_LOG", "warn,lanboard=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the lanboard binary starts");
        let stdout = child.stdout.take().expect("stdout was piped");
        let log = child.stderr.take().expect("stderr was piped");
        let (lines, banner_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The test may have stopped listening; the board goes on printing nothing.
                let _ = lines.send(line);
            }
        });
        let (errors, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                // As above: a finished test no longer reads the log.
                let _ = errors.send(line);
            }
        });
        let mut board = Board {
            child,
            port: 0,
            banner: String::new(),
            stderr,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match banner_lines.recv_timeout(left) {
                Ok(line) => {
                    board.banner.push_str(&line);
                    board.banner.push('\n');
                    if let Some(port) = line
                        .strip_prefix("lanboard ")
                        .and_then(|rest| rest.split("on port ").nth(1))
                    {
                        board.port = port.trim_end_matches('.').parse().expect("a port number");
                    }
                    if line.starts_with("Press Ctrl-C") {
                        return board;
                    }
                }
                Err(_) => panic!(
                    "lanboard {extra:?} printed no whole banner within {WAIT:?}:\n{}\n--- log\n{}",
                    board.banner,
                    board.log()
                ),
            }
        }
    }

    /// Waits until the board logs a line containing `needle` (the log is
    /// read on a thread of its own, so a line written before the banner may
    /// still be on its way); false if none did within `WAIT`.
    fn logs(&self, needle: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(needle) {
                return true;
            }
        }
        false
    }

    /// What the board logged so far.
    fn log(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// The URL lines of the banner, in order.
    fn banner_urls(&self) -> Vec<&str> {
        self.banner
            .lines()
            .filter_map(|line| line.split_whitespace().find(|w| w.starts_with("http://")))
            .collect()
    }

    /// Stops the board as Ctrl-C does and checks that it exits cleanly.
    fn terminate(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid; it has not been waited for, so the pid is still its.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM sent");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                assert!(
                    status.success(),
                    "lanboard exited with {status}:\n{}",
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "lanboard did not stop within {WAIT:?} of SIGTERM:\n{}",
            self.log()
        );
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // Already gone after `terminate`; otherwise a failed test's board is
        // stopped the hard way, which loses nothing a test needs.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A resolver on the namespace's network: mdns-sd's querier, as a phone's or
/// a laptop's would ask.
struct Resolver(ServiceDaemon);

impl Resolver {
    fn new() -> Resolver {
        Resolver(ServiceDaemon::new().expect("an mDNS querier starts"))
    }

    /// The addresses `host` (such as `lanboard.local`) resolves to.
    fn addresses(&self, host: &str) -> HashSet<IpAddr> {
        let (_, found) = self.watch(host);
        // The querier would go on asking; stopping it is a courtesy only.
        let _ = self.0.stop_resolve_hostname(&format!("{host}."));
        found
    }

    /// Resolves `host` and goes on watching it: the addresses found, and the
    /// channel that later reports their removal.
    fn watch(&self, host: &str) -> (mdns_sd::Receiver<HostnameResolutionEvent>, HashSet<IpAddr>) {
        let events = self
            .0
            .resolve_hostname(&format!("{host}."), None)
            .expect("a hostname query starts");
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match events.recv_timeout(left) {
                Ok(HostnameResolutionEvent::AddressesFound(_, found)) => {
                    let found = found.iter().map(|ip| ip.to_ip_addr()).collect();
                    return (events, found);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("{host} did not resolve within {WAIT:?}");
    }

    /// Browses `_http._tcp` until the instance named `instance` is resolved.
    fn browse(&self, instance: &str) -> (mdns_sd::Receiver<ServiceEvent>, ResolvedService) {
        let events = self.0.browse("_http._tcp.local.").expect("a browse starts");
        let fullname = format!("{instance}._http._tcp.local.");
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match events.recv_timeout(left) {
                Ok(ServiceEvent::ServiceResolved(service)) if service.fullname == fullname => {
                    return (events, *service);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no {fullname} was browsable within {WAIT:?}");
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // The querier's thread ends with the test process anyway.
        let _ = self.0.shutdown();
    }
}

/// A plain HTTP GET, for `/api/info`.
fn get(host: &str, port: u16, path: &str) -> String {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n");
    request(host, port, &head, "")
}

/// Sends `head` (a request line and headers) and `body` to `ip` and returns
/// the whole answer.
fn request(ip: &str, port: u16, head: &str, body: &str) -> String {
    let mut stream = TcpStream::connect((ip, port)).expect("the board accepts a connection");
    stream
        .set_read_timeout(Some(WAIT))
        .expect("a read timeout can be set");
    write!(stream, "{head}Connection: close\r\n\r\n{body}").expect("the request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the response is read");
    response
}

#[test]
fn the_name_resolves_to_the_board_and_its_service_is_browsable() {
    in_private_network(
        "the_name_resolves_to_the_board_and_its_service_is_browsable",
        || {
            let board = Board::start(&["--bind", "0.0.0.0", "--mdns", "office"]);
            let port = board.port;
            assert_eq!(
                board.banner_urls(),
                [
                    format!("http://office.local:{port}"),
                    format!("http://{LAN_A}:{port}"),
                    format!("http://{LAN_B}:{port}"),
                    format!("http://127.0.0.1:{port}"),
                ],
                "the name first, then the addresses:\n{}",
                board.banner
            );

            let resolver = Resolver::new();
            let expected: HashSet<IpAddr> = [LAN_A, LAN_B]
                .iter()
                .map(|ip| ip.parse().expect("a test address"))
                .collect();
            assert_eq!(resolver.addresses("office.local"), expected);

            let (_, service) = resolver.browse("office");
            assert_eq!(service.host, "office.local.");
            assert_eq!(service.port, port);
            assert_eq!(
                service.txt_properties.get_property_val_str("path"),
                Some("/")
            );

            let info = get(LAN_A, port, "/api/info");
            let urls = info
                .split("\"urls\":[")
                .nth(1)
                .expect("/api/info lists urls");
            assert!(
                urls.starts_with(&format!(
                    "\"http://office.local:{port}\",\"http://{LAN_A}:{port}\""
                )),
                "/api/info lists the name first:\n{info}"
            );

            // A page opened by the name posts with the name as its Origin.
            let body = r#"{"name":"ada","message":"by name"}"#;
            let posted = request(
                LAN_A,
                port,
                &format!(
                    "POST /api/messages HTTP/1.1\r\nHost: office.local:{port}\r\n\
                     Origin: http://office.local:{port}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n",
                    body.len()
                ),
                body,
            );
            assert!(
                posted.starts_with("HTTP/1.1 20"),
                "a post by the name is taken:\n{posted}"
            );
            board.terminate();
        },
    );
}

#[test]
fn a_board_on_both_ip_versions_gives_its_name_ipv6_addresses_too() {
    in_private_network(
        "a_board_on_both_ip_versions_gives_its_name_ipv6_addresses_too",
        || {
            let board = Board::start(&["--bind", "::", "--mdns", "dual"]);
            let resolver = Resolver::new();
            let expected: HashSet<IpAddr> = [LAN_A, LAN_B, LAN_V6]
                .iter()
                .map(|ip| ip.parse().expect("a test address"))
                .collect();
            // A and AAAA records may arrive in separate answers.
            let deadline = std::time::Instant::now() + WAIT;
            let mut found = resolver.addresses("dual.local");
            while found != expected && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                found.extend(resolver.addresses("dual.local"));
            }
            assert_eq!(found, expected);
            board.terminate();
        },
    );
}

#[test]
fn a_second_board_with_a_taken_name_takes_name_2_and_says_so() {
    in_private_network(
        "a_second_board_with_a_taken_name_takes_name_2_and_says_so",
        || {
            let first = Board::start(&["--bind", LAN_A, "--mdns", "twin"]);
            let second = Board::start(&["--bind", LAN_B, "--mdns", "twin"]);
            assert!(
                second.banner_urls()[0] == format!("http://twin-2.local:{}", second.port),
                "the second board is twin-2.local:\n{}",
                second.banner
            );
            assert!(
                second.banner.contains(
                    "twin.local is already taken on this network, so this board is twin-2.local."
                ),
                "the banner says why:\n{}",
                second.banner
            );
            assert!(second.logs("twin-2.local"), "the log says so too");

            let resolver = Resolver::new();
            let a: IpAddr = LAN_A.parse().expect("a test address");
            let b: IpAddr = LAN_B.parse().expect("a test address");
            assert_eq!(resolver.addresses("twin.local"), HashSet::from([a]));
            assert_eq!(resolver.addresses("twin-2.local"), HashSet::from([b]));
            let (_, service) = resolver.browse("twin (2)");
            assert_eq!(
                (service.host.as_str(), service.port),
                ("twin-2.local.", second.port)
            );
            second.terminate();
            first.terminate();
        },
    );
}

#[test]
fn shutdown_withdraws_the_name_and_the_service_at_once() {
    in_private_network(
        "shutdown_withdraws_the_name_and_the_service_at_once",
        || {
            let board = Board::start(&["--bind", LAN_A, "--mdns", "leaving"]);
            let resolver = Resolver::new();
            let (services, _) = resolver.browse("leaving");
            let (hosts, _) = resolver.watch("leaving.local");
            board.terminate();
            // Without goodbye packets (TTL 0) a resolver would keep the
            // records for their TTL, 2 minutes for the address and 75 for
            // the service's PTR; with them it drops them about a second
            // later (RFC 6762, section 10.1).
            let fullname = "leaving._http._tcp.local.";
            let deadline = Instant::now() + Duration::from_secs(5);
            let left = || deadline.saturating_duration_since(Instant::now());
            let service_removed = std::iter::from_fn(|| services.recv_timeout(left()).ok()).any(
                |event| matches!(event, ServiceEvent::ServiceRemoved(_, name) if name == fullname),
            );
            assert!(
                service_removed,
                "the resolver still had {fullname} 5 s after the board stopped"
            );
            let address_removed = std::iter::from_fn(|| hosts.recv_timeout(left()).ok())
                .any(|event| matches!(event, HostnameResolutionEvent::AddressesRemoved(..)));
            assert!(
                address_removed,
                "leaving.local still resolved 5 s after the board stopped"
            );
        },
    );
}
