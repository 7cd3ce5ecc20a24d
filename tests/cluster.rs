//! Scale-out on Redis: several `lanboard` processes sharing one board through
//! a real `redis-server`, each test with its own server on a free loopback
//! port. They check what a cluster promises: one order and exactly once on
//! every node, refusals instead of silent loss while Redis is away, delivery
//! that resumes by itself, resets that never reuse an id, presence over every
//! node, the startup checks, and moving a board between SQLite and Redis.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::redis::{Persistence, Redis};
use common::{get, post, Board, Client, WAIT};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Frame;

/// The longest a send may wait before `storage-unavailable` while Redis does
/// not answer: the contract says about 2 s; the rest is slack for a busy
/// 2-core machine running other tests beside this one.
const REFUSAL: Duration = Duration::from_secs(5);

/// The longest presence may take to agree across nodes (the contract: a
/// second or two).
const CONVERGE: Duration = Duration::from_secs(5);

/// How long a client keeps listening after it has everything, so that a
/// late duplicate is caught instead of missed.
const SETTLE: Duration = Duration::from_millis(300);

/// A fresh `redis-server`, or an early (loudly announced) return when this
/// machine has none; see `common::redis::available`.
macro_rules! redis_or_skip {
    ($persistence:expr) => {
        match Redis::start($persistence) {
            Some(redis) => redis,
            None => return,
        }
    };
}

/// One WebSocket client with a record of everything the server told it.
struct Peer {
    label: String,
    /// The name it posts under; its label unless [`Peer::named`] says otherwise.
    name: String,
    client: Client,
    /// `message-added` data in arrival order; after [`Peer::resume_on`] also
    /// the missed messages the resume delivered, where they belong in time.
    added: Vec<Value>,
    /// Texts this peer posted, by ack number.
    posted: BTreeMap<u64, String>,
    /// `ack` data by ack number.
    acks: BTreeMap<u64, Value>,
    /// `error` data by ack number.
    errors: BTreeMap<u64, Value>,
    /// `board-reset` data, in arrival order.
    resets: Vec<Value>,
    /// The latest `presence` count.
    online: Option<u64>,
    /// Every frame received, for failure messages.
    log: Vec<Value>,
}

/// What one read from the socket brought.
enum Pumped {
    Frame,
    Timeout,
    Closed,
}

impl Peer {
    /// Connects to `ws_url`; `label` names the peer in failures and is the
    /// name it posts under.
    async fn connect(label: impl Into<String>, ws_url: &str) -> Peer {
        let label = label.into();
        Peer {
            name: label.clone(),
            label,
            client: Client::connect(ws_url).await,
            added: Vec::new(),
            posted: BTreeMap::new(),
            acks: BTreeMap::new(),
            errors: BTreeMap::new(),
            resets: Vec::new(),
            online: None,
            log: Vec::new(),
        }
    }

    /// Connects to `ws_url` with `?since=since`, as a page resuming does;
    /// the messages it missed start [`Peer::added`].
    async fn resuming(label: &str, ws_url: &str, since: u64) -> Peer {
        let mut peer = Peer::connect(label, &format!("{ws_url}?since={since}")).await;
        peer.added = std::mem::take(&mut peer.client.history);
        peer
    }

    /// The same peer, posting as `name`.
    fn named(mut self, name: &str) -> Peer {
        self.name = name.to_owned();
        self
    }

    /// Posts `text` as request `ack`.
    async fn post(&mut self, text: &str, ack: u64) {
        let frame = json!({"event": "add-message", "data": {"name": self.name, "message": text}, "ack": ack});
        self.posted.insert(ack, text.to_owned());
        self.client.send(frame).await;
    }

    /// Posts `text` as request `ack` with the client id `cid`.
    async fn post_with_cid(&mut self, text: &str, ack: u64, cid: &str) {
        let frame = json!({"event": "add-message", "data": {"name": self.name, "message": text, "cid": cid}, "ack": ack});
        self.posted.insert(ack, text.to_owned());
        self.client.send(frame).await;
    }

    /// Reads one frame and records it, unless `deadline` passes first or
    /// the connection ends.
    async fn pump(&mut self, deadline: Instant) -> Pumped {
        loop {
            let text = match tokio::time::timeout_at(deadline, self.client.socket.next()).await {
                Err(_) => return Pumped::Timeout,
                Ok(None | Some(Err(_)) | Some(Ok(Frame::Close(_)))) => return Pumped::Closed,
                Ok(Some(Ok(Frame::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
            };
            let frame: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{}: a frame that is not JSON ({e}): {text}", self.label)
            });
            self.record(frame);
            return Pumped::Frame;
        }
    }

    fn record(&mut self, frame: Value) {
        let ack = frame["ack"].as_u64();
        let data = frame["data"].clone();
        match frame["event"].as_str() {
            Some("message-added") => self.added.push(data),
            Some("ack") => {
                let ack = ack
                    .unwrap_or_else(|| panic!("{}: an ack without a number: {frame}", self.label));
                self.acks.insert(ack, data);
            }
            Some("error") => {
                if let Some(ack) = ack {
                    self.errors.insert(ack, data);
                }
            }
            Some("board-reset") => self.resets.push(data),
            Some("presence") => self.online = data["online"].as_u64(),
            _ => {}
        }
        self.log.push(frame);
    }

    /// Reads frames until `done` holds; panics, saying what was awaited and
    /// what did arrive, after `within` or when the connection ends.
    async fn until(&mut self, what: &str, within: Duration, done: impl Fn(&Peer) -> bool) {
        let deadline = Instant::now() + within;
        while !done(self) {
            match self.pump(deadline).await {
                Pumped::Frame => {}
                Pumped::Timeout => panic!(
                    "{}: {what} did not happen within {within:?}. It has {}",
                    self.label,
                    self.summary()
                ),
                Pumped::Closed => panic!(
                    "{}: the server closed the connection while it waited for {what}. It has {}",
                    self.label,
                    self.summary()
                ),
            }
        }
    }

    /// Waits for the answer to request `ack`: the stored message, or the
    /// error's data.
    async fn reply(&mut self, ack: u64, within: Duration) -> Result<Value, Value> {
        let what = format!("an answer to request {ack}");
        self.until(&what, within, |p| {
            p.acks.contains_key(&ack) || p.errors.contains_key(&ack)
        })
        .await;
        match self.acks.get(&ack) {
            Some(message) => Ok(message.clone()),
            None => Err(self.errors[&ack].clone()),
        }
    }

    /// The stored message acked for request `ack`; panics if it was refused.
    async fn acked(&mut self, ack: u64) -> Value {
        let label = self.label.clone();
        self.reply(ack, WAIT)
            .await
            .unwrap_or_else(|error| panic!("{label}: request {ack} was refused: {error}"))
    }

    /// Reads until every id in `expected` has been delivered.
    async fn until_delivered(&mut self, expected: &[Value]) {
        let wanted: BTreeSet<u64> = expected.iter().map(id).collect();
        let what = format!("delivery of all {} acked message(s)", wanted.len());
        self.until(&what, WAIT, |p| {
            let have: BTreeSet<u64> = p.added.iter().map(id).collect();
            wanted.is_subset(&have)
        })
        .await;
    }

    /// Records whatever else arrives within [`SETTLE`].
    async fn settle(&mut self) {
        let deadline = Instant::now() + SETTLE;
        while let Pumped::Frame = self.pump(deadline).await {}
    }

    /// Reads until the server ends the connection.
    async fn until_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.pump(deadline).await {
                Pumped::Frame => {}
                Pumped::Closed => return,
                Pumped::Timeout => panic!(
                    "{}: the connection was still open {within:?} after its node was killed. It has {}",
                    self.label,
                    self.summary()
                ),
            }
        }
    }

    /// Reconnects to `ws_url` with `?since=` the last id it saw, as the page
    /// does; the missed messages join [`Peer::added`].
    async fn resume_on(&mut self, ws_url: &str) {
        let since = self.added.last().map(id).unwrap_or(0);
        self.client = Client::connect(&format!("{ws_url}?since={since}")).await;
        let missed = std::mem::take(&mut self.client.history);
        self.added.extend(missed);
    }

    /// Closes the connection cleanly.
    async fn close(mut self) {
        // The server may already be gone; the test only wants this socket shut.
        let _ = self.client.socket.close(None).await;
    }

    fn summary(&self) -> String {
        let last: Vec<String> = self
            .log
            .iter()
            .rev()
            .take(6)
            .rev()
            .map(|frame| format!("    {frame}"))
            .collect();
        format!(
            "{} message(s) added (ids {}), {} ack(s), errors {:?}, {} board-reset(s), online {:?}; its last frames:\n{}",
            self.added.len(),
            id_summary(&self.added),
            self.acks.len(),
            self.errors,
            self.resets.len(),
            self.online,
            last.join("\n")
        )
    }

    /// Texts of the requests that were refused.
    fn refused_texts(&self) -> Vec<String> {
        self.errors
            .keys()
            .filter_map(|ack| self.posted.get(ack).cloned())
            .collect()
    }

    /// Asserts that every refusal this peer got was `storage-unavailable`.
    fn assert_refusals_are_storage_unavailable(&self) {
        for (ack, error) in &self.errors {
            assert_eq!(
                error["code"], "storage-unavailable",
                "{}: request {ack} was refused with another code: {error}",
                self.label
            );
        }
    }
}

