//! The web client in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, spoken by fantoccini), against the real binary
//! on 127.0.0.1.
//!
//! Each test starts its own board, its own chromedriver on a free loopback
//! port and one fresh Chromium profile per page; all of them are stopped when
//! the test ends, pass or fail. Without Chromium and chromedriver each test
//! prints a loud SKIPPED line and passes, unless `LANBOARD_REQUIRE_BROWSER=1`
//! (set in CI), which turns a missing browser into a failure.
//! The tests of a board kept in Redis also start their own `redis-server`
//! (`common::redis`); without one they say SKIPPED and pass, except under
//! `CI=true`.
//!
//! The `Page` helpers below wrap fantoccini's client so the tests read as
//! what a person does (`type_into`, `click`, `wait_for`); the few commands
//! fantoccini has no method for (a cookie's flags, chromedriver's DevTools
//! bridge) go through `Page::must` as raw WebDriver commands.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::redis::{Persistence, Redis};
use common::{Board, WAIT};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::Locator;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// How long one WebDriver command may take (navigation waits for the page load).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two looks at the page while waiting for something.
const POLL: Duration = Duration::from_millis(50);
/// The key WebDriver sends for Enter.
const ENTER: &str = "\u{E007}";
/// Tab, Escape and Backspace, as WebDriver sends them.
const TAB: &str = "\u{E004}";
const ESCAPE: &str = "\u{E00C}";
const BACKSPACE: &str = "\u{E003}";
/// The arrow keys, as WebDriver sends them.
const ARROW_UP: &str = "\u{E013}";
const ARROW_DOWN: &str = "\u{E015}";
/// Shift and Control: typed into an element, they stay down until `NO_MODIFIERS`.
const SHIFT: &str = "\u{E008}";
const CONTROL: &str = "\u{E009}";
const NO_MODIFIERS: &str = "\u{E000}";

// ---- Finding the browser ---------------------------------------------------

fn tool(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn chromium_path() -> PathBuf {
    tool("LANBOARD_CHROMIUM", "/usr/bin/chromium")
}

fn chromedriver_path() -> PathBuf {
    tool("LANBOARD_CHROMEDRIVER", "/usr/bin/chromedriver")
}

/// Starts chromedriver, or returns `None` after a loud SKIPPED line when the
/// browser is not installed. Panics instead when `LANBOARD_REQUIRE_BROWSER=1`.
fn chrome() -> Option<Chrome> {
    let (chromium, driver) = (chromium_path(), chromedriver_path());
    if chromium.is_file() && driver.is_file() {
        return Some(Chrome::start(&driver, &chromium));
    }
    let problem = format!(
        "chromium/chromedriver not found (looked for {} and {}; install the Debian packages \
         chromium and chromium-driver, or set LANBOARD_CHROMIUM and LANBOARD_CHROMEDRIVER)",
        chromium.display(),
        driver.display()
    );
    if std::env::var("LANBOARD_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("LANBOARD_REQUIRE_BROWSER=1 but {problem}");
    }
    eprintln!("\n*** SKIPPED: {problem} ***\n");
    None
}

// ---- WebDriver through fantoccini -------------------------------------------

/// Awaits one WebDriver exchange, for at most `COMMAND_TIMEOUT`.
async fn in_time<T>(
    what: &str,
    exchange: impl std::future::Future<Output = Result<T, CmdError>>,
) -> Result<T, CmdError> {
    tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("chromedriver took over {COMMAND_TIMEOUT:?} for {what}"))
}

/// A command of this session that fantoccini has no method for: `method` on
/// `/session/{id}{path}` with a JSON `body` (none when `Null`).
#[derive(Debug)]
struct SessionCommand {
    method: http::Method,
    path: String,
    body: Value,
}

impl WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        // A Page exists only once its session was created (see `Chrome::open`).
        let id = session_id.expect("a page's commands are sent within its session");
        base_url.join(&format!("session/{id}{}", self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        // chromedriver refuses a body on GET, even `null`.
        let body = (!self.body.is_null()).then(|| self.body.to_string());
        (self.method.clone(), body)
    }
}

/// A chromedriver process on a free loopback port; killed when dropped.
struct Chrome {
    process: Child,
    addr: SocketAddr,
    chromium: PathBuf,
}

impl Chrome {
    fn start(driver: &std::path::Path, chromium: &std::path::Path) -> Chrome {
        // With port 0 chromedriver takes a free port on one loopback family
        // and then binds the same number on the other, which another test's
        // socket may hold by then ("IPv4 port not available. Exiting...").
        // That is a lost race, not a broken driver: start it again.
        const ATTEMPTS: usize = 5;
        let mut failures = String::new();
        for attempt in 1..=ATTEMPTS {
            match Chrome::launch(driver) {
                Ok((process, port)) => {
                    return Chrome {
                        process,
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        chromium: chromium.to_path_buf(),
                    }
                }
                Err(printed) if printed.contains("port not available") => {
                    failures.push_str(&format!("attempt {attempt}:\n{printed}"));
                }
                Err(printed) => {
                    panic!("chromedriver printed no port within {WAIT:?}:\n{printed}")
                }
            }
        }
        panic!("chromedriver found no free port in {ATTEMPTS} attempts:\n{failures}")
    }

    /// Starts chromedriver on port 0 and waits for the port it prints; on
    /// failure, returns what it printed after making sure it has exited.
    fn launch(driver: &std::path::Path) -> Result<(Child, u16), String> {
        // Its own process group holds the browsers it starts, so that Drop
        // can end them all even when a session was never closed.
        let mut process = Command::new(driver)
            .arg("--port=0")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let stdout = process
            .stdout
            .take()
            .expect("chromedriver's stdout is piped");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut printed = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                // It may have exited already; kill and wait either way.
                let _ = process.kill();
                let _ = process.wait();
                return Err(printed);
            };
            printed.push_str(&line);
            printed.push('\n');
            if let Some(port) = line
                .strip_prefix("ChromeDriver was started successfully on port ")
                .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
            {
                return Ok((process, port));
            }
        }
    }

    /// A new browser with its own empty profile, showing `url`.
    async fn open(&self, url: &str, screen: Screen) -> Page {
        let profile = tempfile::tempdir().expect("a temp dir for the browser profile");
        let (width, height) = screen.size();
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // No traffic but to the board on 127.0.0.1: no QUIC probes, no
            // update checks, no sync, no first-run pages.
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-domain-reliability".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let downloads = profile.path().join("downloads");
        let capabilities = json!({
            "browserName": "chrome",
            // An alert must stay open so a test can see it, not be dismissed.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": args,
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("json!({{..}}) is an object")
        };
        // chromedriver listens on loopback only, so plain HTTP: no TLS connector.
        let mut builder = fantoccini::ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let driver = format!("http://{}", self.addr);
        let client = tokio::time::timeout(COMMAND_TIMEOUT, builder.connect(&driver))
            .await
            .unwrap_or_else(|_| panic!("Chromium did not start within {COMMAND_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("Chromium did not start: {e}"));
        let page = Page {
            client,
            downloads,
            _profile: profile,
        };
        if screen == Screen::Phone {
            // A phone's viewport (and its meta-viewport rules), not just a narrow window.
            page.cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 3, "mobile": true}),
            )
            .await;
        }
        page.goto(url).await;
        page
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory effects. The group is chromedriver's
        // own (see `start`), so this ends it and every browser it started.
        unsafe { libc::kill(-(self.process.id() as i32), libc::SIGKILL) };
        // It is dead either way; wait only reaps it.
        let _ = self.process.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Screen {
    Desktop,
    Phone,
}

impl Screen {
    fn size(self) -> (u32, u32) {
        match self {
            Screen::Desktop => (1280, 800),
            Screen::Phone => (390, 844),
        }
    }
}

/// One browser session showing one page. Dropping it ends the session in
/// the background (fantoccini's session task sends the DELETE); a browser
/// still open when the test ends goes with chromedriver's process group.
struct Page {
    client: fantoccini::Client,
    /// Where the browser saves downloads, inside its profile.
    downloads: PathBuf,
    _profile: tempfile::TempDir,
}

impl Page {
    /// A raw WebDriver command of this session: `method` on `path` (after
    /// `/session/{id}`) with a JSON `body` (`Null` for none); returns `value`.
    async fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, CmdError> {
        let command = SessionCommand {
            method: method
                .parse()
                .unwrap_or_else(|e| panic!("{method} is not an HTTP method: {e}")),
            path: path.to_owned(),
            body,
        };
        in_time(&format!("{method} {path}"), self.client.issue_cmd(command)).await
    }

    async fn must(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, path, body.clone())
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} {body} failed: {e}"))
    }

    async fn goto(&self, url: &str) {
        in_time(&format!("going to {url}"), self.client.goto(url))
            .await
            .unwrap_or_else(|e| panic!("going to {url} failed: {e}"));
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    async fn run(&self, script: &str) -> Value {
        self.run_with(script, json!([])).await
    }

    /// Runs `script` with `args` (a JSON array) as its `arguments`.
    async fn run_with(&self, script: &str, args: Value) -> Value {
        let Value::Array(list) = args.clone() else {
            panic!("the arguments of a script are an array, not {args}")
        };
        in_time("a script", self.client.execute(script, list))
            .await
            .unwrap_or_else(|e| panic!("the script failed ({e}) with {args}:\n{script}"))
    }

    /// Polls `script` until it returns something truthy, for at most `WAIT`.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.run(script).await;
            if truthy(&value) {
                return value;
            }
            if Instant::now() > deadline {
                let status = self
                    .run("return document.getElementById('status')?.textContent")
                    .await;
                panic!(
                    "waited {WAIT:?} for {what}; the check returned {value}; connection status: {status}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_connected(&self) {
        self.wait_for(
            "the page to connect",
            "return document.getElementById('status').dataset.state === 'connected'",
        )
        .await;
    }

    /// The ids of the messages in the list, top to bottom.
    async fn ids(&self) -> Vec<u64> {
        let ids = self
            .run("return [...document.querySelectorAll('#messages > *')].map(m => Number(m.dataset.id))")
            .await;
        serde_json::from_value(ids).expect("ids are numbers")
    }

    async fn find(&self, css: &str) -> Element {
        in_time(
            &format!("finding {css}"),
            self.client.find(Locator::Css(css)),
        )
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Types `text` into the element, as a person at a keyboard would.
    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        in_time(&format!("typing into {css}"), element.send_keys(text))
            .await
            .unwrap_or_else(|e| panic!("typing {text:?} into {css} failed: {e}"));
    }

    /// Presses `keys` one after the other wherever the focus is, as a
    /// person at a keyboard would (no element is picked or focused first).
    async fn press(&self, keys: &str) {
        let mut typing = KeyActions::new("keyboard".to_owned());
        for key in keys.chars() {
            typing = typing
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        in_time(
            &format!("pressing {keys:?}"),
            self.client.perform_actions(typing),
        )
        .await
        .unwrap_or_else(|e| panic!("pressing {keys:?} failed: {e}"));
    }

    async fn clear(&self, css: &str) {
        let element = self.find(css).await;
        in_time(&format!("clearing {css}"), element.clear())
            .await
            .unwrap_or_else(|e| panic!("clearing {css} failed: {e}"));
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        in_time(&format!("clicking {css}"), element.click())
            .await
            .unwrap_or_else(|e| panic!("clicking {css} failed: {e}"));
    }

    async fn title(&self) -> String {
        in_time("the title", self.client.title())
            .await
            .unwrap_or_else(|e| panic!("reading the title failed: {e}"))
    }

    /// The text of an open alert, confirm or prompt, if any.
    async fn alert(&self) -> Option<String> {
        match in_time("the alert text", self.client.get_alert_text()).await {
            Ok(text) => Some(text),
            Err(e) if e.is_no_such_alert() => None,
            Err(e) => panic!("asking for an alert failed: {e}"),
        }
    }

    async fn minimize(&self) {
        in_time("minimizing", self.client.minimize_window())
            .await
            .unwrap_or_else(|e| panic!("minimizing the window failed: {e}"));
    }

    async fn restore(&self) {
        let (width, height) = Screen::Desktop.size();
        in_time(
            "restoring the window",
            self.client.set_window_size(width, height),
        )
        .await
        .unwrap_or_else(|e| panic!("restoring the window failed: {e}"));
    }

    /// A Chrome DevTools command, through chromedriver's `goog/cdp/execute`.
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.must(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": cmd, "params": params}),
        )
        .await
    }

    /// Ends the session: chromedriver closes the browser.
    async fn quit(self) {
        in_time("ending the session", self.client.close())
            .await
            .unwrap_or_else(|e| panic!("ending the session failed: {e}"));
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Posts `count` messages over one WebSocket without waiting for each ack,
/// so the board commits them in batches; needs a board without a rate limit.
async fn post_many(board: &Board, count: u64) {
    let mut client = common::Client::connect(&board.ws_url()).await;
    for n in 1..=count {
        client.add("Logger", &format!("entry {n}"), n).await;
    }
    let mut acked = 0;
    while acked < count {
        let frame = client.next_reply().await;
        match frame["event"].as_str() {
            Some("ack") => acked += 1,
            Some("message-added") => {}
            _ => panic!("unexpected reply while posting: {frame}"),
        }
    }
}

/// Posts a message through the HTTP API and returns it.
async fn post(board: &Board, name: &str, message: &str) -> Value {
    let body = json!({"name": name, "message": message}).to_string();
    let response = common::post(board.addr, "/api/messages", &body).await;
    assert_eq!(
        response.status, 201,
        "POST /api/messages: {}",
        response.body
    );
    response.json()
}

/// Script that puts what the test sees of the top message of the list in
/// `m` (null for an empty list); append a `return`.
const TOP_MESSAGE: &str = "
    const m = (() => {
        const top = document.querySelector('#messages > *');
        if (!top) return null;
        const time = top.querySelector('time');
        return {
            id: Number(top.dataset.id),
            name: top.querySelector('.name').textContent,
            body: top.querySelector('.body').textContent,
            time: time.textContent,
            title: time.title,
            datetime: time.dateTime,
        };
    })();";

/// Script that puts what the reader sees of the `#sending-paused` notice in
/// `notice` (null while it is hidden, else its reason and text); append a `return`.
const PAUSED_NOTICE: &str = "
    const n = document.getElementById('sending-paused');
    const notice = n.hidden || n.getClientRects().length === 0
        ? null
        : {reason: n.dataset.reason, text: n.textContent.replace(/\\s+/g, ' ').trim()};";

/// Script returning the posts the page keeps in localStorage until confirmed.
const STORED_OUTBOX: &str = "return JSON.parse(localStorage.getItem('lanboard.outbox') || '[]')";

/// Makes the page note every frame it sends over WebSocket in
/// `window.__sent` and the address of every WebSocket it opens from now on
/// in `window.__urls`, in this document and in every one it loads later (a
/// script added through DevTools runs before the page's own).
async fn record_websockets(page: &Page) {
    const RECORDER: &str = "
        if (!window.__sent) {
            window.__sent = [];
            window.__urls = [];
            const send = WebSocket.prototype.send;
            WebSocket.prototype.send = function (data) {
                window.__sent.push(String(data));
                return send.call(this, data);
            };
            window.WebSocket = class extends WebSocket {
                constructor(url, protocols) {
                    super(url, protocols);
                    window.__urls.push(String(url));
                }
            };
        }";
    page.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": RECORDER }),
    )
    .await;
    page.run(RECORDER).await;
}

/// Reloads the page with its WebSockets kept in `window.__sockets`, its
/// console warnings in `window.__warnings` and its uncaught errors in
/// `window.__errors`, in this document and every one it loads later; waits
/// for the page to connect.
async fn watch_page(page: &Page, url: &str) {
    const WATCHER: &str = "
        window.__sockets = [];
        window.__warnings = [];
        window.__errors = [];
        window.WebSocket = class extends WebSocket {
            constructor(url, protocols) {
                super(url, protocols);
                window.__sockets.push(this);
            }
        };
        const warn = console.warn;
        console.warn = (...args) => {
            window.__warnings.push(args.map(String).join(' '));
            warn.apply(console, args);
        };
        window.addEventListener('error', (e) => window.__errors.push(String(e.message)));
        window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason)));";
    page.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": WATCHER }),
    )
    .await;
    page.goto(url).await;
    page.wait_connected().await;
}

/// Hands `frames` (JSON values) to the page as if its open WebSocket had
/// received them from the board; needs `watch_page`.
async fn deliver(page: &Page, frames: &[Value]) {
    let texts: Vec<String> = frames.iter().map(Value::to_string).collect();
    page.run_with(
        "const socket = window.__sockets.filter(s => s.readyState === WebSocket.OPEN).at(-1);
         for (const data of arguments[0]) socket.dispatchEvent(new MessageEvent('message', {data}));",
        json!([texts]),
    )
    .await;
}

/// Makes the page keep the `add-message` frames it sends in `window.__held`
/// instead of sending them, until `release_posts`: its posts stay on their
/// way for as long as a test needs.
async fn hold_posts(page: &Page) {
    page.run(
        "window.__held = [];
         const send = WebSocket.prototype.send;
         window.__release = () => {
             for (const [socket, data] of window.__held.splice(0)) send.call(socket, data);
         };
         WebSocket.prototype.send = function (data) {
             if (JSON.parse(data).event === 'add-message') window.__held.push([this, data]);
             else send.call(this, data);
         };",
    )
    .await;
}

async fn release_posts(page: &Page) {
    page.run("window.__release()").await;
}

/// The sizes of the largest `Set` and the largest `Map` alive in the page,
/// found through DevTools (after the garbage collection that
/// `Runtime.queryObjects` does), without the page exposing anything.
async fn largest_collections(page: &Page) -> (u64, u64) {
    let mut sizes = [0, 0];
    for (size, class) in sizes.iter_mut().zip(["Set", "Map"]) {
        let prototype = page
            .cdp(
                "Runtime.evaluate",
                json!({ "expression": format!("{class}.prototype") }),
            )
            .await;
        let prototype = prototype["result"]["objectId"]
            .as_str()
            .unwrap_or_else(|| panic!("{class}.prototype has an object id: {prototype}"));
        let found = page
            .cdp(
                "Runtime.queryObjects",
                json!({ "prototypeObjectId": prototype }),
            )
            .await;
        let found = found["objects"]["objectId"]
            .as_str()
            .unwrap_or_else(|| panic!("queryObjects returns an array: {found}"));
        let largest = page
            .cdp(
                "Runtime.callFunctionOn",
                json!({
                    "objectId": found,
                    "functionDeclaration": "function () { return Math.max(0, ...this.map(c => c.size)); }",
                    "returnByValue": true,
                }),
            )
            .await;
        *size = largest["result"]["value"]
            .as_u64()
            .unwrap_or_else(|| panic!("a size: {largest}"));
    }
    (sizes[0], sizes[1])
}

/// The `data` of every `add-message` the page sent since it was loaded.
async fn sent_posts(page: &Page) -> Vec<Value> {
    let posts = page
        .run(
            "return window.__sent.map(f => JSON.parse(f))
                 .filter(f => f.event === 'add-message').map(f => f.data)",
        )
        .await;
    serde_json::from_value(posts).expect("a list of posts")
}

/// Whether `cid` is what the page promises: 32 lowercase hex digits.
fn is_page_cid(cid: &Value) -> bool {
    cid.as_str()
        .is_some_and(|c| c.len() == 32 && c.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Stops the board's process without closing anything (SIGSTOP): its sockets
/// stay open and take what is sent, and nothing is read or answered.
/// Waits for the "Sending is paused" notice and checks its reason
/// (`connection` or `storage`).
async fn expect_paused(page: &Page, reason: &str) {
    let notice = page
        .wait_for(
            "the paused notice",
            &format!("{PAUSED_NOTICE} return notice;"),
        )
        .await;
    assert_eq!(notice["reason"], reason, "{notice}");
    assert!(
        notice["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Sending is paused.")),
        "{notice}"
    );
}

fn freeze(board: &Board) {
    // SAFETY: kill(2) on the test's own child has no memory-safety effects.
    unsafe { libc::kill(board.pid() as i32, libc::SIGSTOP) };
}

/// How many messages on the board, as the HTTP API lists them, read `text`.
async fn stored_copies(board: &Board, text: &str) -> usize {
    let response = common::get(board.addr, "/api/messages?since=0&limit=500").await;
    assert_eq!(response.status, 200, "GET /api/messages: {}", response.body);
    let messages: Vec<Value> = serde_json::from_value(response.json()).expect("a list");
    messages.iter().filter(|m| m["message"] == text).count()
}

/// Script defining `seen(id)`: what the reader sees of message `id`, or null
/// when the page does not show it: its text, its visible "edited" mark, the
/// labels of its visible buttons, and whether it is being edited; append a
/// `return`.
const SEEN: &str = "
    const seen = (id) => {
        const item = document.querySelector(`#messages > [data-id=\"${id}\"]`);
        if (!item) return null;
        const shown = (e) => e !== null && !e.hidden && e.getClientRects().length > 0;
        const mark = item.querySelector('.edited');
        return {
            body: item.querySelector('.body').textContent,
            edited: shown(mark) ? {text: mark.textContent, title: mark.title, tabIndex: mark.tabIndex} : null,
            actions: [...item.querySelectorAll('.actions button')].filter(shown).map(b => b.textContent),
            editing: shown(item.querySelector('.edit-box')),
        };
    };";

/// Script returning what has the focus: `{post, what}`, the id of the message
/// it is in (null outside the list) and its `data-action`, or `edit-box`.
const FOCUSED: &str = "
    const focused = document.activeElement;
    return {
        post: Number(focused.closest('#messages > *')?.dataset.id) || null,
        what: focused.matches('.edit-box') ? 'edit-box' : focused.dataset.action || focused.tagName,
    };";

/// Script returning the text of the `#operator-badge` while it is shown, else false.
const OPERATOR_BADGE: &str = "
    const badge = document.getElementById('operator-badge');
    return !badge.hidden && badge.getClientRects().length > 0
        && badge.textContent.replace(/\\s+/g, ' ').trim();";

/// Script that reads a time `HH:MM` (or `D Mon, HH:MM`) just before the
/// final full stop of `arguments[0]` and returns how many minutes from now
/// it is on the page's clock, or null when the text names no time.
const MINUTES_UNTIL: &str = "
    const [, hours, minutes] = /(\\d\\d):(\\d\\d)\\.$/.exec(arguments[0]) || [];
    if (hours === undefined) return null;
    const now = new Date();
    const until = new Date(now);
    until.setHours(Number(hours), Number(minutes), 0, 0);
    if (until < now) until.setDate(until.getDate() + 1);
    return Math.round((until - now) / 60000);";

/// Posts a message through the HTTP API with the author key `key`, which
/// may edit and delete it later; returns it.
async fn post_with_key(board: &Board, name: &str, message: &str, key: &str) -> Value {
    let body = json!({"name": name, "message": message, "key": key}).to_string();
    let response = common::post(board.addr, "/api/messages", &body).await;
    assert_eq!(
        response.status, 201,
        "POST /api/messages: {}",
        response.body
    );
    response.json()
}

/// Edits message `id` through the HTTP API with `key`.
async fn edit_over_http(board: &Board, id: u64, key: &str, message: &str) {
    let path = format!("/api/messages/{id}");
    let body = json!({ "message": message }).to_string();
    let response = common::http(board.addr, "PATCH", &path, &[("Lanboard-Key", key)], &body).await;
    assert_eq!(response.status, 200, "PATCH {path}: {}", response.body);
}

/// Deletes message `id` through the HTTP API with `key`.
async fn delete_over_http(board: &Board, id: u64, key: &str) {
    let path = format!("/api/messages/{id}");
    let response = common::http(board.addr, "DELETE", &path, &[("Lanboard-Key", key)], "").await;
    assert_eq!(response.status, 204, "DELETE {path}: {}", response.body);
}

/// Runs the real `lanboard operator-link` for the board's data file (with
/// `extra` flags), checks that it printed one link to the board's port and
/// nothing else, and returns the operator secret from the link's fragment.
fn operator_secret(board: &Board, extra: &[&str]) -> String {
    let data = board.data.display().to_string();
    let port = board.addr.port().to_string();
    let mut args = vec!["operator-link", "--data", &data, "--port", &port];
    args.extend_from_slice(extra);
    // Any directory will do: the data file is named by its full path.
    let (status, stdout, stderr) = common::run(&args, &std::env::temp_dir());
    assert!(
        status.success(),
        "lanboard {args:?}: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let [link] = stdout.lines().collect::<Vec<_>>()[..] else {
        panic!("lanboard {args:?} prints exactly one line, not:\n{stdout}");
    };
    let (base, secret) = link
        .split_once("/#operator=")
        .unwrap_or_else(|| panic!("not an operator link: {link}"));
    assert!(
        base.starts_with("http://") && base.ends_with(&format!(":{port}")),
        "the link is to the board's port: {link}"
    );
    secret.to_owned()
}

/// Makes every WebSocket the page opens from now on fail at once, while
/// `offline` (the page keeps retrying, as when its network is gone); when
/// back online, tells the page so, as the browser does, so that it tries at
/// once rather than after its backoff.
async fn keep_offline(page: &Page, offline: bool) {
    page.run_with(
        "if (!window.__Online) {
             window.__Online = window.WebSocket;
             window.WebSocket = class extends window.__Online {
                 constructor(url, protocols) {
                     if (window.__offline) throw new DOMException('offline for the test', 'NetworkError');
                     super(url, protocols);
                 }
             };
         }
         window.__offline = arguments[0];
         if (!arguments[0]) window.dispatchEvent(new Event('online'));",
        json!([offline]),
    )
    .await;
}

// ---- Tests -----------------------------------------------------------------

#[tokio::test]
async fn a_message_typed_in_one_browser_appears_in_another_on_top_with_its_time() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let alice = chrome.open(&board.url(), Screen::Desktop).await;
    let bob = chrome.open(&board.url(), Screen::Desktop).await;
    alice.wait_connected().await;
    bob.wait_connected().await;

    alice.type_into("#name", "Alice").await;
    alice
        .type_into("#message", &format!("Hello from Alice{ENTER}"))
        .await;
    let top = bob
        .wait_for(
            "Alice's message at the top of Bob's list",
            &format!("{TOP_MESSAGE} return m && m.body === 'Hello from Alice' && m;"),
        )
        .await;
    assert_eq!(top["name"], "Alice");
    let time = top["time"].as_str().expect("a time");
    assert!(
        time.len() == 5
            && time.as_bytes()[2] == b':'
            && time.replace(':', "").parse::<u16>().is_ok(),
        "the time reads HH:MM, not {time:?}"
    );
    assert!(
        top["title"].as_str().is_some_and(|t| t.len() > time.len()),
        "the full date is in the title: {top}"
    );
    assert!(top["datetime"].as_str().is_some_and(|d| d.contains('T')));

    // The box empties once the board has the message; the name stays.
    alice
        .wait_for(
            "Alice's message box to empty after the ack",
            "return document.getElementById('message').value === ''",
        )
        .await;
    assert_eq!(
        alice
            .run("return document.getElementById('name').value")
            .await,
        "Alice"
    );

    // The button works too, and the newest message goes on top.
    alice.type_into("#message", "Second message").await;
    let label = alice
        .run("return document.querySelector('#create-message button[type=submit]').textContent")
        .await;
    assert_eq!(label, "Create Message");
    alice.click("#create-message button[type=submit]").await;
    bob.wait_for(
        "the second message on top of Bob's list",
        "return document.querySelector('#messages > * .body')?.textContent === 'Second message'",
    )
    .await;
    assert_eq!(bob.ids().await, [2, 1]);
    assert_eq!(alice.ids().await, [2, 1]);

    // The name is remembered by the browser.
    alice.goto(&board.url()).await;
    alice.wait_connected().await;
    assert_eq!(
        alice
            .run("return document.getElementById('name').value")
            .await,
        "Alice"
    );
}

#[tokio::test]
async fn markup_in_names_and_messages_shows_as_text_and_runs_nothing() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let writer = chrome.open(&board.url(), Screen::Desktop).await;
    let reader = chrome.open(&board.url(), Screen::Desktop).await;
    writer.wait_connected().await;
    reader.wait_connected().await;

    let name = r#"<img src=x onerror="window.__xss=1">"#;
    let message =
        r#"<script>window.__xss=2</script><img src=x onerror="window.__xss=3"> <b>&amp;</b>"#;
    writer.type_into("#name", name).await;
    writer
        .type_into("#message", &format!("{message}{ENTER}"))
        .await;
    post(
        &board,
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
    )
    .await;

    for page in [&writer, &reader] {
        page.wait_for(
            "both messages",
            "return document.querySelectorAll('#messages > *').length === 2",
        )
        .await;
        // Give a broken image the moment it would need to fire onerror.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = page
            .run(
                "const items = [...document.querySelectorAll('#messages > *')];
                 return {
                     names: items.map(m => m.querySelector('.name').textContent),
                     bodies: items.map(m => m.querySelector('.body').textContent),
                     elements: document.querySelectorAll('#messages img, #messages script, #messages b').length,
                     xss: typeof window.__xss,
                 };",
            )
            .await;
        assert_eq!(
            seen["names"],
            json!(["<script>alert(1)</script>", name]),
            "names are shown literally"
        );
        assert_eq!(
            seen["bodies"],
            json!(["<img src=x onerror=alert(1)>", message]),
            "messages are shown literally"
        );
        assert_eq!(seen["elements"], 0, "no element was made from user text");
        assert_eq!(seen["xss"], "undefined", "no script from user text ran");
        assert_eq!(page.alert().await, None, "no alert opened");
    }
}

#[tokio::test]
async fn after_a_restart_the_page_reconnects_and_shows_messages_from_the_outage_once() {
    let Some(chrome) = chrome() else { return };
    let mut board = Board::start(&[]);
    for n in 1..=3 {
        post(&board, "Before", &format!("before the restart {n}")).await;
    }
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    page.wait_for(
        "the first three messages",
        "return document.querySelectorAll('#messages > *').length === 3",
    )
    .await;

    board.stop();
    page.wait_for(
        "the page to notice the board is gone",
        "const s = document.getElementById('status');
         return s.dataset.state === 'reconnecting' && s.textContent === 'reconnecting…'",
    )
    .await;
    assert_eq!(
        page.run("return document.getElementById('send').disabled")
            .await,
        true,
        "nothing can be sent while disconnected"
    );
    page.type_into("#message", "typed during the outage").await;

    // Messages written while the page is still away must arrive on resume.
    board.restart();
    post(&board, "During", "written while the page was away 1").await;
    post(&board, "During", "written while the page was away 2").await;
    page.wait_connected().await;
    page.wait_for(
        "the messages of the outage",
        "return document.querySelectorAll('#messages > *').length >= 5",
    )
    .await;
    assert_eq!(
        page.ids().await,
        [5, 4, 3, 2, 1],
        "every message exactly once"
    );
    assert_eq!(
        page.run("return document.getElementById('message').value")
            .await,
        "typed during the outage",
        "unsent text survives the outage"
    );

    page.type_into("#message", ENTER).await;
    page.wait_for(
        "the message typed during the outage",
        "return document.querySelector('#messages > * .body')?.textContent === 'typed during the outage'",
    )
    .await;
    // A late duplicate would come within a moment; give it one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(page.ids().await, [6, 5, 4, 3, 2, 1]);
}

#[tokio::test]
async fn the_title_counts_unread_messages_while_hidden_and_clears_when_shown() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    assert_eq!(page.title().await, "lanboard");

    page.minimize().await;
    page.wait_for("the page to be hidden", "return document.hidden === true")
        .await;
    for n in 1..=3 {
        post(&board, "Colleague", &format!("while you were away {n}")).await;
    }
    page.wait_for(
        "three unread in the title",
        "return document.title === '(3) lanboard'",
    )
    .await;
    assert_eq!(page.run("return document.hidden").await, true);
    let icon = page
        .run("return document.getElementById('favicon').href")
        .await;
    assert!(
        icon.as_str()
            .is_some_and(|i| i.starts_with("data:image/png")),
        "the favicon carries a dot: {icon}"
    );

    page.restore().await;
    page.wait_for("the page to be visible", "return document.hidden === false")
        .await;
    page.wait_for("the title to clear", "return document.title === 'lanboard'")
        .await;
    let icon = page
        .run("return document.getElementById('favicon').href")
        .await;
    assert!(
        icon.as_str().is_some_and(|i| i.ends_with("/favicon.svg")),
        "the plain favicon is back: {icon}"
    );
    assert_eq!(page.ids().await, [3, 2, 1]);
}

#[tokio::test]
async fn the_online_count_follows_pages_opening_and_closing() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let first = chrome.open(&board.url(), Screen::Desktop).await;
    first.wait_connected().await;
    let online = "return document.getElementById('online').textContent";
    first
        .wait_for("1 online", &format!("{online} === '1 online'"))
        .await;

    let second = chrome.open(&board.url(), Screen::Desktop).await;
    second.wait_connected().await;
    first
        .wait_for(
            "2 online on the first page",
            &format!("{online} === '2 online'"),
        )
        .await;
    second
        .wait_for(
            "2 online on the second page",
            &format!("{online} === '2 online'"),
        )
        .await;

    second.quit().await;
    first
        .wait_for(
            "1 online after the second page closed",
            &format!("{online} === '1 online'"),
        )
        .await;
}

#[tokio::test]
async fn the_wall_shows_new_messages_live_and_has_no_form() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    post(&board, "Reception", "Visitors: please sign in at the desk").await;
    let wall = chrome
        .open(&format!("{}/wall", board.url()), Screen::Desktop)
        .await;
    wall.wait_connected().await;
    let form = "return {
        form: document.getElementById('create-message') !== null,
        fields: [...document.querySelectorAll('input, textarea')]
            .filter(field => field.getClientRects().length > 0).length,
        wall: document.documentElement.classList.contains('wall'),
    }";
    assert_eq!(
        wall.run(form).await,
        json!({"form": false, "fields": 0, "wall": true})
    );

    post(
        &board,
        "Facilities",
        "The lift on the east side is back in service",
    )
    .await;
    wall.wait_for(
        "the new message on top of the wall",
        "return document.querySelector('#messages > * .body')?.textContent === 'The lift on the east side is back in service'",
    )
    .await;
    assert_eq!(wall.ids().await, [2, 1]);
    let sizes = wall
        .run(
            "const bodies = document.querySelectorAll('#messages .body');
             return [...bodies].map(b => parseFloat(getComputedStyle(b).fontSize));",
        )
        .await;
    let sizes: Vec<f64> = serde_json::from_value(sizes).expect("font sizes");
    assert!(
        sizes[0] > sizes[1] * 1.5,
        "the newest message is the prominent one: {sizes:?}"
    );

    // `?wall` is the same view.
    wall.goto(&format!("{}/?wall", board.url())).await;
    wall.wait_connected().await;
    assert_eq!(
        wall.run(form).await,
        json!({"form": false, "fields": 0, "wall": true})
    );
}

#[tokio::test]
async fn show_older_reaches_the_first_message_of_a_long_history_without_gaps_or_duplicates() {
    const TOTAL: u64 = 700;
    let Some(chrome) = chrome() else { return };
    // The rate limit is off: 700 posts from one connection would take a minute.
    let board = Board::start(&["--rate-limit", "0"]);
    post_many(&board, TOTAL).await;

    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    page.wait_for(
        "the newest 200",
        "return document.querySelectorAll('#messages > *').length === 200",
    )
    .await;
    let first_page = page.ids().await;
    assert_eq!(first_page, (501..=TOTAL).rev().collect::<Vec<_>>());

    // Once through a script click to check the list does not jump: the
    // message at the bottom stays where it was on screen.
    let before = page
        .run(
            "const last = document.querySelector('#messages > :last-child');
             last.scrollIntoView({block: 'end'});
             const top = last.getBoundingClientRect().top;
             document.getElementById('show-older').click();
             return top;",
        )
        .await;
    page.wait_for(
        "the first older page",
        "return document.querySelectorAll('#messages > *').length === 400",
    )
    .await;
    let after = page
        .run("return document.querySelector('[data-id=\"501\"]').getBoundingClientRect().top")
        .await;
    assert_eq!(
        before, after,
        "loading older messages keeps the scroll position"
    );

    // Then as a person would, until the button goes away.
    for _ in 0..10 {
        let hidden = page
            .run("return document.getElementById('show-older').hidden")
            .await;
        if hidden == true {
            break;
        }
        let count = page.ids().await.len();
        page.click("#show-older").await;
        page.wait_for(
            "another older page, or the end",
            &format!(
                "return document.querySelectorAll('#messages > *').length > {count}
                    || document.getElementById('show-older').hidden"
            ),
        )
        .await;
    }
    assert_eq!(
        page.run("return document.getElementById('show-older').hidden")
            .await,
        true,
        "the button goes away at the first message"
    );
    assert_eq!(
        page.ids().await,
        (1..=TOTAL).rev().collect::<Vec<_>>(),
        "every message once, newest first"
    );
}