fn id(message: &Value) -> u64 {
    message["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a message whose id is not a positive integer: {message}"))
}

fn id_summary(messages: &[Value]) -> String {
    let ids: Vec<u64> = messages.iter().map(id).collect();
    if ids.len() <= 8 {
        format!("{ids:?}")
    } else {
        format!("{:?} … {:?}", &ids[..4], &ids[ids.len() - 4..])
    }
}

/// The acked messages of all `peers`, oldest first; two different messages
/// acked with one id fail the test.
fn acked_by(peers: &[&Peer]) -> Vec<Value> {
    let mut by_id: BTreeMap<u64, Value> = BTreeMap::new();
    for peer in peers {
        for message in peer.acks.values() {
            if let Some(earlier) = by_id.insert(id(message), message.clone()) {
                assert_eq!(
                    &earlier,
                    message,
                    "two different messages were acked with id {}",
                    id(message)
                );
            }
        }
    }
    by_id.into_values().collect()
}

/// Asserts that `peer` received exactly the `expected` messages (acked,
/// oldest first): each once, ids strictly increasing, each identical to its
/// ack. Messages whose text is in `tolerated` (sends refused while Redis
/// crashed, which Redis may still have stored before dying) may appear too.
fn assert_delivered(peer: &Peer, expected: &[Value], tolerated: &[String]) {
    let mut problems = Vec::new();
    for pair in peer.added.windows(2) {
        if id(&pair[1]) <= id(&pair[0]) {
            problems.push(format!(
                "id {} arrived after id {} (ids must strictly increase)",
                id(&pair[1]),
                id(&pair[0])
            ));
        }
    }
    let mut delivered: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for message in &peer.added {
        delivered.entry(id(message)).or_default().push(message);
    }
    for (id, copies) in &delivered {
        if copies.len() > 1 {
            problems.push(format!("id {id} was delivered {} times", copies.len()));
        }
    }
    let expected_ids: BTreeSet<u64> = expected.iter().map(id).collect();
    for message in expected {
        match delivered.get(&id(message)) {
            None => problems.push(format!("acked but never delivered: {message}")),
            Some(copies) if copies[0] != message => problems.push(format!(
                "id {}: acked as {message} but delivered as {}",
                id(message),
                copies[0]
            )),
            Some(_) => {}
        }
    }
    for message in &peer.added {
        let text = message["message"].as_str().unwrap_or_default();
        if !expected_ids.contains(&id(message)) && !tolerated.iter().any(|t| t == text) {
            problems.push(format!("delivered but never acked: {message}"));
        }
    }
    if !problems.is_empty() {
        let shown: Vec<&String> = problems.iter().take(20).collect();
        panic!(
            "{}: {} problem(s) with what it received (expected {} message(s), ids {}):\n  {}\nIt has {}",
            peer.label,
            problems.len(),
            expected.len(),
            id_summary(expected),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            peer.summary()
        );
    }
}

/// Asserts that every message of `expected` is in `listed` unchanged.
fn assert_contains(who: &str, listed: &[Value], expected: &[Value]) {
    let by_id: BTreeMap<u64, &Value> = listed.iter().map(|m| (id(m), m)).collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|m| by_id.get(&id(m)) != Some(m))
        .map(|m| match by_id.get(&id(m)) {
            None => format!("missing: {m}"),
            Some(other) => format!("changed: acked as {m}, listed as {other}"),
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{who}: {} of {} acked message(s) are not there as acked:\n  {}\n(it lists {} message(s), ids {})",
        missing.len(),
        expected.len(),
        missing.join("\n  "),
        listed.len(),
        id_summary(listed)
    );
}