#[tokio::test]
async fn on_a_phone_the_page_fits_the_screen_and_its_form_posts() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    post(
        &board,
        "A rather long display name that keeps going",
        &format!(
            "{} and http://127.0.0.1:9/{}",
            "unbreakable".repeat(30),
            "path/".repeat(30)
        ),
    )
    .await;
    let page = chrome.open(&board.url(), Screen::Phone).await;
    page.wait_connected().await;
    let fits = "return {
        width: window.innerWidth,
        fits: document.documentElement.scrollWidth <= window.innerWidth,
    }";
    assert_eq!(page.run(fits).await, json!({"width": 390, "fits": true}));

    // Everything a finger can press is at least 44 px each way.
    let small = page
        .run(
            "return [...document.querySelectorAll('button, input, textarea, a.button, .brand')]
                 .filter(e => e.getClientRects().length > 0)
                 .map(e => [e.id || e.className, e.getBoundingClientRect()])
                 .filter(([, r]) => r.width < 44 || r.height < 44)
                 .map(([id, r]) => `${id}: ${r.width}x${r.height}`)",
        )
        .await;
    assert_eq!(small, json!([]), "touch targets smaller than 44 px");

    page.type_into("#name", "Phone").await;
    page.type_into("#message", "Sent from a phone").await;
    page.click("#send").await;
    page.wait_for(
        "the phone's message on top",
        "return document.querySelector('#messages > * .body')?.textContent === 'Sent from a phone'",
    )
    .await;

    // The menu opens the invite panel, and still nothing scrolls sideways.
    page.click("#panel-toggle").await;
    page.wait_for(
        "the invite panel",
        "return document.getElementById('invite').getClientRects().length > 0",
    )
    .await;
    assert_eq!(page.run(fits).await, json!({"width": 390, "fits": true}));
}

#[tokio::test]
async fn web_links_open_in_a_new_tab_other_schemes_stay_text_and_lines_are_kept() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let message = "Docs: http://127.0.0.1:9/docs?a=1&b=2.\n\
                   Wiki (https://127.0.0.1:9/wiki/Page_(x))\n\
                   Not links: javascript:alert(1) file:///etc/passwd";
    post(&board, "Linker", message).await;
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    let body = page
        .wait_for(
            "the message",
            "const body = document.querySelector('#messages > * .body');
             return body && {
                 text: body.textContent,
                 lines: body.innerText.split('\\n'),
                 whiteSpace: getComputedStyle(body).whiteSpace,
                 links: [...body.querySelectorAll('a')].map(a => ({
                     href: a.getAttribute('href'), text: a.textContent, target: a.target, rel: a.rel,
                 })),
             };",
        )
        .await;
    assert_eq!(body["text"], message, "the text is unchanged");
    assert_eq!(
        body["lines"],
        json!([
            "Docs: http://127.0.0.1:9/docs?a=1&b=2.",
            "Wiki (https://127.0.0.1:9/wiki/Page_(x))",
            "Not links: javascript:alert(1) file:///etc/passwd",
        ]),
        "each line stays a line"
    );
    assert_eq!(body["whiteSpace"], "pre-wrap");
    assert_eq!(
        body["links"],
        json!([
            {"href": "http://127.0.0.1:9/docs?a=1&b=2", "text": "http://127.0.0.1:9/docs?a=1&b=2",
             "target": "_blank", "rel": "noopener noreferrer"},
            {"href": "https://127.0.0.1:9/wiki/Page_(x)", "text": "https://127.0.0.1:9/wiki/Page_(x)",
             "target": "_blank", "rel": "noopener noreferrer"},
        ]),
        "only http and https addresses become links, without the sentence's punctuation"
    );
}

#[tokio::test]
async fn a_refused_message_shows_the_reason_and_keeps_the_text() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;

    // The counter appears near the limit (4000 characters).
    page.run_with(
        "const box = document.getElementById('message');
         box.value = 'x'.repeat(arguments[0]);
         box.dispatchEvent(new Event('input'));",
        json!([3500]),
    )
    .await;
    assert_eq!(
        page.run("return document.getElementById('counter').hidden")
            .await,
        true,
        "no counter far from the limit"
    );
    page.type_into("#message", &"x".repeat(200)).await;
    assert_eq!(
        page.run("const c = document.getElementById('counter'); return !c.hidden && c.textContent")
            .await,
        "3700 / 4000"
    );

    // A name past the board's limit (the field's maxlength is bypassed the
    // way an old page would) is refused by the server.
    page.run_with(
        "const box = document.getElementById('message');
         box.value = arguments[0];
         box.dispatchEvent(new Event('input'));
         document.getElementById('name').value = 'n'.repeat(65);",
        json!(["kept after a refusal"]),
    )
    .await;
    page.type_into("#message", ENTER).await;
    let error = page
        .wait_for(
            "the reason for the refusal",
            "const e = document.getElementById('form-error'); return !e.hidden && e.textContent",
        )
        .await;
    assert!(
        error.as_str().is_some_and(|e| e.contains("name")),
        "the error names the problem: {error}"
    );
    assert_eq!(
        page.run("return document.getElementById('message').value")
            .await,
        "kept after a refusal"
    );
    assert_eq!(page.ids().await, Vec::<u64>::new(), "nothing was posted");
    assert_eq!(
        page.run(STORED_OUTBOX).await,
        json!([]),
        "a refused post is not kept for sending again"
    );
    assert_eq!(
        page.run("return document.getElementById('send').disabled")
            .await,
        false,
        "and the corrected one can be sent"
    );
}

#[tokio::test]
async fn download_saves_the_whole_history_as_a_json_file() {
    const TOTAL: u64 = 520;
    let Some(chrome) = chrome() else { return };
    // More than one page of the API (500), so the page has to page.
    let board = Board::start(&["--rate-limit", "0"]);
    post_many(&board, TOTAL).await;
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    page.click("#download").await;

    let deadline = Instant::now() + WAIT;
    let saved = loop {
        // Chromium writes to a .crdownload file and renames it when done.
        let done = std::fs::read_dir(&page.downloads)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|e| e == "json"));
        if let Some(path) = done {
            break path;
        }
        assert!(
            Instant::now() < deadline,
            "no .json file in {} after {WAIT:?}",
            page.downloads.display()
        );
        tokio::time::sleep(POLL).await;
    };
    let name = saved.file_name().unwrap_or_default().to_string_lossy();
    assert!(name.starts_with("lanboard-"), "file name: {name}");
    let text = std::fs::read_to_string(&saved).expect("the download is readable");
    let messages: Vec<Value> = serde_json::from_str(&text).expect("the download is JSON");
    assert_eq!(common::ids(&messages), (1..=TOTAL).collect::<Vec<_>>());
    assert_eq!(messages[0]["message"], "entry 1");
    assert!(messages[0]["time"].is_i64() && messages[0]["name"] == "Logger");
}

#[tokio::test]
async fn a_board_with_a_passphrase_asks_for_it_once_and_the_browser_keeps_only_its_login_cookie() {
    const PASSPHRASE: &str = "correct horse battery";
    let Some(chrome) = chrome() else { return };
    let mut board = Board::start(&["--password", PASSPHRASE]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    let locked = "return {
        login: document.getElementById('login').getClientRects().length > 0,
        form: document.getElementById('create-message').getClientRects().length > 0,
        state: document.getElementById('status').dataset.state,
    }";
    let login_form = "return document.getElementById('login').getClientRects().length > 0";
    page.wait_for("the passphrase form", login_form).await;
    assert_eq!(
        page.run(locked).await,
        json!({"login": true, "form": false, "state": "locked"})
    );

    // A passphrase an earlier version of the page stored is deleted, not used.
    page.run_with(
        "localStorage.setItem('lanboard.passphrase', arguments[0])",
        json!([PASSPHRASE]),
    )
    .await;
    page.goto(&board.url()).await;
    page.wait_for("the passphrase form after the reload", login_form)
        .await;
    assert_eq!(
        page.run("return localStorage.getItem('lanboard.passphrase')")
            .await,
        Value::Null,
        "the stored passphrase is deleted on load"
    );
    assert_eq!(page.run(locked).await["state"], "locked");

    page.type_into("#password", &format!("guess{ENTER}")).await;
    let error = page
        .wait_for(
            "the wrong passphrase to be refused",
            "const e = document.getElementById('login-error'); return !e.hidden && e.textContent",
        )
        .await;
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("not the passphrase")),
        "{error}"
    );

    page.clear("#password").await;
    page.type_into("#password", &format!("{PASSPHRASE}{ENTER}"))
        .await;
    page.wait_connected().await;
    assert_eq!(
        page.run(locked).await,
        json!({"login": false, "form": true, "state": "connected"})
    );
    page.type_into("#message", &format!("behind the passphrase{ENTER}"))
        .await;
    page.wait_for(
        "the message",
        "return document.querySelector('#messages > * .body')?.textContent === 'behind the passphrase'",
    )
    .await;

    // The browser holds the login as an HttpOnly cookie; no storage a
    // script can read holds the passphrase, under any key.
    let kept = page
        .run_with(
            "const found = [];
             for (const store of [localStorage, sessionStorage]) {
                 for (let i = 0; i < store.length; i++) {
                     const key = store.key(i);
                     if (key.includes(arguments[0]) || store.getItem(key).includes(arguments[0])) found.push(key);
                 }
             }
             return {found, cookies: document.cookie};",
            json!([PASSPHRASE]),
        )
        .await;
    assert_eq!(kept, json!({"found": [], "cookies": ""}), "{kept}");
    let cookie = page
        .must("GET", "/cookie/lanboard_session", Value::Null)
        .await;
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    let cookie_value = cookie["value"].as_str().expect("a cookie value").to_owned();
    assert!(!cookie_value.contains(PASSPHRASE), "{cookie}");

    // A reload does not ask again: the cookie opens the board.
    page.goto(&board.url()).await;
    page.wait_connected().await;
    assert_eq!(page.run(locked).await["login"], false);

    // A restarted board still knows the page's login (its secret is in the file).
    board.restart();
    let still_good = common::http(
        board.addr,
        "GET",
        "/api/info",
        &[(
            "Cookie",
            format!("lanboard_session={cookie_value}").as_str(),
        )],
        "",
    )
    .await
    .status;
    assert_eq!(still_good, 200, "the login cookie outlives a restart");
    let auth = format!("Bearer {PASSPHRASE}");
    let body = json!({"name": "Script", "message": "after the restart"}).to_string();
    let posted = common::http(
        board.addr,
        "POST",
        "/api/messages",
        &[("Authorization", auth.as_str())],
        &body,
    )
    .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    // The page carries on without asking again.
    page.wait_for(
        "the message posted after the restart",
        "return document.querySelector('#messages > * .body')?.textContent === 'after the restart'",
    )
    .await;
    assert_eq!(
        page.run(locked).await,
        json!({"login": false, "form": true, "state": "connected"})
    );
    assert_eq!(page.ids().await, [2, 1]);
}

#[tokio::test]
async fn a_message_unacked_at_a_disconnect_is_resent_after_the_reconnect_and_appears_once() {
    const TEXT: &str = "written while the board froze";
    let Some(chrome) = chrome() else { return };
    let mut board = Board::start(&[]);
    post(&board, "Before", "already on the board").await;
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    page.wait_for(
        "the first message",
        "return document.querySelectorAll('#messages > *').length === 1",
    )
    .await;
    record_websockets(&page).await;

    // The frozen board takes the post into its socket and never answers it...
    freeze(&board);
    page.type_into("#name", "Resender").await;
    page.type_into("#message", &format!("{TEXT}{ENTER}")).await;
    page.wait_for(
        "the post to leave the page",
        "return window.__sent.some(f => JSON.parse(f).event === 'add-message')",
    )
    .await;
    let outbox = page.run(STORED_OUTBOX).await;
    assert_eq!(outbox.as_array().map(Vec::len), Some(1), "{outbox}");
    assert_eq!(outbox[0]["text"], TEXT);
    assert_eq!(
        page.run("return document.getElementById('message').value")
            .await,
        TEXT,
        "an unconfirmed message stays in the box"
    );

    // ...and, killed, it never will.
    board.stop_with(libc::SIGKILL);
    expect_paused(&page, "connection").await;
    assert_eq!(
        page.run("return document.getElementById('send').disabled")
            .await,
        true
    );

    board.restart();
    page.wait_for(
        "the resent message on top",
        &format!("{TOP_MESSAGE} return m && m.body === {TEXT:?};"),
    )
    .await;
    page.wait_for(
        "the box to empty once the board has the message",
        "return document.getElementById('message').value === ''",
    )
    .await;
    // A late duplicate would come within a moment; give it one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(page.ids().await, [2, 1], "the message appears once");
    assert_eq!(stored_copies(&board, TEXT).await, 1, "and is stored once");
    assert_eq!(
        page.run(&format!("{PAUSED_NOTICE} return notice;")).await,
        Value::Null
    );
    assert_eq!(page.run(STORED_OUTBOX).await, json!([]));

    let posts = sent_posts(&page).await;
    assert_eq!(posts.len(), 2, "sent, then resent once: {posts:?}");
    assert!(is_page_cid(&posts[0]["cid"]), "{posts:?}");
    assert_eq!(posts[0], posts[1], "the resend is the same post, same cid");
    assert_eq!(posts[0]["name"], "Resender");
}

#[tokio::test]
async fn a_message_unconfirmed_when_its_page_closes_is_sent_when_the_board_is_opened_again() {
    const TEXT: &str = "sent just before the tab closed";
    let Some(chrome) = chrome() else { return };
    let mut board = Board::start(&[]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    record_websockets(&page).await;

    freeze(&board);
    page.type_into("#message", &format!("{TEXT}{ENTER}")).await;
    page.wait_for(
        "the post to leave the page",
        "return window.__sent.some(f => JSON.parse(f).event === 'add-message')",
    )
    .await;
    board.stop_with(libc::SIGKILL);
    page.wait_for(
        "the paused notice",
        &format!("{PAUSED_NOTICE} return notice;"),
    )
    .await;
    let cid = sent_posts(&page).await[0]["cid"].clone();

    // The page goes away while the board is down; the browser keeps the post.
    page.goto("about:blank").await;
    board.restart();
    page.goto(&board.url()).await;
    page.wait_for(
        "the message from the closed page",
        &format!("{TOP_MESSAGE} return m && m.body === {TEXT:?};"),
    )
    .await;
    page.wait_for(
        "the outbox to empty",
        "return JSON.parse(localStorage.getItem('lanboard.outbox') || '[]').length === 0",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(page.ids().await, [1]);
    assert_eq!(stored_copies(&board, TEXT).await, 1);
    assert_eq!(
        page.run("return document.getElementById('message').value")
            .await,
        "",
        "the box empties once the board has it"
    );
    let posts = sent_posts(&page).await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(
        posts[0]["cid"], cid,
        "the reopened page resends the same post"
    );
}

#[tokio::test]
async fn posts_left_unconfirmed_by_a_closed_page_go_out_in_order_unless_half_a_day_old() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    // What pages that closed with posts still on their way left behind.
    page.run_with(
        "localStorage.setItem('lanboard.outbox', JSON.stringify([
             {cid: 'c'.repeat(32), name: 'Late', text: arguments[2], createdMs: Date.now() - 13 * 3600e3},
             {cid: 'a'.repeat(32), name: 'Early', text: arguments[0], createdMs: Date.now() - 2000},
             {cid: 'b'.repeat(32), name: 'Early', text: arguments[1], createdMs: Date.now() - 1000},
         ]));",
        json!(["written first", "written second", "written yesterday"]),
    )
    .await;
    page.goto(&board.url()).await;
    page.wait_for(
        "both posts",
        "return document.querySelectorAll('#messages > *').length === 2",
    )
    .await;
    page.wait_for(
        "the outbox to empty",
        "return JSON.parse(localStorage.getItem('lanboard.outbox')).length === 0",
    )
    .await;
    let bodies = page
        .run("return [...document.querySelectorAll('#messages .body')].map(b => b.textContent)")
        .await;
    assert_eq!(
        bodies,
        json!(["written second", "written first"]),
        "newest on top"
    );
    assert_eq!(
        page.ids().await,
        [2, 1],
        "the first written has the lower id"
    );
    assert_eq!(stored_copies(&board, "written first").await, 1);
    assert_eq!(stored_copies(&board, "written second").await, 1);
    assert_eq!(
        stored_copies(&board, "written yesterday").await,
        0,
        "a post over half a day old is dropped, not sent"
    );
}

#[tokio::test]
async fn sending_pauses_while_storage_is_unreachable_and_resumes_by_itself() {
    const TEXT: &str = "sent while Redis was frozen";
    let Some(chrome) = chrome() else { return };
    let Some(redis) = Redis::start(Persistence::AppendOnly) else {
        return;
    };
    let board = Board::node(&redis.url(), "page-test", &[]);
    post(&board, "Before", "stored before the pause").await;
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    page.wait_for(
        "the first message",
        "return document.querySelectorAll('#messages > *').length === 1",
    )
    .await;
    record_websockets(&page).await;

    redis.pause();
    page.type_into("#message", &format!("{TEXT}{ENTER}")).await;
    expect_paused(&page, "storage").await;
    let kept = page
        .run(
            "return {
                text: document.getElementById('message').value,
                send: document.getElementById('send').disabled,
                error: document.getElementById('form-error').hidden,
            }",
        )
        .await;
    assert_eq!(
        kept,
        json!({"text": TEXT, "send": true, "error": true}),
        "the text is kept, not shown as sent, and this is no error"
    );
    assert_eq!(page.ids().await, [1]);
    // It is offered again by itself, without anyone pressing anything.
    page.wait_for(
        "a second try",
        "return window.__sent.filter(f => JSON.parse(f).event === 'add-message').length >= 2",
    )
    .await;
    assert!(
        page.run(&format!("{PAUSED_NOTICE} return notice;"))
            .await
            .is_object(),
        "still paused"
    );

    redis.resume();
    page.wait_for(
        "the message on top once Redis is back",
        &format!("{TOP_MESSAGE} return m && m.body === {TEXT:?};"),
    )
    .await;
    page.wait_for(
        "the notice to go away",
        &format!("{PAUSED_NOTICE} return notice === null;"),
    )
    .await;
    page.wait_for(
        "the box to empty",
        "return document.getElementById('message').value === ''",
    )
    .await;
    // The try that timed out may still have been stored when Redis woke up;
    // the retry then got that message back rather than a second one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(page.ids().await.len(), 2, "the message appears once");
    assert_eq!(stored_copies(&board, TEXT).await, 1, "and is stored once");
    let posts = sent_posts(&page).await;
    assert!(is_page_cid(&posts[0]["cid"]), "{posts:?}");
    assert!(
        posts.iter().all(|p| *p == posts[0]),
        "every try is the same post with the same cid: {posts:?}"
    );
}

#[tokio::test]
async fn a_board_reset_makes_the_page_start_over() {
    let Some(chrome) = chrome() else { return };
    let Some(redis) = Redis::start(Persistence::AppendOnly) else {
        return;
    };
    let board = Board::node(&redis.url(), "page-test", &[]);
    post(&board, "Old", "from the lost history 1").await;
    post(&board, "Old", "from the lost history 2").await;
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    page.wait_for(
        "the old history",
        "return document.querySelectorAll('#messages > *').length === 2",
    )
    .await;
    record_websockets(&page).await;
    page.type_into("#message", "half-typed when the board was lost")
        .await;

    redis.cli(&["FLUSHALL"]);
    page.wait_for(
        "the old messages to go, with a word on why",
        "return document.querySelectorAll('#messages > *').length === 0
            && document.getElementById('board-reset').getClientRects().length > 0",
    )
    .await;
    page.wait_for(
        "a fresh connection to the new board",
        "return window.__urls.length > 0
            && document.getElementById('status').dataset.state === 'connected'",
    )
    .await;
    post(&board, "New", "first on the new board").await;
    page.wait_for(
        "the new board's first message",
        &format!("{TOP_MESSAGE} return m && m.body === 'first on the new board';"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = page
        .run(
            "return {
                bodies: [...document.querySelectorAll('#messages .body')].map(b => b.textContent),
                urls: window.__urls.map(u => new URL(u).search),
                draft: document.getElementById('message').value,
                note: document.getElementById('board-reset').hidden,
            }",
        )
        .await;
    assert_eq!(
        seen,
        json!({
            "bodies": ["first on the new board"],
            // A resume from the old history's last id would carry `?since=`.
            "urls": [""],
            "draft": "half-typed when the board was lost",
            "note": true,
        }),
        "only the new board is shown, it was loaded from its start, the draft \
         survived and the note went once the new board moved on"
    );
}

#[tokio::test]
async fn a_page_away_while_the_board_was_lost_starts_over_when_it_comes_back() {
    let Some(chrome) = chrome() else { return };
    let Some(redis) = Redis::start(Persistence::AppendOnly) else {
        return;
    };
    let mut board = Board::node(&redis.url(), "page-test", &[]);
    post(&board, "Old", "from the lost history 1").await;
    post(&board, "Old", "from the lost history 2").await;
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    page.wait_for(
        "the old history",
        "return document.querySelectorAll('#messages > *').length === 2",
    )
    .await;
    record_websockets(&page).await;

    // Nobody is connected to tell when the history goes; the restarted node
    // begins a new board whose ids start at 1 again.
    board.stop_with(libc::SIGKILL);
    redis.cli(&["FLUSHALL"]);
    board.restart();
    post(&board, "New", "first on the new board").await;
    page.wait_for(
        "the new board alone",
        "const bodies = [...document.querySelectorAll('#messages .body')].map(b => b.textContent);
         return bodies.length === 1 && bodies[0] === 'first on the new board'
             && document.getElementById('status').dataset.state === 'connected'",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(page.ids().await, [1]);
    let searches = page
        .run("return window.__urls.map(u => new URL(u).search)")
        .await;
    let searches: Vec<String> = serde_json::from_value(searches).expect("strings");
    assert!(
        !searches.is_empty()
            && searches
                .iter()
                .all(|s| s.starts_with("?since=2&epoch=") && s.len() > "?since=2&epoch=".len()),
        "the page resumed naming the lost history's epoch, and the board's answer \
         needed no second, fresh connection: {searches:?}"
    );
}

#[tokio::test]
async fn frames_named_after_object_prototype_members_are_unknown_events_and_break_nothing() {
    const INHERITED: [&str; 7] = [
        "constructor",
        "__proto__",
        "toString",
        "hasOwnProperty",
        "valueOf",
        "isPrototypeOf",
        "__defineGetter__",
    ];
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    watch_page(&page, &board.url()).await;

    // A board never sends these; a page must still not take them for its
    // handlers, whatever the name finds on Object.prototype.
    let frames: Vec<Value> = INHERITED
        .iter()
        .map(|name| json!({"event": name, "data": {"id": 1, "name": "x", "message": "y"}}))
        .collect();
    deliver(&page, &frames).await;
    let seen = page
        .run(
            "return {
                errors: window.__errors,
                unknown: window.__warnings.filter(w => w.includes('unknown event')),
                polluted: Object.prototype.id !== undefined || typeof Object.prototype.message !== 'undefined',
                state: document.getElementById('status').dataset.state,
                messages: document.querySelectorAll('#messages > *').length,
            }",
        )
        .await;
    let warned: Vec<String> = INHERITED
        .iter()
        .map(|name| format!("lanboard: ignoring an unknown event {name}"))
        .collect();
    assert_eq!(
        seen,
        json!({
            "errors": [],
            "unknown": warned,
            "polluted": false,
            "state": "connected",
            "messages": 0,
        }),
        "each is warned about and ignored"
    );

    // The page goes on as before.
    post(&board, "Colleague", "still listening").await;
    page.wait_for(
        "the next message",
        &format!("{TOP_MESSAGE} return m && m.body === 'still listening';"),
    )
    .await;
    assert_eq!(page.run("return window.__errors").await, json!([]));
}

#[tokio::test]
async fn two_pages_posting_the_same_text_each_take_only_their_own_post_for_theirs() {
    const TEXT: &str = "yes";
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let alice = chrome.open(&board.url(), Screen::Desktop).await;
    let bob = chrome.open(&board.url(), Screen::Desktop).await;
    for (page, name) in [(&alice, "Alice"), (&bob, "Bob")] {
        page.wait_connected().await;
        hold_posts(page).await;
        page.type_into("#name", name).await;
        page.type_into("#message", &format!("{TEXT}{ENTER}")).await;
        page.wait_for(
            "the post to be on its way",
            "return window.__held.length === 1",
        )
        .await;
    }
    let box_and_outbox = format!(
        "return {{
            box: document.getElementById('message').value,
            outbox: {}.map(p => p.text),
            announced: document.getElementById('announcer').textContent,
        }}",
        STORED_OUTBOX.trim_start_matches("return ")
    );

    // Bob's post goes first: his page clears its box; Alice's, where a
    // message reading the same has just arrived, keeps hers.
    release_posts(&bob).await;
    bob.wait_for(
        "Bob's box to empty",
        "return document.getElementById('message').value === ''",
    )
    .await;
    alice
        .wait_for(
            "Bob's message on Alice's page",
            "return document.querySelectorAll('#messages > *').length === 1",
        )
        .await;
    let kept = alice.run(&box_and_outbox).await;
    assert_eq!(kept["box"], TEXT, "{kept}");
    assert_eq!(kept["outbox"], json!([TEXT]), "{kept}");

    release_posts(&alice).await;
    alice
        .wait_for(
            "Alice's box to empty",
            "return document.getElementById('message').value === ''",
        )
        .await;
    bob.wait_for(
        "Alice's message on Bob's page",
        "return document.querySelectorAll('#messages > *').length === 2",
    )
    .await;
    // Each page tells of the other's message, and of its own not at all.
    let alice_sees = alice.run(&box_and_outbox).await;
    let bob_sees = bob.run(&box_and_outbox).await;
    assert_eq!(
        alice_sees,
        json!({"box": "", "outbox": [], "announced": format!("Bob: {TEXT}")})
    );
    assert_eq!(
        bob_sees,
        json!({"box": "", "outbox": [], "announced": format!("Alice: {TEXT}")})
    );
    assert_eq!(alice.ids().await, [2, 1]);
    assert_eq!(bob.ids().await, [2, 1]);
}

#[tokio::test]
async fn a_page_left_open_keeps_no_record_of_every_id_and_still_drops_repeats() {
    const TOTAL: u64 = 1000;
    let Some(chrome) = chrome() else { return };
    // The rate limit is off: a thousand posts from one connection.
    let mut board = Board::start(&["--rate-limit", "0"]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    watch_page(&page, &board.url()).await;
    let wall = chrome
        .open(&format!("{}/wall", board.url()), Screen::Desktop)
        .await;
    wall.wait_connected().await;

    post_many(&board, TOTAL).await;
    page.type_into("#message", &format!("mine{ENTER}")).await;
    page.wait_for(
        "every message",
        &format!(
            "return document.querySelectorAll('#messages > *').length === {}",
            TOTAL + 1
        ),
    )
    .await;
    wall.wait_for(
        "the newest on the wall",
        &format!(
            "return document.querySelector('#messages > *')?.dataset.id === '{}'",
            TOTAL + 1
        ),
    )
    .await;
    // Neither page keeps a collection that grows with the messages shown.
    for (which, page) in [("page", &page), ("wall", &wall)] {
        let (set, map) = largest_collections(page).await;
        assert!(
            set <= 10 && map <= 10,
            "the {which}'s largest Set holds {set} entries and its largest Map {map}"
        );
    }

    // Messages the board sends again are not drawn again.
    let old: Vec<Value> = (1..=5)
        .map(|id| json!({"id": id, "name": "Logger", "message": format!("entry {id}"), "time": 0}))
        .collect();
    deliver(
        &page,
        &[
            json!({"event": "messages-available", "data": old}),
            json!({"event": "message-added", "data": old[2]}),
            json!({"event": "message-added", "data": {"id": TOTAL + 1, "name": "", "message": "mine", "time": 0}}),
        ],
    )
    .await;

    // Nor after a restart, with messages written while the page was away.
    board.restart();
    post(&board, "During", "written while the page was away").await;
    page.wait_for(
        "the message of the outage",
        &format!("{TOP_MESSAGE} return m && m.body === 'written while the page was away';"),
    )
    .await;
    page.type_into("#message", &format!("mine again{ENTER}"))
        .await;
    page.wait_for(
        "the page's second post",
        &format!("{TOP_MESSAGE} return m && m.body === 'mine again';"),
    )
    .await;
    // A late duplicate would come within a moment; give it one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        page.ids().await,
        (1..=TOTAL + 3).rev().collect::<Vec<_>>(),
        "every message exactly once"
    );
    assert_eq!(page.run("return window.__errors").await, json!([]));
    let (set, map) = largest_collections(&page).await;
    assert!(
        set <= 10 && map <= 10,
        "after the resume: Set {set}, Map {map}"
    );
}

#[tokio::test]
async fn an_own_post_edited_then_deleted_in_one_page_changes_then_leaves_the_others_and_the_wall() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    post(&board, "Reception", "Visitors: please sign in at the desk").await;
    let alice = chrome.open(&board.url(), Screen::Desktop).await;
    let bob = chrome.open(&board.url(), Screen::Desktop).await;
    let wall = chrome
        .open(&format!("{}/wall", board.url()), Screen::Desktop)
        .await;
    for page in [&alice, &bob, &wall] {
        page.wait_connected().await;
    }

    alice.type_into("#name", "Alice").await;
    alice
        .type_into("#message", &format!("Lunch at 12:30{ENTER}"))
        .await;
    let own = alice
        .wait_for(
            "Edit and Delete on Alice's own post",
            &format!("{SEEN} const m = seen(2); return m && m.actions.length > 0 && m;"),
        )
        .await;
    assert_eq!(own["actions"], json!(["Edit", "Delete"]), "{own}");
    assert_eq!(
        alice.run(&format!("{SEEN} return seen(1).actions;")).await,
        json!([]),
        "nothing to do with someone else's post"
    );
    let key = alice
        .run("return localStorage.getItem('lanboard.key')")
        .await;
    assert!(is_page_cid(&key), "one key per browser: {key}");
    for page in [&bob, &wall] {
        let m = page
            .wait_for("Alice's post", &format!("{SEEN} return seen(2);"))
            .await;
        assert_eq!(m["actions"], json!([]), "not Bob's to change: {m}");
    }

    // Edited in place: the text becomes a box holding it, and Enter saves.
    alice
        .click("#messages > [data-id='2'] [data-action=edit]")
        .await;
    let editing = alice
        .run(&format!(
            "{SEEN} return {{m: seen(2), box: document.activeElement.value}};"
        ))
        .await;
    assert_eq!(editing["m"]["editing"], true, "{editing}");
    assert_eq!(editing["box"], "Lunch at 12:30", "{editing}");
    alice.clear(".edit-box").await;
    alice
        .type_into(".edit-box", &format!("Lunch at 13:00, not 12:30{ENTER}"))
        .await;
    for page in [&alice, &bob, &wall] {
        let m = page
            .wait_for(
                "the edit on every page, and the edit box closed",
                // The broadcast edit and the ack that closes the box are two
                // frames: wait until both have arrived.
                &format!(
                    "{SEEN} const m = seen(2); return m && m.body === 'Lunch at 13:00, not 12:30' && !m.editing && m;"
                ),
            )
            .await;
        let edited = &m["edited"];
        assert_eq!(edited["text"], "edited", "{m}");
        assert!(
            edited["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Edited ") && t.len() > 20),
            "the time of the edit shows on hover: {m}"
        );
        assert_eq!(edited["tabIndex"], 0, "and the mark takes focus: {m}");
        assert_eq!(m["editing"], false, "{m}");
    }
    let tip = alice
        .run(
            "const mark = document.querySelector('#messages > [data-id=\"2\"] .edited');
             mark.focus();
             return {focused: document.hasFocus(), tip: getComputedStyle(mark, '::after').content};",
        )
        .await;
    assert!(
        tip["tip"].as_str().is_some_and(|t| t.contains("Edited ")),
        "the time of the edit shows beside the focused mark: {tip}"
    );

    // A reload keeps the post editable: the browser remembers its own posts.
    alice.goto(&board.url()).await;
    alice.wait_connected().await;
    let own = alice
        .wait_for("Alice's post", &format!("{SEEN} return seen(2);"))
        .await;
    assert_eq!(own["actions"], json!(["Edit", "Delete"]), "{own}");

    // Deleting asks first, in the page.
    alice
        .click("#messages > [data-id='2'] [data-action=delete]")
        .await;
    let asked = alice
        .run(
            "return {
                 question: document.querySelector('#messages > [data-id=\"2\"] .actions').textContent,
                 focused: document.activeElement.textContent,
             };",
        )
        .await;
    assert_eq!(
        asked,
        json!({"question": "Delete your message for everyone?DeleteCancel", "focused": "Cancel"})
    );
    assert_eq!(
        alice.alert().await,
        None,
        "asked in the page, not with a dialog"
    );
    alice
        .click("#messages > [data-id='2'] [data-action=confirm]")
        .await;
    for page in [&alice, &bob, &wall] {
        page.wait_for(
            "the deleted post to leave every page",
            &format!("{SEEN} return seen(2) === null;"),
        )
        .await;
        assert_eq!(page.ids().await, [1]);
    }
    assert_eq!(stored_copies(&board, "Lunch at 13:00, not 12:30").await, 0);
}