/// Every message the node at `addr` lists through the API (up to 500),
/// asking again for up to `within` while it does not answer 200 (a node may
/// still be finding Redis again).
async fn listed(addr: SocketAddr, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let response = get(addr, "/api/messages?since=0&limit=500").await;
        if response.status == 200 {
            return response
                .json()
                .as_array()
                .unwrap_or_else(|| panic!("/api/messages is not an array: {}", response.body))
                .clone();
        }
        assert!(
            Instant::now() < deadline,
            "GET /api/messages on {addr} still answers {} after {within:?}: {}",
            response.status,
            response.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `GET /api/messages` lists on `addr`, asked again until it holds
/// every message of `expected` or [`WAIT`] passes.
async fn listed_until_it_has(addr: SocketAddr, expected: &[Value]) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let listed = listed(addr, WAIT).await;
        if expected.iter().all(|m| listed.contains(m)) || Instant::now() >= deadline {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `online` count of `GET /api/info` on `addr`, polled until it is
/// `expected` or [`CONVERGE`] passes; returns the last count seen.
async fn info_online(addr: SocketAddr, expected: u64) -> Value {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let online = get(addr, "/api/info").await.json()["online"].clone();
        if online == expected || Instant::now() >= deadline {
            return online;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Awaits a spawned client task, passing its panic on as this test's.
async fn join(task: tokio::task::JoinHandle<Peer>) -> Peer {
    match task.await {
        Ok(peer) => peer,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Posts `text` with the client id `cid` until it is acked, as a client
/// should after `storage-unavailable`: the cid keeps a retry from posting
/// twice. Requests are numbered from `first_ack`.
async fn post_until_acked(peer: &mut Peer, text: &str, cid: &str, first_ack: u64) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut ack = first_ack;
    loop {
        peer.post_with_cid(text, ack, cid).await;
        match peer.reply(ack, WAIT).await {
            Ok(message) => return message,
            Err(error) => {
                assert_eq!(
                    error["code"], "storage-unavailable",
                    "{}: {error}",
                    peer.label
                );
                assert!(
                    Instant::now() < deadline,
                    "{}: still refused {WAIT:?} after Redis came back: {error}",
                    peer.label
                );
            }
        }
        ack += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_once_in_one_order() {
    let redis = redis_or_skip!(Persistence::None);
    let nodes: Vec<Board> = (0..3)
        .map(|_| Board::node(&redis.url(), "one-order", &["--rate-limit", "0"]))
        .collect();
    const LISTENERS_PER_NODE: usize = 3;
    const SENDERS_PER_NODE: usize = 2;
    const POSTS: u64 = 25;
    let total = nodes.len() * SENDERS_PER_NODE * POSTS as usize;
    // Everyone is connected before anyone posts, so every message must reach
    // every client live.
    let mut listeners = Vec::new();
    let mut senders = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for l in 0..LISTENERS_PER_NODE {
            listeners
                .push(Peer::connect(format!("listener {l} on node {n}"), &node.ws_url()).await);
        }
        for s in 0..SENDERS_PER_NODE {
            senders.push(Peer::connect(format!("sender {s} on node {n}"), &node.ws_url()).await);
        }
    }
    let everyone_has_all =
        move |p: &Peer| p.added.iter().map(id).collect::<BTreeSet<_>>().len() >= total;
    let mut tasks = Vec::new();
    for mut peer in senders {
        tasks.push(tokio::spawn(async move {
            for i in 1..=POSTS {
                let text = format!("{} #{i}", peer.label);
                peer.post(&text, i).await;
            }
            for i in 1..=POSTS {
                peer.acked(i).await;
            }
            peer.until("every message of every sender", WAIT, everyone_has_all)
                .await;
            peer.settle().await;
            peer
        }));
    }
    for mut peer in listeners {
        tasks.push(tokio::spawn(async move {
            peer.until("every message of every sender", WAIT, everyone_has_all)
                .await;
            peer.settle().await;
            peer
        }));
    }
    let mut peers = Vec::new();
    for task in tasks {
        peers.push(join(task).await);
    }
    let acked = acked_by(&peers.iter().collect::<Vec<_>>());
    assert_eq!(acked.len(), total, "every post got its own id");
    for peer in &peers {
        assert_delivered(peer, &acked, &[]);
    }
}

#[tokio::test]
async fn a_message_posted_on_one_node_is_returned_by_since_on_another() {
    let redis = redis_or_skip!(Persistence::None);
    let a = Board::node(&redis.url(), "since", &[]);
    let b = Board::node(&redis.url(), "since", &[]);
    let mut poster = Peer::connect("poster on A", &a.ws_url()).await;
    let mut posted = Vec::new();
    for i in 1..=4 {
        poster.post(&format!("note {i}"), i).await;
        posted.push(poster.acked(i).await);
    }
    let first = id(&posted[0]);

    // A page resuming on B gets the rest, from its history or right after
    // it, each once and in order.
    let mut resumed = Peer::resuming("resumed on B", &b.ws_url(), first).await;
    resumed.until_delivered(&posted[1..]).await;
    resumed.settle().await;
    assert_delivered(&resumed, &posted[1..], &[]);
    // By now B has the messages, so its API lists them.
    let response = get(b.addr, &format!("/api/messages?since={first}")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), Value::from(posted[1..].to_vec()));

    // And the other way round: posted through B's API, read on A.
    let created = post(
        b.addr,
        "/api/messages",
        r#"{"name":"script","message":"from B"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let last = id(&posted[3]);
    let mut on_a = Peer::resuming("resumed on A", &a.ws_url(), last).await;
    on_a.until_delivered(std::slice::from_ref(&created)).await;
    on_a.settle().await;
    assert_delivered(&on_a, std::slice::from_ref(&created), &[]);
    let response = get(a.addr, &format!("/api/messages?since={last}")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), json!([created]));
}

#[tokio::test]
async fn sends_fail_with_storage_unavailable_while_redis_is_frozen_and_delivery_resumes() {
    let redis = redis_or_skip!(Persistence::None);
    let a = Board::node(&redis.url(), "frozen", &["--rate-limit", "0"]);
    let b = Board::node(&redis.url(), "frozen", &["--rate-limit", "0"]);
    let mut sender_a = Peer::connect("sender on A", &a.ws_url()).await;
    let mut sender_b = Peer::connect("sender on B", &b.ws_url()).await;
    let listener_a = Peer::connect("listener on A", &a.ws_url()).await;
    let listener_b = Peer::connect("listener on B", &b.ws_url()).await;
    for i in 1..=3 {
        sender_a.post(&format!("before the freeze A{i}"), i).await;
        sender_a.acked(i).await;
        sender_b.post(&format!("before the freeze B{i}"), i).await;
        sender_b.acked(i).await;
    }

    redis.pause();
    let frozen_at = Instant::now();
    sender_a.post("while frozen A", 100).await;
    sender_b.post("while frozen B", 100).await;
    for sender in [&mut sender_a, &mut sender_b] {
        let error = sender.reply(100, REFUSAL).await.unwrap_err();
        assert_eq!(
            error["code"], "storage-unavailable",
            "{}: {error}",
            sender.label
        );
    }
    assert!(frozen_at.elapsed() <= REFUSAL);
    // Not a one-off: a second send during the freeze is refused too.
    sender_a.post("while still frozen A", 101).await;
    let error = sender_a.reply(101, REFUSAL).await.unwrap_err();
    assert_eq!(error["code"], "storage-unavailable", "{error}");

    redis.resume();
    // A moment for the nodes to see Redis answer again; no client reconnects.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sender_a.post("after the thaw A", 200).await;
    sender_a.acked(200).await;
    sender_b.post("after the thaw B", 200).await;
    sender_b.acked(200).await;

    let acked = acked_by(&[&sender_a, &sender_b]);
    assert_eq!(acked.len(), 8);
    let mut peers = [sender_a, sender_b, listener_a, listener_b];
    for peer in &mut peers {
        peer.until_delivered(&acked).await;
        peer.settle().await;
    }
    // First what was acked: all there, once, in order, on every client
    // that stayed connected...
    let mut refused = peers[0].refused_texts();
    refused.extend(peers[1].refused_texts());
    for peer in &peers {
        assert_delivered(peer, &acked, &refused);
    }
    let mut lists = Vec::new();
    for node in [&a, &b] {
        let listed = listed(node.addr, WAIT).await;
        assert_contains("the API after the thaw", &listed, &acked);
        lists.push(listed);
    }
    // ...then what was refused: never buffered, so it shows up nowhere, ever.
    for (place, messages) in peers
        .iter()
        .map(|p| (p.label.as_str(), &p.added))
        .chain([("A's API", &lists[0]), ("B's API", &lists[1])])
    {
        let ghosts: Vec<String> = messages
            .iter()
            .filter(|m| refused.iter().any(|t| m["message"] == t.as_str()))
            .map(Value::to_string)
            .collect();
        assert!(
            ghosts.is_empty(),
            "{place}: sends refused with storage-unavailable while Redis was frozen were stored \
             after all, once it thawed:\n  {}",
            ghosts.join("\n  ")
        );
    }
}

/// Posts one message after another until `stop` is set, each with a cid
/// equal to its text; refusals are recorded, not retried. `acked` counts
/// the acks so far.
async fn post_until_stopped(
    mut peer: Peer,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Peer {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let text = format!("{} #{n}", peer.label);
        peer.post_with_cid(&text, n, &text).await;
        if peer.reply(n, WAIT).await.is_ok() {
            acked.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    peer
}

/// Waits until `counter` reaches `at_least`.
async fn until_count(counter: &AtomicUsize, at_least: usize, what: &str) {
    let deadline = Instant::now() + WAIT;
    while counter.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} of {at_least} within {WAIT:?}",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_a_redis_restart_and_delivery_resumes_by_itself() {
    let mut redis = redis_or_skip!(Persistence::AppendOnly);
    let a = Board::node(&redis.url(), "restart", &["--rate-limit", "0"]);
    let b = Board::node(&redis.url(), "restart", &["--rate-limit", "0"]);
    let mut poster = Peer::connect("poster on A", &a.ws_url()).await;
    let listener_a = Peer::connect("listener on A", &a.ws_url()).await;
    let listener_b = Peer::connect("listener on B", &b.ws_url()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let background_acks = Arc::new(AtomicUsize::new(0));
    let background = tokio::spawn(post_until_stopped(
        Peer::connect("background sender on B", &b.ws_url()).await,
        stop.clone(),
        background_acks.clone(),
    ));
    for i in 1..=3 {
        poster.post(&format!("before the crash #{i}"), i).await;
        poster.acked(i).await;
    }
    until_count(
        &background_acks,
        3,
        "acks of the background sender before the crash",
    )
    .await;

    redis.kill();
    poster.post("while Redis is down", 10).await;
    let error = poster.reply(10, REFUSAL).await.unwrap_err();
    assert_eq!(error["code"], "storage-unavailable", "{error}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked_while_down = background_acks.load(Ordering::SeqCst);
    redis.restart();

    post_until_acked(&mut poster, "after the restart", "after-the-restart", 11).await;
    until_count(
        &background_acks,
        acked_while_down + 3,
        "acks of the background sender after the restart",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let background = join(background).await;
    poster.post("the last word", 1000).await;
    poster.acked(1000).await;

    let acked = acked_by(&[&poster, &background]);
    // Redis may have stored a send whose answer the crash cut off.
    let mut tolerated = poster.refused_texts();
    tolerated.extend(background.refused_texts());
    let mut peers = [listener_a, listener_b, poster, background];
    for peer in &mut peers {
        peer.until_delivered(&acked).await;
        peer.settle().await;
    }
    for peer in &peers {
        assert_delivered(peer, &acked, &tolerated);
        assert!(
            peer.resets.is_empty(),
            "{}: board-reset after a restart that kept the stream: {:?}",
            peer.label,
            peer.resets
        );
        peer.assert_refusals_are_storage_unavailable();
    }
    let order: Vec<u64> = peers[0].added.iter().map(id).collect();
    for peer in &peers[1..] {
        let other: Vec<u64> = peer.added.iter().map(id).collect();
        assert_eq!(
            other, order,
            "{} saw another order than {}",
            peer.label, peers[0].label
        );
    }
    for node in [&a, &b] {
        assert_contains(
            "the API after the restart",
            &listed(node.addr, WAIT).await,
            &acked,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_clients_reconnect_elsewhere_with_since_and_miss_nothing() {
    let redis = redis_or_skip!(Persistence::None);
    let a = Board::node(&redis.url(), "failover", &["--rate-limit", "0"]);
    let b = Board::node(&redis.url(), "failover", &["--rate-limit", "0"]);
    let mut c = Board::node(&redis.url(), "failover", &["--rate-limit", "0"]);
    let mut stranded = Vec::new();
    for i in 0..3 {
        stranded.push(Peer::connect(format!("listener {i} on C"), &c.ws_url()).await);
    }
    let mut watcher = Peer::connect("listener on A", &a.ws_url()).await;
    const POSTS: u64 = 30;
    let mut senders = Vec::new();
    // Both connect before either posts, so each must receive every message live.
    let sender_a = Peer::connect("sender on A", &a.ws_url()).await;
    let sender_b = Peer::connect("sender on B", &b.ws_url()).await;
    for mut peer in [sender_a, sender_b] {
        senders.push(tokio::spawn(async move {
            for i in 1..=POSTS {
                let text = format!("{} #{i}", peer.label);
                peer.post(&text, i).await;
                peer.acked(i).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peer
        }));
    }

    // C dies in the middle of the stream.
    for peer in &mut stranded {
        peer.until("a few messages before C dies", WAIT, |p| p.added.len() >= 5)
            .await;
    }
    c.stop_with(libc::SIGKILL);
    let seen_before_the_kill = stranded.iter().map(|p| p.added.len()).min().unwrap_or(0);
    for (i, peer) in stranded.iter_mut().enumerate() {
        peer.until_closed(WAIT).await;
        let survivor = if i % 2 == 0 { &a } else { &b };
        peer.resume_on(&survivor.ws_url()).await;
    }

    let mut done = Vec::new();
    for sender in senders {
        done.push(join(sender).await);
    }
    let acked = acked_by(&done.iter().collect::<Vec<_>>());
    assert!(
        seen_before_the_kill < acked.len(),
        "C was killed only after every message was delivered; the test proves nothing"
    );
    for peer in stranded
        .iter_mut()
        .chain([&mut watcher])
        .chain(done.iter_mut())
    {
        peer.until_delivered(&acked).await;
        peer.settle().await;
        assert_delivered(peer, &acked, &[]);
    }
}

#[tokio::test]
async fn every_acked_message_survives_a_redis_crash_with_appendonly() {
    let mut redis = redis_or_skip!(Persistence::AppendOnly);
    let node = Board::node(&redis.url(), "crash", &["--rate-limit", "0"]);
    let mut poster = Peer::connect("poster", &node.ws_url()).await;
    const TOTAL: u64 = 60;
    const KILL_AFTER: usize = 30;
    const IN_FLIGHT: u64 = 16;
    let mut sent = 0;
    while poster.acks.len() < KILL_AFTER {
        let answered = (poster.acks.len() + poster.errors.len()) as u64;
        while sent < TOTAL && sent - answered < IN_FLIGHT {
            sent += 1;
            poster.post(&format!("durable #{sent}"), sent).await;
        }
        poster
            .until("one more answer", WAIT, |p| {
                (p.acks.len() + p.errors.len()) as u64 > answered
            })
            .await;
    }
    // Right after the acks, with posts still in flight.
    redis.kill();
    poster
        .until("an answer to every post", WAIT, |p| {
            (p.acks.len() + p.errors.len()) as u64 == sent
        })
        .await;
    poster.assert_refusals_are_storage_unavailable();
    let acked = acked_by(&[&poster]);
    assert!(acked.len() >= KILL_AFTER);

    redis.restart();
    // A node started now can only know what Redis kept.
    let fresh = Board::node(&redis.url(), "crash", &[]);
    // That node's tail had been woken for the last commits but had not read
    // them when Redis died; it reads them once Redis is back.
    assert_contains(
        "the API of the node that saw the crash",
        &listed_until_it_has(node.addr, &acked).await,
        &acked,
    );
    assert_contains(
        "the API of a node started after it",
        &listed(fresh.addr, WAIT).await,
        &acked,
    );
    let resumed = Client::connect(&format!("{}?since=0", fresh.ws_url())).await;
    assert_contains(
        "?since=0 on a node started after it",
        &resumed.history,
        &acked,
    );
}

#[tokio::test]
async fn presence_counts_the_connections_on_every_node() {
    let redis = redis_or_skip!(Persistence::None);
    let a = Board::node(&redis.url(), "presence", &[]);
    let b = Board::node(&redis.url(), "presence", &[]);
    let mut peers = Vec::new();
    for i in 0..2 {
        peers.push(Peer::connect(format!("client {i} on A"), &a.ws_url()).await);
    }
    for i in 0..3 {
        peers.push(Peer::connect(format!("client {i} on B"), &b.ws_url()).await);
    }
    for peer in &mut peers {
        peer.until("online = 5 (2 on A + 3 on B)", CONVERGE, |p| {
            p.online == Some(5)
        })
        .await;
    }
    for node in [&a, &b] {
        assert_eq!(
            info_online(node.addr, 5).await,
            5,
            "/api/info online on {}",
            node.addr
        );
    }

    let leaving = peers.pop().expect("five peers");
    leaving.close().await;
    for peer in &mut peers {
        peer.until("online = 4 after one left B", CONVERGE, |p| {
            p.online == Some(4)
        })
        .await;
    }
    for node in [&a, &b] {
        assert_eq!(
            info_online(node.addr, 4).await,
            4,
            "/api/info online on {}",
            node.addr
        );
    }
}

/// Runs the binary with `args` and `env` until it exits; kills it and
/// panics (with its output) if it is still running after `within`.
fn run_until_exit(
    args: &[&str],
    env: &[(&str, &str)],
    within: Duration,
) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = Command::new(common::binary())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lanboard starts");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for lanboard") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            // It may have exited just now; either way it is reaped here.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "lanboard {args:?} was still running after {within:?}.\nstdout:\n{}\nstderr:\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    (status, stdout, stderr)
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        // A pipe cut short still gave what it had.
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").port()
}

fn serve_args(redis_url: &str) -> Vec<String> {
    [
        "--redis",
        redis_url,
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--no-qr",
    ]
    .map(String::from)
    .to_vec()
}

/// Asserts that `lanboard --redis redis_url` refuses to start with exit
/// status 1; returns its stderr.
fn refused_at_startup(redis_url: &str) -> String {
    let args = serve_args(redis_url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, out, err) = run_until_exit(&args, &[], WAIT);
    assert_eq!(
        status.code(),
        Some(1),
        "lanboard {args:?} should refuse to start; it ended with {status}.\nstdout:\n{out}\nstderr:\n{err}"
    );
    err
}

#[test]
fn an_unreachable_redis_stops_startup_naming_redis_and_its_url() {
    let port = closed_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let err = refused_at_startup(&url);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "stderr names the URL {url}:\n{err}"
    );
    assert!(
        err.replace(&url, "").to_lowercase().contains("redis"),
        "stderr says it is Redis that cannot be reached (beyond the URL itself):\n{err}"
    );
}

#[test]
fn an_evicting_maxmemory_policy_is_refused_at_startup() {
    for policy in ["allkeys-lru", "allkeys-random"] {
        let Some(redis) =
            Redis::start_with(Persistence::AppendOnly, &["--maxmemory-policy", policy])
        else {
            return;
        };
        let err = refused_at_startup(&redis.url());
        assert!(
            err.contains("maxmemory-policy"),
            "{policy}: stderr names the setting:\n{err}"
        );
    }
}

#[test]
fn redis_without_appendonly_starts_with_a_warning() {
    let redis = redis_or_skip!(Persistence::None);
    let node = Board::node(&redis.url(), "warned", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut err = String::new();
    while !err.contains("appendonly") && std::time::Instant::now() < deadline {
        err.push_str(&node.stderr());
        err.push('\n');
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        err.contains("appendonly"),
        "stderr warns about appendonly:\n{err}"
    );
}

/// A stand-in for an old Redis on a loopback port: just enough RESP for a
/// client to connect and ask INFO and CONFIG GET, saying it is `version`.
fn fake_redis(version: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("a bound address");
    // The thread outlives the test harmlessly: it only ever answers loopback.
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve_fake_redis(stream, version));
        }
    });
    addr
}

fn serve_fake_redis(stream: TcpStream, version: &str) {
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let mut writer = stream;
    while let Some(command) = read_command(&mut reader) {
        if writer
            .write_all(fake_reply(&command, version).as_bytes())
            .is_err()
        {
            return;
        }
    }
}

/// One RESP command (an array of bulk strings, or an inline command).
fn read_command(reader: &mut impl BufRead) -> Option<Vec<String>> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let line = line.trim_end();
    let Some(count) = line.strip_prefix('*') else {
        return Some(line.split_whitespace().map(String::from).collect());
    };
    let mut parts = Vec::new();
    for _ in 0..count.parse::<usize>().ok()? {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let len: usize = header.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut bytes = vec![0; len + 2];
        reader.read_exact(&mut bytes).ok()?;
        bytes.truncate(len);
        parts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    Some(parts)
}

fn fake_reply(command: &[String], version: &str) -> String {
    let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len());
    let name = command
        .first()
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    match name.as_str() {
        "PING" => "+PONG\r\n".into(),
        "INFO" => bulk(&format!(
            "# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n\
             # Memory\r\nmaxmemory_policy:noeviction\r\n# Persistence\r\naof_enabled:1\r\n"
        )),
        "CONFIG" => {
            let key = command
                .get(2)
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_default();
            let value = match key.as_str() {
                "maxmemory-policy" => Some("noeviction"),
                "appendonly" => Some("yes"),
                "appendfsync" => Some("always"),
                _ => None,
            };
            match value {
                Some(value) => format!("*2\r\n{}{}", bulk(&key), bulk(value)),
                None => "*0\r\n".into(),
            }
        }
        // What a server answers to a protocol version it does not speak.
        "HELLO" => "-NOPROTO unsupported protocol version\r\n".into(),
        "CLIENT" | "SELECT" | "AUTH" => "+OK\r\n".into(),
        _ => format!("-ERR unknown command '{name}'\r\n"),
    }
}

#[test]
fn a_redis_older_than_6_2_is_refused_at_startup() {
    let addr = fake_redis("6.0.0");
    let err = refused_at_startup(&format!("redis://{addr}/0"));
    assert!(
        err.contains("6.2"),
        "stderr names the version needed:\n{err}"
    );
}

/// A `lanboard` started with `env` instead of flags, stopped when dropped.
struct EnvNode {
    child: Child,
    addr: SocketAddr,
}

impl EnvNode {
    fn start(env: &[(&str, &str)]) -> EnvNode {
        let mut child = Command::new(common::binary())
            .args(["--bind", "127.0.0.1", "--port", "0", "--no-qr"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("lanboard starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = String::new();
        while !banner.contains("Press Ctrl-C") {
            match lines.recv_timeout(WAIT) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                }
                Err(_) => {
                    // Reaped right after; it may have died already.
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("lanboard with {env:?} printed no full banner:\n{banner}");
                }
            }
        }
        let addr = common::local_addr(&banner)
            .unwrap_or_else(|| panic!("no local URL in the banner:\n{banner}"));
        EnvNode { child, addr }
    }
}

impl Drop for EnvNode {
    fn drop(&mut self) {
        // It may have exited already; either way it is reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_redis_flags_have_environment_twins_and_the_prefix_defaults_to_lanboard() {
    let redis = redis_or_skip!(Persistence::None);
    let url = redis.url();
    let prefixed = EnvNode::start(&[
        ("LANBOARD_REDIS", &url),
        ("LANBOARD_REDIS_PREFIX", "envboard"),
    ]);
    let defaulted = EnvNode::start(&[("LANBOARD_REDIS", &url)]);
    for (node, text) in [
        (&prefixed, "via the prefix variable"),
        (&defaulted, "via the default prefix"),
    ] {
        let body = json!({"name": "env", "message": text}).to_string();
        let response = post(node.addr, "/api/messages", &body).await;
        assert_eq!(response.status, 201, "{}", response.body);
    }
    for (prefix, text) in [
        ("envboard", "via the prefix variable"),
        ("lanboard", "via the default prefix"),
    ] {
        let node = Board::node(&url, prefix, &[]);
        let texts: Vec<Value> = listed(node.addr, WAIT)
            .await
            .iter()
            .map(|m| m["message"].clone())
            .collect();
        assert_eq!(texts, [text], "the board with prefix {prefix}");
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// Runs a subcommand that must succeed; returns its stdout.
fn must_run(args: &[&str]) -> String {
    let (status, out, err) = run_until_exit(args, &[], WAIT);
    assert!(
        status.success(),
        "lanboard {args:?} failed ({status}):\n{err}"
    );
    out
}

#[tokio::test]
async fn export_and_import_move_a_board_between_sqlite_and_redis_keeping_ids() {
    let redis = redis_or_skip!(Persistence::AppendOnly);
    let url = redis.url();
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();

    // SQLite to Redis, ids with gaps kept; the default prefix is `lanboard`.
    let original: Vec<Value> = [2u64, 3, 5, 8, 13]
        .iter()
        .map(|&id| json!({"id": id, "name": "sqlite", "message": format!("kept as {id}"), "time": 1_700_000_000_000u64 + id}))
        .collect();
    let lines: String = original.iter().map(|m| format!("{m}\n")).collect();
    std::fs::write(path("original.jsonl"), lines).expect("write the import file");
    must_run(&["import", &path("original.jsonl"), "--data", &path("old.db")]);
    let from_sqlite = must_run(&["export", "--data", &path("old.db")]);
    assert_eq!(json_lines(&from_sqlite), original);
    std::fs::write(path("from-sqlite.jsonl"), &from_sqlite).expect("write the export");
    must_run(&["import", &path("from-sqlite.jsonl"), "--redis", &url]);
    let in_redis = must_run(&["export", "--redis", &url, "--redis-prefix", "lanboard"]);
    assert_eq!(
        json_lines(&in_redis),
        original,
        "the Redis board holds what SQLite held"
    );
    {
        let node = Board::node(&url, "lanboard", &[]);
        let mut client = Peer::connect("after the move to Redis", &node.ws_url()).await;
        assert_eq!(client.client.history, original);
        client.post("new on Redis", 1).await;
        let message = client.acked(1).await;
        assert!(
            id(&message) > 13,
            "ids continue after the imported ones: {message}"
        );
    }
    // A board that has messages refuses an import, and keeps what it had.
    let (status, _, err) = run_until_exit(
        &["import", &path("from-sqlite.jsonl"), "--redis", &url],
        &[],
        WAIT,
    );
    assert!(
        !status.success(),
        "importing into a non-empty Redis board is refused:\n{err}"
    );
    assert_eq!(
        json_lines(&must_run(&["export", "--redis", &url])).len(),
        original.len() + 1
    );

    // Redis to SQLite, from another prefix on the same server.
    let posted = {
        let node = Board::node(&url, "elsewhere", &[]);
        let mut client = Peer::connect("on Redis", &node.ws_url()).await;
        let mut posted = Vec::new();
        for i in 1..=3 {
            client.post(&format!("from Redis {i}"), i).await;
            posted.push(client.acked(i).await);
        }
        posted
    };
    let from_redis = must_run(&["export", "--redis", &url, "--redis-prefix", "elsewhere"]);
    assert_eq!(
        json_lines(&from_redis),
        posted,
        "only the board of that prefix"
    );
    std::fs::write(path("from-redis.jsonl"), &from_redis).expect("write the export");
    must_run(&[
        "import",
        &path("from-redis.jsonl"),
        "--data",
        &path("new.db"),
    ]);
    assert_eq!(must_run(&["export", "--data", &path("new.db")]), from_redis);
    let board = Board::start_on(&dir.path().join("new.db"), 0, &[]);
    let mut client = Peer::connect("after the move to SQLite", &board.ws_url()).await;
    assert_eq!(client.client.history, posted);
    client.post("new on SQLite", 1).await;
    let message = client.acked(1).await;
    assert!(id(&message) > id(&posted[2]), "ids continue: {message}");
}

/// Posts five messages on `nodes[0]`, has every peer receive them, then
/// lets `lose_the_stream` wipe Redis; every peer must get `board-reset`, and
/// messages posted on each node afterwards get ids above every id seen.
async fn reset_check(redis: &mut Redis, prefix: &str, lose_the_stream: impl FnOnce(&mut Redis)) {
    let a = Board::node(&redis.url(), prefix, &[]);
    let b = Board::node(&redis.url(), prefix, &[]);
    let mut on_a = Peer::connect("client on A", &a.ws_url()).await;
    let mut on_b = Peer::connect("client on B", &b.ws_url()).await;
    for i in 1..=5 {
        on_a.post(&format!("before the loss #{i}"), i).await;
        on_a.acked(i).await;
    }
    let before = acked_by(&[&on_a]);
    on_b.until_delivered(&before).await;
    on_a.until_delivered(&before).await;
    let highest = before.iter().map(id).max().expect("five messages");

    lose_the_stream(redis);
    for peer in [&mut on_a, &mut on_b] {
        peer.until("a board-reset", WAIT, |p| !p.resets.is_empty())
            .await;
        assert!(
            peer.resets[0]["message"].is_string(),
            "{}: board-reset data has a message: {:?}",
            peer.label,
            peer.resets
        );
    }
    on_b.post("after the loss, on B", 10).await;
    let from_b = on_b.acked(10).await;
    on_a.post("after the loss, on A", 10).await;
    let from_a = on_a.acked(10).await;
    for message in [&from_a, &from_b] {
        assert!(
            id(message) > highest,
            "a message posted after the loss got id {}, not above {highest}, the highest id clients saw: {message}",
            id(message)
        );
    }
    let after = acked_by(&[&on_a, &on_b]);
    let after: Vec<Value> = after.into_iter().filter(|m| id(m) > highest).collect();
    for peer in [&mut on_a, &mut on_b] {
        peer.until_delivered(&after).await;
    }
}

#[tokio::test]
async fn a_flushall_resets_the_board_and_later_ids_are_larger_than_any_seen() {
    let mut redis = redis_or_skip!(Persistence::None);
    reset_check(&mut redis, "flushed", |redis| {
        assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    })
    .await;
}

#[tokio::test]
async fn a_redis_restart_without_persistence_resets_the_board_and_later_ids_are_larger() {
    let mut redis = redis_or_skip!(Persistence::None);
    reset_check(&mut redis, "forgotten", Redis::restart).await;
}

#[tokio::test]
async fn a_node_started_after_a_flushall_gives_ids_above_every_id_clients_saw() {
    let redis = redis_or_skip!(Persistence::None);
    let a = Board::node(&redis.url(), "late", &[]);
    let mut on_a = Peer::connect("client on A", &a.ws_url()).await;
    for i in 1..=5 {
        on_a.post(&format!("before the loss #{i}"), i).await;
        on_a.acked(i).await;
    }
    let highest = acked_by(&[&on_a])
        .iter()
        .map(id)
        .max()
        .expect("five messages");

    // The board is lost, and at once a node that has never seen an id joins
    // and posts, before A's once-a-second epoch check could notice. (A node
    // frozen through all of this cannot be heard by anyone; its clients learn
    // of the loss by board-reset when it wakes, as the other reset tests show.)
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let c = Board::node(&redis.url(), "late", &[]);
    let mut on_c = Peer::connect("client on C", &c.ws_url()).await;
    on_c.post("first word of the new board", 1).await;
    let reply = on_c.reply(1, WAIT).await;
    let first = reply.unwrap_or_else(|e| panic!("the post on C was refused: {e}"));
    assert!(
        id(&first) > highest,
        "after the loss C gave id {} although a client on A has seen id {highest}: {first}",
        id(&first)
    );
    on_a.until("a board-reset", WAIT, |p| !p.resets.is_empty())
        .await;
    on_a.until_delivered(std::slice::from_ref(&first)).await;
}

#[tokio::test]
async fn a_repeated_cid_on_another_node_is_acked_with_the_original_and_not_broadcast_again() {
    let redis = redis_or_skip!(Persistence::None);
    let a = Board::node(&redis.url(), "cid", &[]);
    let b = Board::node(&redis.url(), "cid", &[]);
    let mut on_a = Peer::connect("client on A", &a.ws_url())
        .await
        .named("kettle");
    let mut on_b = Peer::connect("client on B", &b.ws_url())
        .await
        .named("kettle");
    on_a.post_with_cid("the kettle is on", 1, "kettle-1").await;
    let original = on_a.acked(1).await;
    on_b.until_delivered(std::slice::from_ref(&original)).await;

    // The same post again, as a client that never saw the ack would send it.
    on_b.post_with_cid("the kettle is on", 2, "kettle-1").await;
    assert_eq!(
        on_b.acked(2).await,
        original,
        "a repeat on B is acked with the original"
    );
    on_a.post_with_cid("the kettle is on", 3, "kettle-1").await;
    assert_eq!(
        on_a.acked(3).await,
        original,
        "a repeat on A is acked with the original"
    );

    // Nothing was broadcast again: the next message either client gets is the marker.
    on_a.post("marker", 4).await;
    let marker = on_a.acked(4).await;
    let expected = [original, marker];
    for peer in [&mut on_a, &mut on_b] {
        peer.until_delivered(&expected).await;
        peer.settle().await;
        assert_delivered(peer, &expected, &[]);
    }
    for node in [&a, &b] {
        assert_eq!(
            listed(node.addr, WAIT).await,
            expected,
            "the API of {}",
            node.addr
        );
    }
}

// Files on a Redis board: kept in Redis, so every node serves every file.

/// Bytes no other upload of the test shares, different for each `seed`
/// (xorshift: a test needs content that does not repeat, not secrecy).
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A file's id: the SHA-256 of its content, in hex.
fn file_id(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An HTTP answer whose body may be any bytes.
struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "a {} whose body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One request with a binary body (and answer), over a fresh connection.
async fn fetch(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Fetched {
    let what = format!("{method} http://{addr}{path}");
    let client = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(WAIT)
        .build()
        // Only a TLS backend or the system's resolver settings can fail to
        // load, and this build has neither.
        .expect("a plain HTTP client builds");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = client.request(method, format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_empty() {
        request = request.body(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no response: {e:?}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), value)
        })
        .collect();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{what}: the body of the {status} did not arrive: {e:?}"))
        .to_vec();
    Fetched {
        status,
        headers,
        body,
    }
}

/// `POST /api/files?name=<name>` with `bytes` (and their length).
async fn upload(addr: SocketAddr, name: &str, bytes: &[u8]) -> Fetched {
    let path = format!("/api/files?name={name}");
    let headers = [("Content-Type", "application/octet-stream")];
    fetch(addr, "POST", &path, &headers, bytes.to_vec()).await
}

/// Uploads `bytes` as `name`, which must be stored; returns the file.
async fn uploaded(addr: SocketAddr, name: &str, bytes: &[u8]) -> Value {
    let answer = upload(addr, name, bytes).await;
    assert!(
        matches!(answer.status, 200 | 201),
        "uploading {name} to {addr} answered {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()
}

/// An upload sent with `Transfer-Encoding: chunked`, so the board learns its
/// size only as it reads it: the quota is then checked chunk by chunk. With
/// `whole` false the connection is cut halfway through; the answer (status
/// and body) is `None` then.
async fn upload_unsized(addr: SocketAddr, bytes: &[u8], whole: bool) -> Option<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the node");
    let head = format!(
        "POST /api/files?name=unsized.bin HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    );
    socket
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    let sent = if whole {
        bytes
    } else {
        &bytes[..bytes.len() / 2]
    };
    for part in sent.chunks(64 * 1024) {
        socket
            .write_all(format!("{:x}\r\n", part.len()).as_bytes())
            .await
            .expect("send a chunk's size");
        socket.write_all(part).await.expect("send a chunk");
        socket.write_all(b"\r\n").await.expect("end a chunk");
    }
    if !whole {
        // Cut off: the board drops what it stored of the upload.
        return None;
    }
    socket.write_all(b"0\r\n\r\n").await.expect("end the body");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    // The JSON error bodies are sent whole (Content-Length), never chunked.
    let body = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    Some((status, body))
}

async fn download(addr: SocketAddr, id: &str) -> Fetched {
    fetch(addr, "GET", &format!("/files/{id}"), &[], Vec::new()).await
}

/// The keys of the board with `prefix` that match `pattern` (after the
/// prefix), sorted.
fn keys(redis: &Redis, prefix: &str, pattern: &str) -> Vec<String> {
    let mut found: Vec<String> = redis
        .cli(&["KEYS", &format!("{prefix}:{pattern}")])
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    found.sort();
    found
}

/// What the board with `prefix` counts against `--max-files-bytes`.
fn files_bytes(redis: &Redis, prefix: &str) -> u64 {
    let text = redis.cli(&["GET", &format!("{prefix}:files-bytes")]);
    text.parse().unwrap_or(0)
}

/// Polls until `files_bytes` is `expected`; panics with what it was.
async fn until_files_bytes(redis: &Redis, prefix: &str, expected: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = files_bytes(redis, prefix);
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the board counts {now} bytes of files, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `HEAD /files/<id>` on `addr` until it answers `status`. Not a
/// GET: a file removed while its body is sent ends that body short, which
/// the client rightly reports as an error.
async fn until_file_status(addr: SocketAddr, id: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = fetch(addr, "HEAD", &format!("/files/{id}"), &[], Vec::new())
            .await
            .status;
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET /files/{id} on {addr} still answers {now}, not {status}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Peer {
    /// Posts `text` carrying the files `ids`, as request `ack`, with the
    /// author key `key`.
    async fn post_files(&mut self, text: &str, ids: &[&str], key: &str, ack: u64) {
        let frame = json!({"event": "add-message", "ack": ack,
            "data": {"name": self.name, "message": text, "files": ids, "key": key}});
        self.posted.insert(ack, text.to_owned());
        self.client.send(frame).await;
    }
}

/// An author key, as the page makes one.
const KEY: &str = "files-test-author-key-0001";

/// Deletes message `id` with the author key; it must go.
async fn delete_message(addr: SocketAddr, id: u64) {
    let response = common::http(
        addr,
        "DELETE",
        &format!("/api/messages/{id}"),
        &[("lanboard-key", KEY)],
        "",
    )
    .await;
    assert_eq!(response.status, 204, "deleting {id}: {}", response.body);
}

#[tokio::test]
async fn a_file_uploaded_on_one_node_downloads_byte_for_byte_from_another_and_is_stored_once() {
    let redis = redis_or_skip!(Persistence::None);
    let a = Board::node(&redis.url(), "files", &[]);
    let b = Board::node(&redis.url(), "files", &[]);
    // Three chunks and a piece: chunk boundaries and a short last chunk.
    let bytes = content(1, 3 * 256 * 1024 + 12_345);
    let id = file_id(&bytes);

    let first = upload(a.addr, "report.bin", &bytes).await;
    assert_eq!(
        first.status,
        201,
        "a new file is created: {}",
        String::from_utf8_lossy(&first.body)
    );
    let file = first.json();
    assert_eq!(
        file,
        json!({"id": id, "name": "report.bin", "size": bytes.len(), "type": "application/octet-stream"})
    );

    let got = download(b.addr, &id).await;
    assert_eq!(got.status, 200);
    assert!(
        got.body == bytes,
        "node B serves the same bytes node A took"
    );
    assert_eq!(
        got.header("content-length"),
        Some(&*bytes.len().to_string())
    );
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert_eq!(got.header("etag"), Some(&*format!("\"{id}\"")));
    assert_eq!(
        got.header("content-disposition"),
        Some("attachment; filename*=UTF-8''report.bin")
    );
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        got.header("content-security-policy"),
        Some("sandbox; default-src 'none'")
    );
    // A range across the first chunk's end, where its last bytes are kept
    // apart from the rest in Redis.
    let (start, end) = (256 * 1024 - 40, 256 * 1024 + 40);
    let range = format!("bytes={start}-{end}");
    let part = fetch(
        b.addr,
        "GET",
        &format!("/files/{id}"),
        &[("Range", &range)],
        Vec::new(),
    )
    .await;
    assert_eq!(part.status, 206);
    assert!(part.body == bytes[start..=end], "the range's bytes");

    let stored = keys(&redis, "files", "*");
    assert_eq!(
        keys(&redis, "files", &format!("file:{id}*")).len(),
        1 + 4,
        "the file's hash and its four chunks: {stored:?}"
    );
    for seq in 0..4 {
        let chunk = format!("files:file:{id}:{seq}");
        assert_eq!(
            redis.cli(&["PTTL", &chunk]),
            "-1",
            "a stored file's chunks do not expire as an upload's do"
        );
    }
    let again = upload(b.addr, "copy.bin", &bytes).await;
    assert_eq!(
        again.status, 200,
        "content the board holds is not stored again"
    );
    assert_eq!(again.json(), file, "it answers with the file stored first");
    assert_eq!(keys(&redis, "files", "*"), stored, "no key more, none less");
    until_files_bytes(&redis, "files", bytes.len() as u64).await;
}

#[tokio::test]
async fn a_post_with_files_reaches_clients_on_another_node_and_search_there_finds_it_with_them() {
    let redis = redis_or_skip!(Persistence::None);
    let a = Board::node(&redis.url(), "posts", &[]);
    let b = Board::node(&redis.url(), "posts", &[]);
    let mut on_a = Peer::connect("client on A", &a.ws_url()).await;
    let mut on_b = Peer::connect("client on B", &b.ws_url()).await;
    let photo = uploaded(a.addr, "photo.bin", &content(2, 300_000)).await;
    let notes = uploaded(b.addr, "notes.bin", &content(3, 1000)).await;
    let ids = [photo["id"].as_str().unwrap(), notes["id"].as_str().unwrap()];

    on_a.post_files("holiday pictures", &ids, KEY, 1).await;
    let message = on_a.acked(1).await;
    assert_eq!(
        message["files"],
        json!([photo, notes]),
        "the message carries the files, in order"
    );
    on_b.until_delivered(std::slice::from_ref(&message)).await;
    assert_delivered(&on_b, std::slice::from_ref(&message), &[]);
    assert_contains(
        "the API of B",
        &listed(b.addr, WAIT).await,
        std::slice::from_ref(&message),
    );

    let deadline = Instant::now() + WAIT;
    let hit = loop {
        let answer = get(b.addr, "/api/search?q=holiday").await.json();
        if let Some(hit) = answer["results"].get(0) {
            break hit.clone();
        }
        assert!(
            Instant::now() < deadline,
            "B's search never found it: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        hit["files"], message["files"],
        "a search hit carries the files"
    );

    let unknown = "0".repeat(64);
    on_b.post_files("no such file", &[&unknown], KEY, 2).await;
    let refused = on_b.reply(2, WAIT).await;
    let error = refused.expect_err("a post naming a file the board lacks is refused");
    assert_eq!(error["code"], "bad-request", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&unknown),
        "the error names the file: {error}"
    );
}

#[tokio::test]
async fn deleting_the_last_message_that_carries_a_file_removes_it_from_every_node_and_redis() {
    let redis = redis_or_skip!(Persistence::AppendOnly);
    let a = Board::node(&redis.url(), "gone", &[]);
    let b = Board::node(&redis.url(), "gone", &[]);
    let bytes = content(4, 600_000);
    let file = uploaded(a.addr, "shared.bin", &bytes).await;
    let id = file["id"].as_str().unwrap().to_owned();
    let mut on_a = Peer::connect("client on A", &a.ws_url()).await;
    let mut on_b = Peer::connect("client on B", &b.ws_url()).await;
    on_a.post_files("first to carry it", &[&id], KEY, 1).await;
    let first = on_a.acked(1).await;
    on_b.post_files("second to carry it", &[&id], KEY, 1).await;
    let second = on_b.acked(1).await;

    delete_message(b.addr, id_of(&first)).await;
    for node in [&a, &b] {
        let got = download(node.addr, &id).await;
        assert_eq!(got.status, 200, "another message still carries it");
        assert!(got.body == bytes);
    }
    assert_eq!(
        redis.cli(&["HGET", &format!("gone:file:{id}"), "refs"]),
        "1"
    );

    delete_message(a.addr, id_of(&second)).await;
    for node in [&a, &b] {
        assert_eq!(download(node.addr, &id).await.status, 404);
    }
    assert_eq!(keys(&redis, "gone", "file:*"), Vec::<String>::new());
    assert_eq!(keys(&redis, "gone", "upload*"), Vec::<String>::new());
    assert_eq!(redis.cli(&["ZCARD", "gone:unreferenced-files"]), "0");
    assert_eq!(files_bytes(&redis, "gone"), 0);
    for node in [&a, &b] {
        assert_eq!(listed(node.addr, WAIT).await, Vec::<Value>::new());
    }
    // And from Redis's files, once it has rewritten them as after any
    // deletion: a run of the content is in none of them.
    let needle = &bytes[100_000..100_064];
    let deadline = Instant::now() + WAIT;
    while contains_bytes(&files_under(redis.dir()), needle) {
        assert!(
            Instant::now() < deadline,
            "the removed file's bytes are still in Redis's files"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn id_of(message: &Value) -> u64 {
    id(message)
}

/// Every byte of every file under `dir`.
fn files_under(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            bytes.extend(files_under(&path));
        } else if let Ok(read) = std::fs::read(&path) {
            bytes.extend(read);
        }
    }
    bytes
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_file_no_message_carries_is_removed_after_its_time_and_a_carried_one_stays() {
    let redis = redis_or_skip!(Persistence::AppendOnly);
    let flags = ["--orphan-files-after", "2"];
    let a = Board::node(&redis.url(), "orphans", &flags);
    let b = Board::node(&redis.url(), "orphans", &flags);
    let carried = uploaded(a.addr, "kept.bin", &content(5, 400_000)).await;
    let carried_id = carried["id"].as_str().unwrap().to_owned();
    let mut on_a = Peer::connect("client on A", &a.ws_url()).await;
    on_a.post_files("this one is posted", &[&carried_id], KEY, 1)
        .await;
    on_a.acked(1).await;
    let left = content(6, 300_000);
    let orphan = uploaded(b.addr, "left.bin", &left).await;
    let orphan_id = orphan["id"].as_str().unwrap().to_owned();
    assert_eq!(download(a.addr, &orphan_id).await.status, 200);

    for node in [&a, &b] {
        until_file_status(node.addr, &orphan_id, 404, WAIT).await;
    }
    assert_eq!(
        keys(&redis, "orphans", &format!("file:{orphan_id}*")),
        Vec::<String>::new()
    );
    for node in [&a, &b] {
        assert_eq!(download(node.addr, &carried_id).await.status, 200);
    }
    assert_eq!(files_bytes(&redis, "orphans"), 400_000);
    assert_eq!(redis.cli(&["ZCARD", "orphans:unreferenced-files"]), "0");
    // Gone from Redis's files too, as deleted messages are.
    let needle = &left[200_000..200_064];
    let deadline = Instant::now() + WAIT;
    while contains_bytes(&files_under(redis.dir()), needle) {
        assert!(
            Instant::now() < deadline,
            "the removed file's bytes are still in Redis's files"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_upload_past_the_files_quota_is_refused_with_files_full_and_gives_its_bytes_back() {
    let redis = redis_or_skip!(Persistence::None);
    let a = Board::node(&redis.url(), "quota", &["--max-files-bytes", "1000000"]);
    uploaded(a.addr, "first.bin", &content(7, 600_000)).await;

    // Declared too large: refused before a byte is read.
    let declared = upload(a.addr, "declared.bin", &content(8, 500_000)).await;
    assert_eq!(declared.status, 507);
    assert_eq!(declared.json()["code"], "files-full");

    // Of unknown size: refused at the chunk that would pass the quota, after
    // one chunk was stored; that one's bytes are given back.
    let (status, body) = upload_unsized(a.addr, &content(9, 500_000), true)
        .await
        .expect("a whole upload is answered");
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["code"], "files-full", "{body}");
    until_files_bytes(&redis, "quota", 600_000).await;

    // Cut off halfway: what it stored goes too.
    assert!(upload_unsized(a.addr, &content(10, 390_000), false)
        .await
        .is_none());
    until_files_bytes(&redis, "quota", 600_000).await;
    let deadline = Instant::now() + WAIT;
    while !keys(&redis, "quota", "upload:*").is_empty() {
        assert!(Instant::now() < deadline, "the upload's keys stay in Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(redis.cli(&["ZCARD", "quota:uploads"]), "0");

    // What is left of the quota is whole again.
    let fits = upload(a.addr, "fits.bin", &content(11, 400_000)).await;
    assert_eq!(fits.status, 201, "{}", String::from_utf8_lossy(&fits.body));
    assert_eq!(files_bytes(&redis, "quota"), 1_000_000);
}

#[tokio::test]
async fn a_post_with_files_survives_a_node_restart_and_a_redis_restart_with_appendonly() {
    let mut redis = redis_or_skip!(Persistence::AppendOnly);
    let mut a = Board::node(&redis.url(), "kept", &[]);
    let bytes = content(12, 700_000);
    let file = uploaded(a.addr, "kept.bin", &bytes).await;
    let id = file["id"].as_str().unwrap().to_owned();
    let mut on_a = Peer::connect("client on A", &a.ws_url()).await;
    on_a.post_files("keep this", &[&id], KEY, 1).await;
    let message = on_a.acked(1).await;
    on_a.close().await;

    a.restart();
    assert_eq!(listed(a.addr, WAIT).await, std::slice::from_ref(&message));
    assert!(download(a.addr, &id).await.body == bytes);

    redis.restart();
    assert_eq!(listed(a.addr, WAIT).await, [message]);
    let deadline = Instant::now() + WAIT;
    loop {
        let got = download(a.addr, &id).await;
        if got.status == 200 {
            assert!(got.body == bytes, "the file is whole after Redis restarted");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GET /files/{id} answers {}",
            got.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_export_of_a_redis_board_carries_the_files_of_its_messages() {
    let redis = redis_or_skip!(Persistence::None);
    let url = redis.url();
    let (message, file) = {
        let a = Board::node(&url, "exported", &[]);
        let file = uploaded(a.addr, "exported.bin", &content(13, 300_000)).await;
        let mut on_a = Peer::connect("client on A", &a.ws_url()).await;
        let id = file["id"].as_str().unwrap().to_owned();
        on_a.post_files("with a file", &[&id], KEY, 1).await;
        (on_a.acked(1).await, file)
    };
    let exported = must_run(&["export", "--redis", &url, "--redis-prefix", "exported"]);
    assert_eq!(json_lines(&exported), std::slice::from_ref(&message));
    assert_eq!(json_lines(&exported)[0]["files"], json!([file]));
}

mod file_store {
    //! The Redis file store itself, for what HTTP cannot reach on cue: a
    //! chunk sent to an upload already dropped, sweeps at chosen times, and
    //! what a file costs Redis's memory.

    use super::*;
    use lanboard::protocol::{Draft, File};
    use lanboard::store::{Log, RedisLog, RedisTarget, StoreError, Stored, CHUNK_BYTES};

    const QUOTA: u64 = 1 << 30;

    fn open(redis: &Redis, prefix: &str) -> RedisLog {
        RedisLog::open(&RedisTarget {
            url: redis.url(),
            prefix: prefix.into(),
        })
        .expect("the Redis board opens")
    }

    /// Stores `bytes` as a whole upload at `time`; returns the file.
    fn store(log: &RedisLog, bytes: &[u8], time: i64) -> (File, Stored) {
        let files = log.files();
        let upload = files.begin_upload(time).unwrap();
        for (seq, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
            files.write_chunk(upload, seq as u32, chunk, QUOTA).unwrap();
        }
        let file = File {
            id: file_id(bytes),
            name: "f.bin".into(),
            size: bytes.len() as u64,
            media_type: "application/octet-stream".into(),
        };
        let stored = files.finish_upload(upload, &file, time).unwrap();
        (file, stored)
    }

    fn post_carrying(log: &RedisLog, id: &str) {
        let limits = lanboard::cli::default_config().session.limits;
        let data = json!({"name": "n", "message": "m", "files": [id]});
        let draft = Draft::parse(&data, limits).unwrap();
        // A board just begun takes posts after a moment (see EPOCH).
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match log.append(vec![draft.clone()], 5) {
                Ok(_) => return,
                Err(e) if e.is_unavailable() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("the post was not stored: {e}"),
            }
        }
    }

    #[test]
    fn a_chunk_for_an_upload_that_was_aborted_or_swept_is_refused_and_stores_nothing() {
        let Some(redis) = Redis::start(Persistence::None) else {
            return;
        };
        let log = open(&redis, "dropped");
        let files = log.files();

        let aborted = files.begin_upload(1_000).unwrap();
        files.write_chunk(aborted, 0, &[1; 1000], QUOTA).unwrap();
        assert_eq!(files.used_bytes().unwrap(), 1000);
        files.abort_upload(aborted).unwrap();
        assert_eq!(files.used_bytes().unwrap(), 0);
        assert!(files.write_chunk(aborted, 1, &[1; 1000], QUOTA).is_err());

        let swept = files.begin_upload(1_000).unwrap();
        files.write_chunk(swept, 0, &[2; 1000], QUOTA).unwrap();
        assert_eq!(files.remove_orphans(2_000).unwrap(), 0, "no file went");
        assert_eq!(files.used_bytes().unwrap(), 0, "the upload's bytes did");
        assert!(files.write_chunk(swept, 1, &[2; 1000], QUOTA).is_err());
        let file = File {
            id: file_id(&[2; 1000]),
            name: "late.bin".into(),
            size: 1000,
            media_type: "application/octet-stream".into(),
        };
        assert!(files.finish_upload(swept, &file, 3_000).is_err());
        assert_eq!(files.file(&file.id).unwrap(), None);

        assert_eq!(keys(&redis, "dropped", "upload*"), Vec::<String>::new());
        assert_eq!(keys(&redis, "dropped", "file:*"), Vec::<String>::new());
        assert_eq!(files_bytes(&redis, "dropped"), 0);
    }

    #[test]
    fn a_sweep_takes_only_files_no_message_carries_and_an_upload_again_restarts_their_hour() {
        let Some(redis) = Redis::start(Persistence::None) else {
            return;
        };
        let log = open(&redis, "sweep");
        let files = log.files();
        let (carried, _) = store(&log, &content(20, 1000), 1_000);
        post_carrying(&log, &carried.id);
        let (orphan, _) = store(&log, &content(21, 2000), 1_000);
        let (refreshed, _) = store(&log, &content(22, 3000), 1_000);
        let (again, stored) = store(&log, &content(22, 3000), 10_000);
        assert_eq!(stored, Stored::Existing(refreshed.clone()));
        assert_eq!(again, refreshed);

        assert_eq!(files.remove_orphans(5_000).unwrap(), 1);
        assert_eq!(files.file(&orphan.id).unwrap(), None);
        assert_eq!(files.read_chunk(&orphan.id, 0).unwrap(), None);
        assert_eq!(files.file(&carried.id).unwrap(), Some(carried.clone()));
        assert_eq!(files.file(&refreshed.id).unwrap(), Some(refreshed.clone()));
        assert_eq!(files.used_bytes().unwrap(), 1000 + 3000);

        assert_eq!(
            files.remove_orphans(20_000).unwrap(),
            1,
            "its hour ends too"
        );
        assert_eq!(files.file(&refreshed.id).unwrap(), None);
        assert_eq!(files.file(&carried.id).unwrap(), Some(carried));
        assert_eq!(files.used_bytes().unwrap(), 1000);
    }

    #[test]
    fn an_import_needs_the_files_its_messages_carry_and_counts_them_as_carried() {
        let Some(redis) = Redis::start(Persistence::None) else {
            return;
        };
        let bytes = content(40, 5000);
        let file = File {
            id: file_id(&bytes),
            name: "f.bin".into(),
            size: bytes.len() as u64,
            media_type: "application/octet-stream".into(),
        };
        let message = |id: u64, files: Vec<File>| lanboard::protocol::Message {
            id,
            name: "n".into(),
            message: format!("message {id}"),
            time: 1_700_000_000_000,
            edited: None,
            files,
        };
        let messages = [message(3, Vec::new()), message(7, vec![file.clone()])];

        let bare = open(&redis, "bare");
        match bare.import(&messages) {
            Err(StoreError::MissingFile { message, id }) => {
                assert_eq!((message, id), (7, file.id.clone()))
            }
            other => panic!("an import of a file the board lacks: {other:?}"),
        }
        assert_eq!(bare.last_id().unwrap(), 0, "nothing was imported");
        assert_eq!(keys(&redis, "bare", "message*"), Vec::<String>::new());

        let held = open(&redis, "held");
        let (stored, _) = store(&held, &bytes, 1_000);
        assert_eq!(stored, file);
        assert_eq!(held.import(&messages).unwrap(), 2);
        assert_eq!(held.after(0, 10).unwrap(), messages);
        assert_eq!(held.files().remove_orphans(i64::MAX).unwrap(), 0);
        assert_eq!(held.files().file(&file.id).unwrap(), Some(file.clone()));

        // The imported message is the one that carries it: deleting it
        // (with the operator secret: imported messages have no author key)
        // removes the file.
        let operator = held.operator_secret(&"o".repeat(32)).unwrap();
        let done = held
            .commit(
                vec![lanboard::store::Op::Delete {
                    id: 7,
                    key: operator,
                }],
                2_000,
            )
            .unwrap();
        assert!(matches!(done[..], [Ok(_)]), "{done:?}");
        assert_eq!(held.files().file(&file.id).unwrap(), None);
        assert_eq!(held.files().used_bytes().unwrap(), 0);
    }

    /// Redis's `used_memory`, in bytes.
    fn used_memory(redis: &Redis) -> f64 {
        let info = redis.cli(&["INFO", "memory"]);
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no used_memory in INFO memory:\n{info}"))
    }

    #[test]
    fn redis_holds_a_file_in_about_its_own_size_of_memory_and_frees_it_all() {
        let Some(redis) = Redis::start(Persistence::None) else {
            return;
        };
        let log = open(&redis, "memory");
        let bytes = content(30, 16 * 1024 * 1024);
        let before = used_memory(&redis);
        let (file, _) = store(&log, &bytes, 1_000);
        let after = used_memory(&redis);
        let per_byte = (after - before) / bytes.len() as f64;
        // Whole 256 KiB values would cost 1.25 (the allocator's next size
        // class); the slack is for client buffers, not the content.
        assert!(
            per_byte < 1.05,
            "a {} byte file took {} bytes of Redis memory ({per_byte:.3} a byte)",
            bytes.len(),
            after - before
        );
        assert_eq!(log.files().remove_orphans(2_000).unwrap(), 1);
        assert_eq!(log.files().file(&file.id).unwrap(), None);
        let freed = used_memory(&redis);
        assert!(
            freed - before < 1024.0 * 1024.0,
            "{} bytes were still used after the file went",
            freed - before
        );
    }
}