#[tokio::test]
async fn operator_mode_from_the_printed_link_deletes_any_post_and_blocks_its_sender() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let poster = chrome.open(&board.url(), Screen::Desktop).await;
    poster.wait_connected().await;
    poster.type_into("#name", "Pat").await;
    for text in ["Selling my old bike", "Selling my old bike, still here"] {
        poster
            .type_into("#message", &format!("{text}{ENTER}"))
            .await;
        poster
            .wait_for(
                "the board to take the post",
                "return document.getElementById('message').value === ''",
            )
            .await;
    }

    let secret = operator_secret(&board, &[]);
    let operator = chrome
        .open(
            &format!("{}/#operator={secret}", board.url()),
            Screen::Desktop,
        )
        .await;
    operator.wait_connected().await;
    let opened = operator
        .run(&format!(
            "const badge = (() => {{ {OPERATOR_BADGE} }})();
             return {{address: location.href, badge, kept: localStorage.getItem('lanboard.operator')}};"
        ))
        .await;
    assert_eq!(
        opened,
        json!({
            "address": format!("{}/", board.url()),
            "badge": "Operator mode Leave",
            "kept": secret,
        }),
        "the secret leaves the address bar for this browser's storage, and the badge shows"
    );
    let m = operator
        .wait_for(
            "the operator's actions on Pat's posts",
            &format!("{SEEN} const m = seen(1); return m && m.actions.length > 0 && m;"),
        )
        .await;
    assert_eq!(
        m["actions"],
        json!([
            "Delete",
            "Block sender for 1 hour",
            "Block sender for 1 day"
        ]),
        "{m}"
    );

    operator
        .click("#messages > [data-id='1'] [data-action=delete]")
        .await;
    operator
        .click("#messages > [data-id='1'] [data-action=confirm]")
        .await;
    poster
        .wait_for(
            "the post the operator deleted to leave Pat's page",
            &format!("{SEEN} return seen(1) === null;"),
        )
        .await;
    assert_eq!(poster.ids().await, [2]);

    operator
        .click("#messages > [data-id='2'] [data-action=block][data-minutes='60']")
        .await;
    let question = operator
        .run("return document.querySelector('#messages > [data-id=\"2\"] .actions').textContent")
        .await;
    assert_eq!(
        question,
        "Block posts from this sender's address for 1 hour?Block for 1 hourCancel"
    );
    operator
        .click("#messages > [data-id='2'] [data-action=confirm]")
        .await;
    let note = operator
        .wait_for(
            "the operator's note of the block",
            "return document.querySelector('#messages > [data-id=\"2\"] .item-note')?.textContent",
        )
        .await;
    assert!(
        note.as_str()
            .is_some_and(|n| n.starts_with("Posts from this sender's address are blocked until ")),
        "{note}"
    );

    // Every page is on 127.0.0.1, so Pat's address is the blocked one.
    poster
        .type_into("#message", &format!("Anyone want a bike?{ENTER}"))
        .await;
    let refusal = poster
        .wait_for(
            "the refusal of the blocked post",
            "const e = document.getElementById('form-error');
             return !e.hidden && e.getClientRects().length > 0 && e.textContent",
        )
        .await;
    assert!(
        refusal
            .as_str()
            .is_some_and(|r| r
                .starts_with("The board's operator has blocked posts from this address until ")),
        "{refusal}"
    );
    let minutes = poster.run_with(MINUTES_UNTIL, json!([refusal])).await;
    assert!(
        minutes.as_i64().is_some_and(|m| (58..=60).contains(&m)),
        "the refusal says until when, in local time, an hour from now: {refusal} ({minutes} minutes)"
    );
    assert_eq!(
        poster.run(STORED_OUTBOX).await,
        json!([]),
        "a blocked post is not kept for sending again"
    );
    assert_eq!(
        poster
            .run("return document.getElementById('message').value")
            .await,
        "Anyone want a bike?",
        "the text stays in the box"
    );
    assert_eq!(stored_copies(&board, "Anyone want a bike?").await, 0);

    // Leaving operator mode forgets the secret and takes the actions away.
    operator.click("#operator-leave").await;
    let left = operator
        .run(&format!(
            "{SEEN} const badge = (() => {{ {OPERATOR_BADGE} }})();
             return {{badge, actions: seen(2).actions, kept: localStorage.getItem('lanboard.operator')}};"
        ))
        .await;
    assert_eq!(left, json!({"badge": false, "actions": [], "kept": null}));
}

#[tokio::test]
async fn an_operator_action_with_a_replaced_link_says_the_link_is_no_longer_valid() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    post(&board, "Pat", "Selling my old bike").await;
    let old = operator_secret(&board, &[]);
    let new = operator_secret(&board, &["--rotate"]);
    assert_ne!(old, new, "--rotate makes a new secret");

    let operator = chrome
        .open(&format!("{}/#operator={old}", board.url()), Screen::Desktop)
        .await;
    operator.wait_connected().await;
    operator
        .wait_for(
            "operator mode",
            &format!("return (() => {{ {OPERATOR_BADGE} }})();"),
        )
        .await;
    operator
        .click("#messages > [data-id='1'] [data-action=delete]")
        .await;
    operator
        .click("#messages > [data-id='1'] [data-action=confirm]")
        .await;
    let note = operator
        .wait_for(
            "why the deletion was refused",
            "return document.querySelector('#messages > [data-id=\"1\"] .item-note')?.textContent",
        )
        .await;
    assert!(
        note.as_str()
            .is_some_and(|n| n.starts_with("The operator link is no longer valid")),
        "{note}"
    );
    let after = operator
        .run(&format!(
            "{SEEN} const badge = (() => {{ {OPERATOR_BADGE} }})();
             return {{badge, post: seen(1), kept: localStorage.getItem('lanboard.operator')}};"
        ))
        .await;
    assert_eq!(after["badge"], false, "operator mode is off: {after}");
    assert_eq!(after["kept"], Value::Null, "{after}");
    assert_eq!(after["post"]["body"], "Selling my old bike", "{after}");
    assert_eq!(stored_copies(&board, "Selling my old bike").await, 1);
}

#[tokio::test]
async fn a_post_is_edited_with_the_keyboard_alone_and_escape_cancels_an_edit() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    for text in ["first draft", "second thought"] {
        page.type_into("#message", &format!("{text}{ENTER}")).await;
        page.wait_for(
            "the board to take the post",
            "return document.getElementById('message').value === ''",
        )
        .await;
    }
    page.wait_for(
        "Edit on the newest post",
        &format!("{SEEN} return seen(2)?.actions.length === 2;"),
    )
    .await;

    // From the message box, Tab reaches Attach files, the Send button, then the newest post's Edit.
    page.press(TAB).await;
    assert_eq!(page.run("return document.activeElement.id").await, "attach");
    page.press(&format!("{TAB}{TAB}")).await;
    assert_eq!(page.run(FOCUSED).await, json!({"post": 2, "what": "edit"}));
    page.press(ENTER).await;
    assert_eq!(
        page.run(FOCUSED).await,
        json!({"post": 2, "what": "edit-box"})
    );
    // Shift+Enter is a new line; Enter saves, and the focus goes back to Edit.
    page.type_into(
        ".edit-box",
        &format!(", updated{SHIFT}{ENTER}{NO_MODIFIERS}with a second line{ENTER}"),
    )
    .await;
    page.wait_for(
        "the edit, and the edit box closed by its ack",
        &format!("{SEEN} const m = seen(2); return m && m.edited !== null && !m.editing;"),
    )
    .await;
    let m = page.run(&format!("{SEEN} return seen(2);")).await;
    assert_eq!(m["body"], "second thought, updated\nwith a second line");
    assert_eq!(m["editing"], false);
    assert_eq!(page.run(FOCUSED).await, json!({"post": 2, "what": "edit"}));

    // On to the older post's Edit: past Delete.
    page.press(&format!("{TAB}{TAB}")).await;
    assert_eq!(page.run(FOCUSED).await, json!({"post": 1, "what": "edit"}));
    page.press(ENTER).await;
    // An empty message is refused beside the box, which stays open.
    page.type_into(
        ".edit-box",
        &format!("{CONTROL}a{NO_MODIFIERS}{BACKSPACE}{ENTER}"),
    )
    .await;
    let refusal = page
        .run(
            "const e = document.querySelector('#messages > [data-id=\"1\"] .editor .form-error');
             return !e.hidden && e.textContent",
        )
        .await;
    assert_eq!(refusal, "Write something, or delete the message instead.");
    page.type_into(".edit-box", "abandoned").await;
    page.press(ESCAPE).await;
    let m = page.run(&format!("{SEEN} return seen(1);")).await;
    assert_eq!(
        m,
        json!({"body": "first draft", "edited": null, "actions": ["Edit", "Delete"], "editing": false}),
        "Escape leaves the post as it was"
    );
    assert_eq!(page.run(FOCUSED).await, json!({"post": 1, "what": "edit"}));
    assert_eq!(stored_copies(&board, "first draft").await, 1);
}

#[tokio::test]
async fn a_page_that_was_away_applies_the_edits_and_deletions_it_missed_when_it_comes_back() {
    // Printable ASCII, 16 characters or more: a key the board takes.
    const KEY: &str = "the script's own author key";
    let Some(chrome) = chrome() else { return };
    let mut board = Board::start(&[]);
    for text in ["Room 4 is booked", "Room 5 is free", "Room 6 is free"] {
        post_with_key(&board, "Rooms", text, KEY).await;
    }
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    record_websockets(&page).await;
    let wall = chrome
        .open(&format!("{}/wall", board.url()), Screen::Desktop)
        .await;
    wall.wait_connected().await;
    for view in [&page, &wall] {
        view.wait_for(
            "the three posts",
            "return document.querySelectorAll('#messages > *').length === 3",
        )
        .await;
    }

    // The page loses the board and cannot come back while the posts change.
    keep_offline(&page, true).await;
    board.restart();
    page.wait_for(
        "the page to notice the board is gone",
        "return document.getElementById('status').dataset.state === 'reconnecting'",
    )
    .await;
    edit_over_http(&board, 1, KEY, "Room 4 is booked until 15:00").await;
    delete_over_http(&board, 2, KEY).await;
    // Give a page that were still connected the moment it would take.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        page.run(&format!("{SEEN} return [seen(1).body, seen(2) !== null];"))
            .await,
        json!(["Room 4 is booked", true]),
        "the page was away"
    );

    keep_offline(&page, false).await;
    page.wait_connected().await;
    for view in [&page, &wall] {
        let m = view
            .wait_for(
                "the missed edit and deletion",
                &format!(
                    "{SEEN} const m = seen(1);
                     return m && m.body === 'Room 4 is booked until 15:00' && seen(2) === null && m;"
                ),
            )
            .await;
        assert_eq!(m["edited"]["text"], "edited", "{m}");
        assert_eq!(view.ids().await, [3, 1]);
    }
    let urls = page.run("return window.__urls").await;
    assert!(
        urls[0].as_str().is_some_and(|u| u.ends_with("/ws?since=3")),
        "the page resumed after the last post it had: {urls}"
    );

    // The edit and the deletion took ids 4 and 5 from the posts' counter:
    // away again, the page resumes after them, and nothing comes twice.
    keep_offline(&page, true).await;
    board.restart();
    page.wait_for(
        "the page to notice the board is gone again",
        "return document.getElementById('status').dataset.state === 'reconnecting'",
    )
    .await;
    keep_offline(&page, false).await;
    page.wait_connected().await;
    let urls = page.run("return window.__urls").await;
    assert!(
        urls[1].as_str().is_some_and(|u| u.ends_with("/ws?since=5")),
        "the page resumed after the last change it saw: {urls}"
    );
    assert_eq!(page.ids().await, [3, 1]);
}

#[tokio::test]
async fn a_message_deleted_while_the_page_is_hidden_leaves_its_unread_count() {
    const KEY: &str = "the script's own author key";
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    page.minimize().await;
    page.wait_for("the page to be hidden", "return document.hidden === true")
        .await;
    for n in 1..=2 {
        post_with_key(
            &board,
            "Colleague",
            &format!("while you were away {n}"),
            KEY,
        )
        .await;
    }
    page.wait_for(
        "two unread in the title",
        "return document.title === '(2) lanboard'",
    )
    .await;
    delete_over_http(&board, 1, KEY).await;
    page.wait_for(
        "one unread left in the title",
        "return document.title === '(1) lanboard'",
    )
    .await;
    assert_eq!(page.ids().await, [2]);
    page.restore().await;
    page.wait_for(
        "the count to clear once shown",
        "return document.title === 'lanboard'",
    )
    .await;
}

/// Script that puts what the reader sees of the search in `search`: whether
/// the results are shown, the query they answer, the status line, the
/// field's value, `aria-expanded` and `aria-activedescendant`, the results
/// (id, name, text, the marked words of each, and the text before the first
/// mark of the text) and whether "More results" is offered; append a `return`.
const SEARCH_SEEN: &str = "
    const panel = document.getElementById('search-panel');
    const list = document.getElementById('search-results');
    const field = document.getElementById('search');
    const lead = (text) => {
        let before = '';
        for (const node of text.childNodes) {
            if (node.nodeName === 'MARK') return before;
            before += node.textContent;
        }
        return null;
    };
    const search = {
        shown: !panel.hidden && panel.getClientRects().length > 0,
        query: list.dataset.query ?? null,
        status: document.getElementById('search-status').textContent,
        problem: document.getElementById('search-status').classList.contains('problem'),
        value: field.value,
        expanded: field.getAttribute('aria-expanded'),
        active: field.getAttribute('aria-activedescendant'),
        hits: [...list.querySelectorAll('.search-hit')].map(o => ({
            id: Number(o.dataset.id),
            name: o.querySelector('.name').textContent,
            text: o.querySelector('.search-text').textContent,
            nameMarks: [...o.querySelectorAll('.name mark')].map(m => m.textContent),
            marks: [...o.querySelectorAll('.search-text mark')].map(m => m.textContent),
            lead: lead(o.querySelector('.search-text')),
        })),
        more: document.getElementById('search-more') !== null,
    };";

/// Script that puts what the reader sees of a found message's context in
/// `context`: the found message's id (null when none is marked) and its
/// place on screen, whether it has the focus and lies in view below the
/// sticky form, the "Back to latest" label while shown, and the scroll
/// position; append a `return`.
const CONTEXT_SEEN: &str = "
    const found = document.querySelector('#messages > .found');
    const bar = document.getElementById('context-bar');
    const back = document.getElementById('back-to-latest');
    const form = document.getElementById('create-message')?.getBoundingClientRect();
    const box = found?.getBoundingClientRect();
    const context = {
        found: found ? Number(found.dataset.id) : null,
        top: box ? box.top : null,
        focused: found !== null && document.activeElement === found,
        inView: !!box && box.top >= (form ? form.bottom : 0) && box.bottom <= window.innerHeight,
        back: !bar.hidden && bar.getClientRects().length > 0 ? back.textContent : null,
        backInView: !bar.hidden && back.getBoundingClientRect().bottom <= window.innerHeight,
        scrollY: window.scrollY,
    };";

/// Waits until the search results answer `query`, and returns what the reader sees.
async fn search_results(page: &Page, query: &str) -> Value {
    page.wait_for(
        &format!("the results for {query:?}"),
        &format!(
            "{SEARCH_SEEN} return search.shown && search.query === {} && !document
                 .getElementById('search-panel').hasAttribute('aria-busy') && search;",
            json!(query)
        ),
    )
    .await
}

/// The result for message `id` among what `search_results` saw.
fn hit(seen: &Value, id: u64) -> &Value {
    seen["hits"]
        .as_array()
        .and_then(|hits| hits.iter().find(|h| h["id"] == id))
        .unwrap_or_else(|| panic!("no result for message {id}: {seen}"))
}

fn hit_ids(seen: &Value) -> Vec<u64> {
    seen["hits"]
        .as_array()
        .expect("a list of results")
        .iter()
        .map(|h| h["id"].as_u64().expect("an id"))
        .collect()
}

fn id_of(message: &Value) -> u64 {
    message["id"].as_u64().expect("a message id")
}

#[tokio::test]
async fn search_marks_the_matched_words_and_a_result_opens_in_its_context_which_live_posts_do_not_move(
) {
    const KEY: &str = "search-test-author-key-42";
    let Some(chrome) = chrome() else { return };
    // A window of 50: the found message is far below what the live board shows.
    let board = Board::start(&["--rate-limit", "0", "--history", "50"]);
    post_many(&board, 60).await;
    let before = id_of(&post_with_key(&board, "Bea", "just before the lunch one", KEY).await);
    let found = id_of(&post(&board, "Ana", "🎉 lunch at the Café today").await);
    let after = id_of(&post_with_key(&board, "Bea", "just after the lunch one", KEY).await);
    let markup = id_of(&post(&board, "Cy", "<b>cafe</b> run, anyone?").await);
    post_many(&board, 60).await;

    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    let live = page.ids().await;
    assert!(!live.contains(&found), "the live board does not show it");

    // The name is searched too.
    page.type_into("#search", "ana").await;
    let seen = search_results(&page, "ana").await;
    assert_eq!(hit(&seen, found)["nameMarks"], json!(["Ana"]), "{seen}");

    // An accented word found without its accent, after an emoji: the mark
    // sits on the word, counted in characters and not in UTF-16 units.
    page.type_into("#search", &format!("{CONTROL}a{NO_MODIFIERS}cafe"))
        .await;
    let seen = search_results(&page, "cafe").await;
    assert_eq!(hit_ids(&seen), [markup, found], "newest first: {seen}");
    let lunch = hit(&seen, found);
    assert_eq!(lunch["text"], "🎉 lunch at the Café today");
    assert_eq!(lunch["marks"], json!(["Café"]));
    assert_eq!(lunch["lead"], "🎉 lunch at the ");
    assert_eq!(lunch["name"], "Ana");
    // Markup in a result is text, with the mark inside it.
    let run = hit(&seen, markup);
    assert_eq!(run["text"], "<b>cafe</b> run, anyone?");
    assert_eq!(run["marks"], json!(["cafe"]));
    assert_eq!(run["lead"], "<b>");
    assert_eq!(
        page.run("return document.querySelector('#search-results b') === null")
            .await,
        true
    );
    assert_eq!(seen["status"], "2 messages match");
    assert_eq!(seen["expanded"], "true");

    // Opened: the list is the found message amid 25 on each side, marked,
    // focused and in view.
    page.click(&format!("#search-hit-{found}")).await;
    let context = page
        .wait_for(
            "the found message in its context",
            &format!("{CONTEXT_SEEN} return context.found === {found} && context;"),
        )
        .await;
    assert_eq!(
        page.ids().await,
        (found - 25..=found + 25).rev().collect::<Vec<_>>()
    );
    assert_eq!(context["focused"], true, "{context}");
    assert_eq!(context["inView"], true, "{context}");
    assert_eq!(context["back"], "Back to latest", "{context}");
    assert_eq!(
        page.run(&format!("{SEARCH_SEEN} return search.shown"))
            .await,
        false,
        "the results close"
    );

    // Edits and deletions of what is shown apply.
    edit_over_http(&board, after, KEY, "just after, edited").await;
    delete_over_http(&board, before, KEY).await;
    page.wait_for(
        "the edit and the deletion in the context",
        &format!(
            "{SEEN} return seen({after})?.body === 'just after, edited' && seen({before}) === null"
        ),
    )
    .await;

    // A live post is counted, and moves nothing.
    let still = page.run(&format!("{CONTEXT_SEEN} return context;")).await;
    let news = id_of(&post(&board, "Dee", "news while away").await);
    let counted = page
        .wait_for(
            "the new message counted on Back to latest",
            &format!("{CONTEXT_SEEN} return context.back === 'Back to latest · 1 new' && context;"),
        )
        .await;
    assert_eq!(counted["top"], still["top"], "the view did not move");
    assert_eq!(counted["scrollY"], still["scrollY"]);
    assert!(!page.ids().await.contains(&news));

    // The context reaches further both ways, newer messages above it
    // without moving what is on screen.
    let expected = |query: &str| {
        let board_addr = board.addr;
        let query = query.to_owned();
        async move {
            let page = common::get(board_addr, &format!("/api/messages?{query}")).await;
            common::ids(page.json().as_array().expect("a list"))
        }
    };
    let mut all = expected(&format!("since=0&limit={}", news - 1)).await;
    all.reverse();
    page.click("#show-older").await;
    page.wait_for(
        "the older messages below the context",
        "return Number(document.querySelector('#messages > :last-child').dataset.id) === 1",
    )
    .await;
    // (In sight below the sticky form first, where a reader scrolling up finds it.)
    let top = page
        .run(&format!(
            "document.getElementById('show-newer').scrollIntoView({{block: 'center'}});
             {CONTEXT_SEEN} return context.top;"
        ))
        .await;
    page.click("#show-newer").await;
    page.wait_for(
        "the newer messages above the context",
        &format!(
            "return Number(document.querySelector('#messages > *').dataset.id) >= {}",
            all[0]
        ),
    )
    .await;
    assert_eq!(page.ids().await, all, "every message once, in order");
    assert_eq!(
        page.run(&format!("{CONTEXT_SEEN} return context.top;"))
            .await,
        top,
        "the found message stays where it was"
    );

    // Back to the live board: the latest 50 (as a new page gets them), the
    // newest on top, in view.
    let latest = common::get(board.addr, "/api/messages").await.json();
    let mut latest = common::ids(latest.as_array().expect("a list"));
    latest.reverse();
    page.click("#back-to-latest").await;
    page.wait_for(
        "the live board again",
        &format!(
            "{CONTEXT_SEEN} return context.found === null && context.back === null
                 && Number(document.querySelector('#messages > *')?.dataset.id) === {news}"
        ),
    )
    .await;
    assert_eq!(page.ids().await, latest);
    assert_eq!(latest.len(), 50);
    assert_eq!(page.run("return window.scrollY").await, 0);
    // And it is live again.
    let later = id_of(&post(&board, "Dee", "and live again").await);
    page.wait_for(
        "a new message on top",
        &format!("return Number(document.querySelector('#messages > *')?.dataset.id) === {later}"),
    )
    .await;
}

#[tokio::test]
async fn search_works_from_the_keyboard_alone() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&["--rate-limit", "0"]);
    post_many(&board, 30).await;
    let found = id_of(&post(&board, "Ana", "Café at noon?").await);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;

    page.press("/").await;
    assert_eq!(
        page.run("return document.activeElement.id").await,
        "search",
        "/ goes to the search field"
    );
    page.press("cafe").await;
    let seen = search_results(&page, "cafe").await;
    assert_eq!(hit_ids(&seen), [found]);
    assert_eq!(seen["active"], Value::Null, "no result is chosen yet");
    page.press(ARROW_DOWN).await;
    let seen = page.run(&format!("{SEARCH_SEEN} return search;")).await;
    assert_eq!(seen["active"], format!("search-hit-{found}"));
    assert_eq!(
        page.run(&format!(
            "return document.getElementById('search-hit-{found}').getAttribute('aria-selected')"
        ))
        .await,
        "true"
    );
    page.press(ENTER).await;
    page.wait_for(
        "the found message, focused",
        &format!("{CONTEXT_SEEN} return context.found === {found} && context.focused"),
    )
    .await;

    // Paging the results: 20, then "More results" chosen with the arrows.
    page.press("/").await;
    page.press("entry").await;
    let seen = search_results(&page, "entry").await;
    assert_eq!(hit_ids(&seen), (11..=30).rev().collect::<Vec<_>>());
    assert_eq!(seen["more"], true);
    assert_eq!(seen["status"], "20 messages match, more below");
    page.press(&ARROW_DOWN.repeat(25)).await;
    let seen = page.run(&format!("{SEARCH_SEEN} return search;")).await;
    assert_eq!(
        seen["active"], "search-more",
        "the arrows stop at the last option"
    );
    page.press(ENTER).await;
    let seen = page
        .wait_for(
            "the next results",
            &format!("{SEARCH_SEEN} return search.hits.length === 30 && search;"),
        )
        .await;
    assert_eq!(hit_ids(&seen), (1..=30).rev().collect::<Vec<_>>());
    assert_eq!(seen["more"], false);
    assert_eq!(
        seen["active"], "search-hit-10",
        "the first new result is chosen"
    );
    page.press(ARROW_UP).await;
    let seen = page.run(&format!("{SEARCH_SEEN} return search;")).await;
    assert_eq!(seen["active"], "search-hit-11");

    // A query the board refuses says why; one that matches nothing says so.
    // (Typed into the field, where Control stays down for the `a`.)
    page.type_into(
        "#search",
        &format!("{CONTROL}a{NO_MODIFIERS}{}", "w ".repeat(17)),
    )
    .await;
    let seen = page
        .wait_for(
            "the board's refusal",
            &format!("{SEARCH_SEEN} return search.problem && search;"),
        )
        .await;
    assert!(
        seen["status"].as_str().is_some_and(|s| s
            .starts_with("The board cannot search for that: ")
            && s.contains("16")),
        "{seen}"
    );
    page.type_into("#search", &format!("{CONTROL}a{NO_MODIFIERS}zzzz"))
        .await;
    let seen = search_results(&page, "zzzz").await;
    assert_eq!(seen["status"], "No messages match");
    assert_eq!(seen["hits"], json!([]));

    // Escape clears the field and closes the results.
    page.press(ESCAPE).await;
    let seen = page.run(&format!("{SEARCH_SEEN} return search;")).await;
    assert_eq!(
        (&seen["value"], &seen["shown"], &seen["expanded"]),
        (&json!(""), &json!(false), &json!("false")),
        "{seen}"
    );

    // Back to latest from the keyboard, and `/` typed in the message box is a slash.
    page.run("document.getElementById('back-to-latest').focus()")
        .await;
    page.press(ENTER).await;
    page.wait_for(
        "the live board again",
        &format!("{CONTEXT_SEEN} return context.found === null && context.back === null"),
    )
    .await;
    page.click("#message").await;
    page.press("a/b").await;
    assert_eq!(
        page.run("return [document.activeElement.id, document.getElementById('message').value]")
            .await,
        json!(["message", "a/b"])
    );
}

#[tokio::test]
async fn on_a_phone_search_opens_from_its_button_and_its_results_fit_the_screen() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&["--rate-limit", "0"]);
    post_many(&board, 40).await;
    let found = id_of(
        &post(
            &board,
            "A rather long display name that keeps going",
            &format!(
                "{} the café is open {}",
                "words before ".repeat(20),
                "unbreakable".repeat(30)
            ),
        )
        .await,
    );
    post_many(&board, 40).await;
    let page = chrome.open(&board.url(), Screen::Phone).await;
    page.wait_connected().await;
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth";
    assert_eq!(page.run(fits).await, true);
    let shown = "return [...arguments].map(id => {
        const e = document.getElementById(id);
        const r = e.getBoundingClientRect();
        return e.getClientRects().length > 0 && [r.width >= 44 && r.height >= 44, r.left >= 0 && r.right <= window.innerWidth];
    })";
    assert_eq!(
        page.run_with(shown, json!(["search-toggle", "search"]))
            .await,
        json!([[true, true], false]),
        "the field folds into its button"
    );

    page.click("#search-toggle").await;
    assert_eq!(
        page.run_with(shown, json!(["search-toggle", "search"]))
            .await,
        json!([[true, true], [true, true]]),
        "the field opens across the screen"
    );
    assert_eq!(page.run("return document.activeElement.id").await, "search");
    page.type_into("#search", "cafe").await;
    let seen = search_results(&page, "cafe").await;
    let result = hit(&seen, found);
    assert_eq!(result["marks"], json!(["café"]));
    assert!(
        result["text"].as_str().is_some_and(|t| t.starts_with('…')),
        "a long message is shown from shortly before its match: {result}"
    );
    let panel = page
        .run(
            "const r = document.getElementById('search-panel').getBoundingClientRect();
             return {left: r.left >= 0, right: r.right <= window.innerWidth, bottom: r.bottom <= window.innerHeight}",
        )
        .await;
    assert_eq!(
        panel,
        json!({"left": true, "right": true, "bottom": true}),
        "the results fit the screen"
    );
    assert_eq!(page.run(fits).await, true, "nothing scrolls sideways");

    page.click(&format!("#search-hit-{found}")).await;
    let context = page
        .wait_for(
            "the found message in its context",
            &format!("{CONTEXT_SEEN} return context.found === {found} && context;"),
        )
        .await;
    assert_eq!(context["inView"], true, "{context}");
    assert_eq!(context["backInView"], true, "{context}");
    assert_eq!(page.run(fits).await, true);

    // Sending from the context goes back to the live board, the post on top.
    page.type_into("#message", &format!("Sent while reading old ones{ENTER}"))
        .await;
    page.wait_for(
        "the live board again, the post on top",
        &format!(
            "{CONTEXT_SEEN} return context.found === null && context.back === null
                 && document.querySelector('#messages > * .body')?.textContent
                     === 'Sent while reading old ones'"
        ),
    )
    .await;
    assert_eq!(
        page.run("return document.querySelectorAll('#messages .body').length")
            .await,
        json!(82),
        "the newest 200 (all 82 messages), each once"
    );

    // The wall has no search.
    page.goto(&format!("{}/wall", board.url())).await;
    page.wait_connected().await;
    assert_eq!(
        page.run(
            "return [document.getElementById('search'), document.getElementById('search-toggle')]"
        )
        .await,
        json!([null, null])
    );
}

// ---- Files -----------------------------------------------------------------

/// Script defining `png(name, width, height)`: a Promise of a File holding
/// a PNG of that size, drawn on a canvas (a blue field around a yellow
/// block, so that it is not blank); append the rest of the script.
const MAKE_PNG: &str = "
    const png = (name, width, height) => new Promise((resolve) => {
        const canvas = document.createElement('canvas');
        canvas.width = width;
        canvas.height = height;
        const g = canvas.getContext('2d');
        g.fillStyle = '#2f6db5';
        g.fillRect(0, 0, width, height);
        g.fillStyle = '#ffd24a';
        g.fillRect(width / 4, height / 4, width / 2, height / 2);
        canvas.toBlob((blob) => resolve(new File([blob], name, {type: 'image/png'})), 'image/png');
    });";

/// Script defining `sha256(blob)`: a Promise of the hex of its SHA-256,
/// which is the id the board gives a file (127.0.0.1 is a secure context,
/// so the page has `crypto.subtle`); append the rest of the script.
const SHA256: &str = "
    const sha256 = async (blob) => {
        const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
        return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
    };";

/// Pastes the files `files` (a script expression, after `MAKE_PNG`, for a
/// list of Files or of Promises of them) into the message box, as Ctrl+V
/// of copied files does: a paste event whose clipboard holds them. Keeps
/// the files in `window.__pasted`; returns whether the page took the paste
/// (a file is not pasted as text).
async fn paste_files(page: &Page, files: &str) -> Value {
    page.run(&format!(
        "{MAKE_PNG}
         return (async () => {{
             const files = await Promise.all({files});
             window.__pasted = files;
             const data = new DataTransfer();
             for (const file of files) data.items.add(file);
             const box = document.getElementById('message');
             box.focus();
             const paste = new ClipboardEvent('paste', {{clipboardData: data, bubbles: true, cancelable: true}});
             box.dispatchEvent(paste);
             return paste.defaultPrevented;
         }})();"
    ))
    .await
}

/// Script that puts the chips under the message box in `chips`: the name,
/// state, detail line and progress of each; append a `return`.
const ATTACHMENTS: &str = "
    const chips = [...document.querySelectorAll('#attachments > .attachment')].map(c => ({
        name: c.querySelector('.file-name').textContent,
        state: c.dataset.state,
        detail: c.querySelector('.file-size').textContent,
        progress: c.querySelector('progress').hidden ? null : c.querySelector('progress').value,
    }));";

/// Waits until the message box has `count` chips, all of them uploaded; returns them.
async fn wait_uploaded(page: &Page, count: usize) -> Value {
    page.wait_for(
        &format!("{count} uploaded files under the message box"),
        &format!(
            "{ATTACHMENTS} return chips.length === {count} && chips.every(c => c.state === 'done') && chips;"
        ),
    )
    .await
}

/// Script defining `files(item)`: what the reader sees of a message's text
/// and files, or null for no message: the text (null while hidden), each
/// preview (its link, the attributes of its image, whether it has loaded,
/// its natural and its shown size) and each chip (link, `download`, name,
/// size line and icon); append a `return`.
const FILES_SEEN: &str = "
    const files = (item) => {
        if (!item) return null;
        const body = item.querySelector('.body');
        return {
            id: Number(item.dataset.id),
            body: body.hidden || body.getClientRects().length === 0 ? null : body.textContent,
            previews: [...item.querySelectorAll('.file-preview')].map(a => {
                const img = a.querySelector('img');
                const box = img.getBoundingClientRect();
                const link = a.getBoundingClientRect();
                return {
                    // Room in the link beside or below the image, once it has loaded.
                    slack: img.complete ? [link.width - box.width, link.height - box.height] : null,
                    href: a.getAttribute('href'), src: img.getAttribute('src'), alt: img.alt,
                    loading: img.getAttribute('loading'), loaded: img.complete && img.naturalWidth > 0,
                    naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
                    left: box.left, right: box.right, width: box.width, height: box.height,
                };
            }),
            chips: [...item.querySelectorAll('a.file-chip')].map(a => ({
                href: a.getAttribute('href'), download: a.getAttribute('download'),
                name: a.querySelector('.file-name').textContent,
                size: a.querySelector('.file-size').textContent,
                icon: a.querySelector('svg.file-icon').getAttribute('class'),
            })),
        };
    };
    const top = files(document.querySelector('#messages > *'));";

/// Script that puts what the reader sees of the image viewer in `viewer`:
/// whether it is open, the name, the image's source, natural and shown
/// size, and the download link; append a `return`.
const VIEWER: &str = "
    const dialog = document.getElementById('viewer');
    const image = document.getElementById('viewer-image');
    const link = document.getElementById('viewer-download');
    const viewer = {
        open: dialog.open && dialog.getClientRects().length > 0,
        name: document.getElementById('viewer-name').textContent,
        src: image.getAttribute('src'),
        alt: image.alt,
        naturalWidth: image.naturalWidth,
        width: image.getBoundingClientRect().width,
        height: image.getBoundingClientRect().height,
        fits: image.getBoundingClientRect().right <= window.innerWidth
            && image.getBoundingClientRect().bottom <= window.innerHeight,
        href: link.getAttribute('href'),
        download: link.getAttribute('download'),
    };";

/// The id in a `/files/<id>` link, checked to be 64 lowercase hex digits (a SHA-256).
fn file_id(href: &Value) -> String {
    let id = href
        .as_str()
        .and_then(|h| h.strip_prefix("/files/"))
        .unwrap_or_else(|| panic!("a link to /files/<id>, not {href}"));
    assert!(
        id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "a file's id is its SHA-256 in hex, not {id:?}"
    );
    id.to_owned()
}

/// Makes the page hold every upload it starts (`POST /api/files`) until
/// `window.__releaseUploads()`, and note each upload it opens in
/// `window.__uploads` and each it aborts in `window.__aborted` (by name).
async fn hold_uploads(page: &Page) {
    page.run(
        "window.__uploads = [];
         window.__aborted = [];
         window.__held = [];
         const open = XMLHttpRequest.prototype.open;
         const send = XMLHttpRequest.prototype.send;
         const abort = XMLHttpRequest.prototype.abort;
         XMLHttpRequest.prototype.open = function (method, url, ...rest) {
             this.__url = String(url);
             if (this.__url.startsWith('/api/files')) window.__uploads.push(this.__url);
             return open.call(this, method, url, ...rest);
         };
         XMLHttpRequest.prototype.send = function (body) {
             if (this.__url.startsWith('/api/files') && window.__holding) window.__held.push([this, body]);
             else send.call(this, body);
         };
         XMLHttpRequest.prototype.abort = function () {
             window.__aborted.push(new URLSearchParams(this.__url.split('?')[1]).get('name'));
             window.__held = window.__held.filter(([xhr]) => xhr !== this);
             return abort.call(this);
         };
         window.__holding = true;
         window.__releaseUploads = () => {
             window.__holding = false;
             for (const [xhr, body] of window.__held.splice(0)) send.call(xhr, body);
         };",
    )
    .await;
}

#[tokio::test]
async fn an_image_pasted_into_the_message_box_appears_in_another_page_as_a_preview_that_opens_full_size(
) {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let alice = chrome.open(&board.url(), Screen::Desktop).await;
    let bob = chrome.open(&board.url(), Screen::Desktop).await;
    alice.wait_connected().await;
    bob.wait_connected().await;
    record_websockets(&alice).await;

    // Cells copied from a spreadsheet are text with a picture of them:
    // pasted into the box, they are text, not a file.
    let cells = alice
        .run(&format!(
            "{MAKE_PNG}
             return (async () => {{
                 const data = new DataTransfer();
                 data.setData('text/plain', 'Room\\tSeats\\nOrion\\t8');
                 data.setData('text/html', '<table><tr><td>Room</td><td>Seats</td></tr></table>');
                 data.items.add(await png('cells.png', 120, 40));
                 const box = document.getElementById('message');
                 const paste = new ClipboardEvent('paste', {{clipboardData: data, bubbles: true, cancelable: true}});
                 box.dispatchEvent(paste);
                 return {{taken: paste.defaultPrevented, chips: document.querySelectorAll('.attachment').length}};
             }})();"
        ))
        .await;
    assert_eq!(cells, json!({"taken": false, "chips": 0}));

    alice.type_into("#name", "Alice").await;
    assert_eq!(
        paste_files(&alice, "[png('whiteboard.png', 640, 480)]").await,
        true,
        "the page takes a pasted image, rather than the box a text"
    );
    let chips = wait_uploaded(&alice, 1).await;
    assert_eq!(chips[0]["name"], "whiteboard.png", "{chips}");
    alice
        .type_into("#message", &format!("The whiteboard after planning{ENTER}"))
        .await;

    let top = bob
        .wait_for(
            "Alice's post in Bob's page, its image loaded",
            &format!("{FILES_SEEN} return top && top.previews.length === 1 && top.previews[0].loaded && top;"),
        )
        .await;
    assert_eq!(top["body"], "The whiteboard after planning", "{top}");
    assert_eq!(top["chips"], json!([]), "an image is no chip: {top}");
    let preview = &top["previews"][0];
    let id = file_id(&preview["href"]);
    assert_eq!(preview["src"], preview["href"], "{preview}");
    assert_eq!(preview["alt"], "whiteboard.png", "{preview}");
    assert_eq!(preview["loading"], "lazy", "{preview}");
    assert_eq!(
        (&preview["naturalWidth"], &preview["naturalHeight"]),
        (&json!(640), &json!(480)),
        "the image itself: {preview}"
    );
    assert_eq!(
        (&preview["width"], &preview["height"]),
        (&json!(320), &json!(240)),
        "shown within 320×240, in its proportions: {preview}"
    );
    assert_eq!(
        preview["slack"],
        json!([0, 0]),
        "the link is the image's size: {preview}"
    );
    let id_of_pasted = alice
        .run(&format!("{SHA256} return sha256(window.__pasted[0]);"))
        .await;
    assert_eq!(
        id_of_pasted,
        json!(id),
        "the board names a file by its SHA-256"
    );

    // The post named the upload; once the board had it, the box is empty again.
    let posts = sent_posts(&alice).await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["files"], json!([id]), "{posts:?}");
    alice
        .wait_for(
            "the chips under Alice's box to go with the post",
            "return document.getElementById('attachments').hidden
                 && document.querySelectorAll('#attachments > *').length === 0
                 && document.getElementById('message').value === ''",
        )
        .await;

    // A click opens the image full size, with its name and a download link; Escape closes it.
    bob.click("#messages > :first-child .file-preview").await;
    let viewer = bob
        .wait_for(
            "the viewer with the image",
            &format!("{VIEWER} return viewer.open && viewer.naturalWidth > 0 && viewer;"),
        )
        .await;
    assert_eq!(viewer["name"], "whiteboard.png", "{viewer}");
    assert_eq!(viewer["alt"], "whiteboard.png", "{viewer}");
    assert_eq!(viewer["src"], preview["href"], "{viewer}");
    assert_eq!(viewer["href"], preview["href"], "{viewer}");
    assert_eq!(viewer["download"], "whiteboard.png", "{viewer}");
    assert_eq!(
        (&viewer["width"], &viewer["height"]),
        (&json!(640), &json!(480)),
        "at full size, which fits this screen: {viewer}"
    );
    bob.press(ESCAPE).await;
    bob.wait_for(
        "Escape to close the viewer",
        &format!("{VIEWER} return !viewer.open;"),
    )
    .await;
    assert_eq!(
        bob.run("return document.activeElement.matches('.file-preview')")
            .await,
        true,
        "focus goes back to the preview"
    );

    // A click beside the image closes it too, and so does its button.
    bob.click("#messages > :first-child .file-preview").await;
    bob.wait_for("the viewer again", &format!("{VIEWER} return viewer.open;"))
        .await;
    let beside = fantoccini::actions::MouseActions::new("mouse".to_owned())
        .then(fantoccini::actions::PointerAction::MoveTo {
            duration: None,
            x: 20.0,
            y: 20.0,
        })
        .then(fantoccini::actions::PointerAction::Down {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        })
        .then(fantoccini::actions::PointerAction::Up {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        });
    in_time(
        "a click beside the image",
        bob.client.perform_actions(beside),
    )
    .await
    .unwrap_or_else(|e| panic!("clicking beside the image failed: {e}"));
    bob.wait_for(
        "a click beside the image to close the viewer",
        &format!("{VIEWER} return !viewer.open;"),
    )
    .await;
    bob.click("#messages > :first-child .file-preview").await;
    bob.wait_for("the viewer again", &format!("{VIEWER} return viewer.open;"))
        .await;
    bob.click("#viewer-close").await;
    bob.wait_for(
        "the close button to close the viewer",
        &format!("{VIEWER} return !viewer.open;"),
    )
    .await;
}

#[tokio::test]
async fn a_file_dropped_on_the_page_shows_the_drop_zone_then_goes_alone_as_a_chip_that_downloads_it(
) {
    const TEXT: &str = "Agenda\n1. Files on the board\n2. Lunch\n";
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let alice = chrome.open(&board.url(), Screen::Desktop).await;
    let bob = chrome.open(&board.url(), Screen::Desktop).await;
    alice.wait_connected().await;
    bob.wait_connected().await;

    // `drag(kind, selector)` sends one drag event with the file to an element.
    let drag = "
        const drag = (kind, selector) => {
            const event = new DragEvent(kind, {dataTransfer: window.__drag, bubbles: true, cancelable: true});
            document.querySelector(selector).dispatchEvent(event);
            return event.defaultPrevented;
        };
        const zone = document.getElementById('drop-zone');
        const shown = () => !zone.hidden && zone.getClientRects().length > 0;";
    alice
        .run_with(
            "window.__drag = new DataTransfer();
             window.__drag.items.add(new File([arguments[0]], 'agenda.txt', {type: 'text/plain'}));",
            json!([TEXT]),
        )
        .await;
    let entered = alice
        .run(&format!(
            "{drag} return {{taken: drag('dragenter', '#board'), shown: shown(), text: zone.textContent.trim()}};"
        ))
        .await;
    assert_eq!(
        entered,
        json!({"taken": true, "shown": true, "text": "Drop files to attach them to your post"})
    );
    // Moving over a child enters it before leaving its parent: the zone stays.
    let moved = alice
        .run(&format!(
            "{drag} drag('dragenter', '#messages'); drag('dragleave', '#board'); return shown();"
        ))
        .await;
    assert_eq!(
        moved, true,
        "the drop zone stays while the drag moves about the page"
    );
    let left = alice
        .run(&format!(
            "{drag} drag('dragleave', '#messages'); return shown();"
        ))
        .await;
    assert_eq!(
        left, false,
        "the drop zone goes when the drag leaves the page"
    );

    let dropped = alice
        .run(&format!(
            "{drag} drag('dragenter', '#messages');
             return {{taken: drag('drop', '#messages'), shown: shown()}};"
        ))
        .await;
    assert_eq!(
        dropped,
        json!({"taken": true, "shown": false}),
        "the page takes the drop, rather than the browser opening the file"
    );
    let chips = wait_uploaded(&alice, 1).await;
    assert_eq!(chips[0]["name"], "agenda.txt", "{chips}");
    assert_eq!(
        chips[0]["detail"],
        format!("{} bytes", TEXT.len()),
        "{chips}"
    );

    // Files alone make a post: no text needed.
    alice.click("#send").await;
    let top = bob
        .wait_for(
            "the file in Bob's page",
            &format!("{FILES_SEEN} return top && top.chips.length === 1 && top;"),
        )
        .await;
    assert_eq!(
        top["body"],
        Value::Null,
        "a post of files alone shows just them: {top}"
    );
    assert_eq!(top["previews"], json!([]), "{top}");
    let chip = &top["chips"][0];
    let id = file_id(&chip["href"]);
    assert_eq!(chip["download"], "agenda.txt", "{chip}");
    assert_eq!(chip["name"], "agenda.txt", "{chip}");
    assert_eq!(
        chip["size"],
        format!("Text · {} bytes", TEXT.len()),
        "{chip}"
    );
    assert!(
        chip["icon"]
            .as_str()
            .is_some_and(|c| c.contains("kind-text")),
        "a text file's icon: {chip}"
    );

    // The link gives the bytes that were dropped, as a download.
    let fetched = bob
        .run_with(
            &format!(
                "{SHA256}
                 return (async () => {{
                     const response = await fetch(arguments[0]);
                     const blob = await response.blob();
                     return {{
                         status: response.status,
                         disposition: response.headers.get('Content-Disposition') || '',
                         text: await blob.text(),
                         sha256: await sha256(blob),
                     }};
                 }})();"
            ),
            json!([chip["href"]]),
        )
        .await;
    assert_eq!(fetched["status"], 200, "{fetched}");
    assert_eq!(fetched["text"], TEXT, "{fetched}");
    assert_eq!(fetched["sha256"], json!(id), "{fetched}");
    assert!(
        fetched["disposition"]
            .as_str()
            .is_some_and(|d| d.starts_with("attachment")),
        "a text file is served as a download: {fetched}"
    );
    bob.click("#messages > :first-child a.file-chip").await;
    let saved = bob.downloads.join("agenda.txt");
    let deadline = Instant::now() + WAIT;
    while !saved.is_file() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let bytes =
        std::fs::read(&saved).unwrap_or_else(|e| panic!("the chip saves {}: {e}", saved.display()));
    assert_eq!(bytes, TEXT.as_bytes());
}

#[tokio::test]
async fn a_file_picked_with_the_attach_button_goes_with_the_text_through_the_outbox_and_an_edit_until_deleted(
) {
    const TEXT: &str = "Numbers for Q3";
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let alice = chrome.open(&board.url(), Screen::Desktop).await;
    let bob = chrome.open(&board.url(), Screen::Desktop).await;
    alice.wait_connected().await;
    bob.wait_connected().await;

    // A file on disk, picked as a person would in the file chooser.
    let dir = tempfile::tempdir().expect("a temp dir for the file to pick");
    let path = dir.path().join("Q3 report.pdf");
    let content: Vec<u8> = b"%PDF-1.4\n"
        .iter()
        .copied()
        .chain((0..3000u32).map(|n| (n * 7 % 251) as u8))
        .collect();
    std::fs::write(&path, &content).expect("the file to pick is written");
    assert_eq!(
        alice
            .run(
                "const input = document.getElementById('file-input');
                 return {multiple: input.multiple, accept: input.accept,
                         button: document.getElementById('attach').getClientRects().length > 0};"
            )
            .await,
        json!({"multiple": true, "accept": "", "button": true}),
        "several files at once, of any kind (phones then offer the camera too)"
    );
    let input = alice.find("#file-input").await;
    in_time(
        "picking a file",
        input.send_keys(&path.display().to_string()),
    )
    .await
    .unwrap_or_else(|e| panic!("picking {} failed: {e}", path.display()));
    let chips = wait_uploaded(&alice, 1).await;
    assert_eq!(chips[0]["name"], "Q3 report.pdf", "{chips}");
    assert_eq!(chips[0]["detail"], "2.9 KB", "3,009 bytes: {chips}");

    // The post waits in the outbox with its file until the board confirms it,
    // and a reloaded page sends it again with the file.
    hold_posts(&alice).await;
    alice.type_into("#message", TEXT).await;
    alice.click("#send").await;
    let stored = alice
        .wait_for(
            "the post in the outbox",
            &format!("const o = (() => {{ {STORED_OUTBOX} }})(); return o.length === 1 && o;"),
        )
        .await;
    let files = &stored[0]["files"];
    assert_eq!(files[0]["name"], "Q3 report.pdf", "{stored}");
    assert_eq!(files[0]["size"], content.len(), "{stored}");
    alice.goto(&board.url()).await;
    alice.wait_connected().await;
    let top = bob
        .wait_for(
            "the post from the reloaded page in Bob's page",
            &format!("{FILES_SEEN} return top && top.chips.length === 1 && top;"),
        )
        .await;
    assert_eq!(top["body"], TEXT, "{top}");
    let chip = &top["chips"][0];
    assert_eq!(
        json!(file_id(&chip["href"])),
        files[0]["id"],
        "the post names the file it was sent with: {chip}"
    );
    assert_eq!(chip["download"], "Q3 report.pdf", "{chip}");
    assert_eq!(chip["size"], "PDF · 2.9 KB", "{chip}");
    assert!(
        chip["icon"]
            .as_str()
            .is_some_and(|c| c.contains("kind-pdf")),
        "{chip}"
    );
    let fetched = bob
        .run_with(
            "return fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => Array.from(new Uint8Array(b)));",
            json!([chip["href"]]),
        )
        .await;
    assert_eq!(
        fetched,
        json!(content),
        "the link gives the picked file's bytes"
    );
    alice
        .wait_for(
            "the reloaded page's box and chips to empty once the board has the post",
            "return document.getElementById('attachments').hidden
                 && document.getElementById('message').value === ''
                 && JSON.parse(localStorage.getItem('lanboard.outbox') || '[]').length === 0",
        )
        .await;
    assert_eq!(stored_copies(&board, TEXT).await, 1);

    // An edit changes the text and keeps the file; a deletion takes both away.
    alice
        .click("#messages > :first-child [data-action=edit]")
        .await;
    alice.clear(".edit-box").await;
    alice
        .type_into(".edit-box", &format!("Numbers for Q3, corrected{ENTER}"))
        .await;
    let edited = bob
        .wait_for(
            "the edit in Bob's page",
            &format!("{FILES_SEEN} return top && top.body === 'Numbers for Q3, corrected' && top;"),
        )
        .await;
    assert_eq!(
        edited["chips"], top["chips"],
        "the file stays through the edit"
    );
    alice
        .click("#messages > :first-child [data-action=delete]")
        .await;
    alice
        .click("#messages > :first-child [data-action=confirm]")
        .await;
    bob.wait_for(
        "the post and its file to leave Bob's page",
        "return document.querySelectorAll('#messages > *').length === 0
             && document.querySelectorAll('.file-chip, .file-preview').length === 0",
    )
    .await;
}

#[tokio::test]
async fn a_file_over_the_boards_limit_is_refused_in_the_page_before_any_upload() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&["--max-file-bytes", "1000"]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    hold_uploads(&page).await;
    page.run("window.__releaseUploads()").await;

    assert_eq!(
        paste_files(&page, "[new File([new Uint8Array(5000)], 'big.bin')]").await,
        true
    );
    let refused = page
        .wait_for(
            "the refusal",
            "const e = document.getElementById('form-error'); return !e.hidden && e.textContent;",
        )
        .await;
    assert_eq!(
        refused, "big.bin is 4.9 KB; the board takes files up to 1000 bytes.",
        "the limit comes from the board (--max-file-bytes), and is named"
    );
    assert_eq!(
        page.run(&format!(
            "{ATTACHMENTS} return {{chips, uploads: window.__uploads}};"
        ))
        .await,
        json!({"chips": [], "uploads": []}),
        "nothing was uploaded and nothing is attached"
    );

    // A file within the limit goes up.
    paste_files(&page, "[new File([new Uint8Array(900)], 'small.bin')]").await;
    wait_uploaded(&page, 1).await;

    // Should the page think the limit higher, the board's own refusal shows in its words.
    let said = page
        .run(
            "return fetch('/api/files?name=big.bin', {
                     method: 'POST',
                     headers: {'Content-Type': 'application/octet-stream'},
                     body: new Uint8Array(5000),
                 })
                 .then(async (r) => ({status: r.status, body: await r.json()}));",
        )
        .await;
    assert_eq!(said["status"], 413, "{said}");
    assert_eq!(said["body"]["code"], "too-large", "{said}");
    let message = said["body"]["message"]
        .as_str()
        .expect("the board says why");
    page.run("state.limits.max_file_bytes = 1e6").await;
    paste_files(&page, "[new File([new Uint8Array(5000)], 'big.bin')]").await;
    let failed = page
        .wait_for(
            "the board's refusal",
            &format!(
                "{ATTACHMENTS} const e = document.getElementById('form-error');
                 return chips.length === 2 && chips[1].state === 'failed' && !e.hidden
                     && {{chip: chips[1], error: e.textContent}};"
            ),
        )
        .await;
    assert_eq!(
        failed["error"],
        format!(
            "big.bin could not be uploaded: {}.",
            message.trim_end_matches('.')
        ),
        "{failed}"
    );
    assert_eq!(failed["chip"]["name"], "big.bin", "{failed}");

    // A post with a failed file is not sent until the file is removed.
    page.type_into("#message", &format!("Only the small one{ENTER}"))
        .await;
    assert_eq!(
        page.run("return document.getElementById('form-error').textContent")
            .await,
        "big.bin was not uploaded; remove it to send the post without it."
    );
    page.click("#attachments > :nth-child(2) .remove").await;
    page.click("#send").await;
    let top = page
        .wait_for(
            "the post with the small file",
            &format!("{FILES_SEEN} return top && top.chips.length === 1 && top;"),
        )
        .await;
    assert_eq!(top["body"], "Only the small one", "{top}");
    assert_eq!(top["chips"][0]["name"], "small.bin", "{top}");
}

#[tokio::test]
async fn an_upload_shows_its_progress_and_cancelling_it_aborts_it_and_removes_its_chip() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    hold_uploads(&page).await;
    page.run("window.__releaseUploads()").await;

    // Slow enough to watch: 256 KiB at 64 KiB a second.
    page.cdp("Network.enable", json!({})).await;
    page.cdp(
        "Network.emulateNetworkConditions",
        json!({"offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 65536}),
    )
    .await;
    paste_files(&page, "[new File([new Uint8Array(262144)], 'slow.bin')]").await;
    let moving = page
        .wait_for(
            "the progress bar to move",
            &format!(
                "{ATTACHMENTS} const c = chips[0];
                 return c && c.state === 'uploading' && c.progress > 0 && c.progress < 1 && c;"
            ),
        )
        .await;
    assert!(
        moving["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Uploading ") && d.ends_with("% of 256 KB")),
        "{moving}"
    );

    page.click("#attachments .remove").await;
    let after = page
        .run(&format!(
            "{ATTACHMENTS} return {{chips, hidden: document.getElementById('attachments').hidden,
                 aborted: window.__aborted, focused: document.activeElement.id}};"
        ))
        .await;
    assert_eq!(
        after,
        json!({"chips": [], "hidden": true, "aborted": ["slow.bin"], "focused": "message"}),
        "the upload is aborted and its chip gone, focus back in the box"
    );
    page.cdp(
        "Network.emulateNetworkConditions",
        json!({"offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
    )
    .await;
    let id = page
        .run(&format!("{SHA256} return sha256(window.__pasted[0]);"))
        .await;
    let path = format!("/files/{}", id.as_str().expect("a hex digest"));
    assert_eq!(
        common::get(board.addr, &path).await.status,
        404,
        "the board kept nothing of the cancelled upload"
    );
}

#[tokio::test]
async fn a_post_sent_while_its_upload_runs_waits_for_it_then_goes_with_the_file() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let alice = chrome.open(&board.url(), Screen::Desktop).await;
    let bob = chrome.open(&board.url(), Screen::Desktop).await;
    alice.wait_connected().await;
    bob.wait_connected().await;
    record_websockets(&alice).await;
    hold_uploads(&alice).await;

    paste_files(&alice, "[png('map.png', 300, 200)]").await;
    alice
        .type_into("#message", &format!("Where we meet{ENTER}"))
        .await;
    let waiting = alice
        .wait_for(
            "the post to wait for its upload",
            &format!(
                "{ATTACHMENTS} const note = document.getElementById('sending-files');
                 return !note.hidden && {{chips, note: note.textContent,
                     send: document.getElementById('send').disabled}};"
            ),
        )
        .await;
    assert_eq!(
        waiting,
        json!({
            "chips": [{"name": "map.png", "state": "uploading", "detail": waiting["chips"][0]["detail"], "progress": 0}],
            "note": "Your post goes as soon as its files are uploaded.",
            "send": true,
        })
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sent_posts(&alice).await,
        Vec::<Value>::new(),
        "nothing sent yet"
    );

    alice.run("window.__releaseUploads()").await;
    let top = bob
        .wait_for(
            "the post with its image in Bob's page",
            &format!("{FILES_SEEN} return top && top.previews.length === 1 && top;"),
        )
        .await;
    assert_eq!(top["body"], "Where we meet", "{top}");
    assert_eq!(top["previews"][0]["alt"], "map.png", "{top}");
    let posts = sent_posts(&alice).await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["message"], "Where we meet");
    assert_eq!(
        posts[0]["files"],
        json!([file_id(&top["previews"][0]["href"])])
    );
    alice
        .wait_for(
            "the form back to normal",
            "return document.getElementById('sending-files').hidden
                 && !document.getElementById('send').disabled
                 && document.getElementById('attachments').hidden",
        )
        .await;
}

#[tokio::test]
async fn on_a_phone_previews_fit_the_screen_and_the_wall_shows_images_large() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let alice = chrome.open(&board.url(), Screen::Desktop).await;
    alice.wait_connected().await;
    paste_files(
        &alice,
        "[png('panorama.png', 1600, 400), png('poster.png', 300, 1200)]",
    )
    .await;
    wait_uploaded(&alice, 2).await;
    alice
        .type_into("#message", &format!("From the roof{ENTER}"))
        .await;
    alice
        .wait_for(
            "the post",
            &format!("{FILES_SEEN} return top && top.previews.length === 2;"),
        )
        .await;

    let phone = chrome.open(&board.url(), Screen::Phone).await;
    phone.wait_connected().await;
    phone
        .run("document.querySelector('.file-previews').scrollIntoView({block: 'end'})")
        .await;
    let top = phone
        .wait_for(
            "both images loaded on the phone",
            &format!("{FILES_SEEN} return top && top.previews.length === 2 && top.previews.every(p => p.loaded) && top;"),
        )
        .await;
    for preview in top["previews"].as_array().expect("previews") {
        let number = |key: &str| preview[key].as_f64().expect("a number");
        let (width, height) = (number("width"), number("height"));
        assert!(
            number("left") >= 0.0 && number("right") <= 390.0,
            "inside the screen: {preview}"
        );
        assert!(width <= 320.0 && height <= 240.0, "bounded: {preview}");
        assert_eq!(preview["slack"], json!([0, 0]), "{preview}");
        let ratio = number("naturalWidth") / number("naturalHeight");
        assert!(
            (width / height - ratio).abs() < 0.05 * ratio,
            "in its own proportions: {preview}"
        );
    }
    let fits = "return {
        width: window.innerWidth,
        fits: document.documentElement.scrollWidth <= window.innerWidth,
    }";
    assert_eq!(phone.run(fits).await, json!({"width": 390, "fits": true}));
    let attach = phone
        .run("const r = document.getElementById('attach').getBoundingClientRect(); return [r.width, r.height];")
        .await;
    assert_eq!(
        attach,
        json!([44, 44]),
        "the attach button is a fingertip wide"
    );

    // Full size on a phone is as large as the screen allows.
    phone.click("#messages > :first-child .file-preview").await;
    let viewer = phone
        .wait_for(
            "the viewer on the phone",
            &format!("{VIEWER} return viewer.open && viewer.naturalWidth > 0 && viewer;"),
        )
        .await;
    assert_eq!(viewer["fits"], true, "{viewer}");
    assert!(
        viewer["width"].as_f64().is_some_and(|w| w > 300.0),
        "wider than its preview: {viewer}"
    );
    assert_eq!(phone.run(fits).await, json!({"width": 390, "fits": true}));

    // The wall shows them large, for reading from across the room.
    let wall = chrome
        .open(&format!("{}/wall", board.url()), Screen::Desktop)
        .await;
    wall.wait_connected().await;
    let top = wall
        .wait_for(
            "the images on the wall",
            &format!("{FILES_SEEN} return top && top.previews.length === 2 && top.previews.every(p => p.loaded) && top;"),
        )
        .await;
    let panorama = &top["previews"][0];
    assert_eq!(panorama["alt"], "panorama.png", "{top}");
    assert!(
        panorama["width"].as_f64().is_some_and(|w| w >= 600.0),
        "larger than on the board: {panorama}"
    );
}

/// Script defining `wav(name, seconds)` and `webm(name, width, height)`:
/// Promises of Files holding half a second of silence (16-bit PCM at
/// 8 kHz) and a short WebM video recorded from a canvas; append the rest.
const MAKE_MEDIA: &str = "
    const wav = async (name, seconds) => {
        const samples = Math.round(8000 * seconds);
        const view = new DataView(new ArrayBuffer(44 + samples * 2));
        const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
        text(0, 'RIFF'); view.setUint32(4, 36 + samples * 2, true); text(8, 'WAVE');
        text(12, 'fmt '); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
        view.setUint16(22, 1, true); view.setUint32(24, 8000, true); view.setUint32(28, 16000, true);
        view.setUint16(32, 2, true); view.setUint16(34, 16, true);
        text(36, 'data'); view.setUint32(40, samples * 2, true);
        return new File([view.buffer], name, {type: 'audio/wav'});
    };
    const webm = (name, width, height) => new Promise((resolve) => {
        const canvas = document.createElement('canvas');
        canvas.width = width;
        canvas.height = height;
        const g = canvas.getContext('2d');
        let frame = 0;
        const draw = () => {
            g.fillStyle = frame % 2 ? '#2f6db5' : '#ffd24a';
            g.fillRect(0, 0, width, height);
            frame += 1;
        };
        draw();
        const timer = setInterval(draw, 50);
        const recorder = new MediaRecorder(canvas.captureStream(20), {mimeType: 'video/webm'});
        const parts = [];
        recorder.ondataavailable = (event) => parts.push(event.data);
        recorder.onstop = () => {
            clearInterval(timer);
            resolve(new File(parts, name, {type: 'video/webm'}));
        };
        recorder.start();
        setTimeout(() => recorder.stop(), 600);
    });";

#[tokio::test]
async fn audio_and_video_get_players_that_play_them_and_chips_that_download_them() {
    let Some(chrome) = chrome() else { return };
    let board = Board::start(&[]);
    let alice = chrome.open(&board.url(), Screen::Desktop).await;
    let bob = chrome.open(&board.url(), Screen::Desktop).await;
    alice.wait_connected().await;
    bob.wait_connected().await;
    paste_files(
        &alice,
        &format!("(() => {{ {MAKE_MEDIA} return [wav('standup.wav', 0.5), webm('demo.webm', 160, 120)]; }})()"),
    )
    .await;
    wait_uploaded(&alice, 2).await;
    alice
        .type_into("#message", &format!("Today's standup, and the demo{ENTER}"))
        .await;

    let players = bob
        .wait_for(
            "the players in Bob's page",
            "const boxes = [...document.querySelectorAll('#messages > :first-child .file-media')];
             return boxes.length === 2 && boxes.map(box => {
                 const player = box.querySelector('.file-player');
                 const chip = box.querySelector('a.file-chip');
                 return {
                     tag: player.tagName, controls: player.controls, preload: player.preload,
                     src: player.getAttribute('src'), label: player.getAttribute('aria-label'),
                     href: chip.getAttribute('href'), download: chip.getAttribute('download'),
                     icon: chip.querySelector('svg').getAttribute('class'),
                 };
             });",
        )
        .await;
    for (player, (tag, name, preload, kind)) in
        players.as_array().expect("two players").iter().zip([
            ("AUDIO", "standup.wav", "none", "kind-audio"),
            ("VIDEO", "demo.webm", "metadata", "kind-video"),
        ])
    {
        file_id(&player["src"]);
        assert_eq!(player["tag"], tag, "{player}");
        assert_eq!(player["controls"], true, "{player}");
        assert_eq!(player["preload"], preload, "{player}");
        assert_eq!(player["label"], name, "{player}");
        assert_eq!(player["href"], player["src"], "{player}");
        assert_eq!(player["download"], name, "{player}");
        assert!(
            player["icon"].as_str().is_some_and(|c| c.contains(kind)),
            "{player}"
        );
    }
    assert_eq!(
        bob.run("return document.querySelectorAll('#messages > :first-child .file-chip').length")
            .await,
        2,
        "no chip twice"
    );

    // The browser can play what the board serves: the video's first frame
    // and size load by themselves, the audio's length once asked for.
    let loaded = bob
        .wait_for(
            "the players to load their media",
            "const [audio, video] = document.querySelectorAll('#messages > :first-child .file-player');
             if (audio.preload === 'none') { audio.preload = 'metadata'; audio.load(); }
             return audio.readyState >= 1 && video.readyState >= 1
                 && {duration: audio.duration, width: video.videoWidth, height: video.videoHeight};",
        )
        .await;
    assert_eq!(
        loaded,
        json!({"duration": 0.5, "width": 160, "height": 120}),
        "{loaded}"
    );
}

#[tokio::test]
async fn a_file_the_board_let_go_before_the_post_went_is_named_and_its_chip_removed() {
    let Some(chrome) = chrome() else { return };
    // Uploads no post carries go after half a second here, not an hour.
    let board = Board::start(&["--orphan-files-after", "0.5"]);
    let page = chrome.open(&board.url(), Screen::Desktop).await;
    page.wait_connected().await;
    paste_files(&page, "[png('late.png', 100, 100)]").await;
    wait_uploaded(&page, 1).await;
    let id = page
        .run(&format!("{SHA256} return sha256(window.__pasted[0]);"))
        .await;
    let path = format!("/files/{}", id.as_str().expect("a hex digest"));
    let deadline = Instant::now() + WAIT;
    while common::get(board.addr, &path).await.status != 404 {
        assert!(
            Instant::now() < deadline,
            "{path} is still there after {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }

    page.type_into("#message", &format!("Here it is{ENTER}"))
        .await;
    let refused = page
        .wait_for(
            "the refusal",
            "const e = document.getElementById('form-error'); return !e.hidden && e.textContent;",
        )
        .await;
    assert_eq!(
        refused,
        "The board no longer has late.png (an upload is kept for an hour until a post carries it); \
         attach it again and send."
    );
    assert_eq!(
        page.run(&format!(
            "{ATTACHMENTS} return {{chips, text: document.getElementById('message').value,
                 outbox: JSON.parse(localStorage.getItem('lanboard.outbox') || '[]').length}};"
        ))
        .await,
        json!({"chips": [], "text": "Here it is", "outbox": 0}),
        "the text stays for the next try; the file must be attached again"
    );
    assert_eq!(page.ids().await, Vec::<u64>::new());
}

/// Not a check: makes the README's picture of search from a board that is
/// already running, with messages posted to it. `LANBOARD_SCREENSHOT_URL`
/// is its address; the search is for `LANBOARD_SCREENSHOT_QUERY` (default
/// `lunch`) with the second result chosen, on a desktop screen (`phone`
/// in `LANBOARD_SCREENSHOT_SCREEN` for a phone's), and with
/// `LANBOARD_SCREENSHOT_OPEN=1` that result is opened in its context. The
/// PNG goes to `LANBOARD_SCREENSHOT_OUT` (default `docs/search.png`):
///
///     LANBOARD_SCREENSHOT_URL=http://127.0.0.1:4100 \
///         cargo test --test browser screenshot_of_search -- --ignored
#[tokio::test]
#[ignore = "makes docs/search.png from a running board: see its doc comment"]
async fn screenshot_of_search_for_the_readme() {
    let Some(chrome) = chrome() else { return };
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let url = std::env::var("LANBOARD_SCREENSHOT_URL")
        .expect("LANBOARD_SCREENSHOT_URL names the running board");
    let query = env("LANBOARD_SCREENSHOT_QUERY", "lunch");
    let out = env("LANBOARD_SCREENSHOT_OUT", "docs/search.png");
    let screen = match env("LANBOARD_SCREENSHOT_SCREEN", "desktop").as_str() {
        "phone" => Screen::Phone,
        _ => Screen::Desktop,
    };
    let page = chrome.open(&url, screen).await;
    if screen == Screen::Desktop {
        // The whole 1280×800 as the page, as the README's other pictures.
        let (width, height) = screen.size();
        page.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    }
    page.wait_connected().await;
    if screen == Screen::Phone {
        page.click("#search-toggle").await;
    }
    page.type_into("#search", &query).await;
    search_results(&page, &query).await;
    page.press(&ARROW_DOWN.repeat(2)).await;
    if env("LANBOARD_SCREENSHOT_OPEN", "") == "1" {
        page.press(ENTER).await;
        page.wait_for(
            "the found message",
            &format!("{CONTEXT_SEEN} return context.focused"),
        )
        .await;
    }
    // The caret blinks; the picture should not depend on when it is taken.
    page.run("document.getElementById('search').style.caretColor = 'transparent'")
        .await;
    let png = in_time("a screenshot", page.client.screenshot())
        .await
        .unwrap_or_else(|e| panic!("the screenshot failed: {e}"));
    std::fs::write(&out, png).unwrap_or_else(|e| panic!("cannot write {out}: {e}"));
}

/// Not a check: makes the README's picture of a post with an image and a
/// file, on a board that is already running (`LANBOARD_SCREENSHOT_URL`).
/// The page picks the files in `LANBOARD_SCREENSHOT_FILES` (paths, one a
/// line) with its attach button, as `LANBOARD_SCREENSHOT_NAME` with the text
/// `LANBOARD_SCREENSHOT_TEXT`, sends the post, and once its images have
/// loaded takes the picture, on a desktop screen (`phone` in
/// `LANBOARD_SCREENSHOT_SCREEN` for a phone's). The PNG goes to
/// `LANBOARD_SCREENSHOT_OUT` (default `docs/files.png`):
///
///     LANBOARD_SCREENSHOT_URL=http://127.0.0.1:4100 \
///     LANBOARD_SCREENSHOT_FILES="$(printf '%s\n' whiteboard.png 'Q3 planning slides.pdf')" \
///         cargo test --test browser screenshot_of_files -- --ignored
#[tokio::test]
#[ignore = "makes docs/files.png from a running board: see its doc comment"]
async fn screenshot_of_files_for_the_readme() {
    let Some(chrome) = chrome() else { return };
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let url = std::env::var("LANBOARD_SCREENSHOT_URL")
        .expect("LANBOARD_SCREENSHOT_URL names the running board");
    let files = std::env::var("LANBOARD_SCREENSHOT_FILES")
        .expect("LANBOARD_SCREENSHOT_FILES names the files to attach, one a line");
    let out = env("LANBOARD_SCREENSHOT_OUT", "docs/files.png");
    let screen = match env("LANBOARD_SCREENSHOT_SCREEN", "desktop").as_str() {
        "phone" => Screen::Phone,
        _ => Screen::Desktop,
    };
    // WebDriver picks several files at once as absolute paths, one a line.
    let paths: Vec<String> = files
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            std::fs::canonicalize(line.trim())
                .unwrap_or_else(|e| panic!("cannot attach {line}: {e}"))
                .display()
                .to_string()
        })
        .collect();
    let page = chrome.open(&url, screen).await;
    if screen == Screen::Desktop {
        // The whole 1280×800 as the page, as the README's other pictures.
        let (width, height) = screen.size();
        page.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    }
    page.wait_connected().await;
    page.type_into("#name", &env("LANBOARD_SCREENSHOT_NAME", "Maya Lindqvist"))
        .await;
    let input = page.find("#file-input").await;
    in_time("picking the files", input.send_keys(&paths.join("\n")))
        .await
        .unwrap_or_else(|e| panic!("picking {paths:?} failed: {e}"));
    wait_uploaded(&page, paths.len()).await;
    let text = env(
        "LANBOARD_SCREENSHOT_TEXT",
        "The whiteboard from this morning's planning, and the slides to go with it.",
    );
    page.type_into("#message", &format!("{text}{ENTER}")).await;
    page.wait_for(
        "the post, its images loaded",
        &format!(
            "{FILES_SEEN} return top && top.body === {} && top.previews.every(p => p.loaded)
                 && document.getElementById('message').value === '';",
            json!(text)
        ),
    )
    .await;
    // The box has just given up the focus ring and the caret; the picture
    // should not depend on when it is taken.
    page.run("document.activeElement.blur(); window.scrollTo(0, 0);")
        .await;
    let png = in_time("a screenshot", page.client.screenshot())
        .await
        .unwrap_or_else(|e| panic!("the screenshot failed: {e}"));
    std::fs::write(&out, png).unwrap_or_else(|e| panic!("cannot write {out}: {e}"));
}
