//! One simulated client: joining a board (connect, upgrade, wait for the
//! history), then the measured phase, in which it records every delivery and,
//! if it is a sender, keeps up to `window` of its own messages in flight.
//!
//! Clients report to the coordinator through [`Shared`]: a count of those
//! ready to start, a count of those finished, and the phase they obey.
//!
//! With several nodes, client `i` connects to node `i % nodes` ([`node_of`]),
//! so the senders (the first clients) are spread over the nodes as well, and
//! each delivery's latency is filed as same-node or cross-node by comparing
//! the receiver's node with the sender's ([`Plan::placement`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{watch, Notify};

use crate::check::Received;
use crate::dialect::{self, Dialect, Event, Stamp};
use crate::wire::Socket;

/// How long a stopping client tries to send its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);

/// What every client of a run shares.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dialect: Dialect,
    /// Clients `0..senders` send.
    pub senders: u32,
    /// Messages each sender sends.
    pub messages: u32,
    /// Most of a sender's own messages not yet echoed back to it.
    pub window: u32,
    /// The instant all send and receive times are measured from.
    pub base: Instant,
    /// The nodes the clients are spread over (1 for a single board).
    pub nodes: u32,
    /// The `files` every post carries (a JSON array of ids), or empty.
    pub files: Vec<u8>,
}

impl Plan {
    fn expected(&self) -> usize {
        self.senders as usize * self.messages as usize
    }

    /// Where a message from client `sender` to client `receiver` travelled.
    /// A sender's own echo counts as same-node: it is a delivery like any
    /// other, and with one node every delivery is same-node.
    pub fn placement(&self, sender: u32, receiver: u32) -> Placement {
        let nodes = self.nodes as usize;
        if node_of(sender as usize, nodes) == node_of(receiver as usize, nodes) {
            Placement::SameNode
        } else {
            Placement::CrossNode
        }
    }
}

/// The node (index into the run's node addresses) client `client` connects
/// to when there are `nodes`: round-robin, so clients and senders alike are
/// spread evenly. The coordinator connects by it and [`Plan::placement`]
/// attributes by it, so the two cannot disagree.
pub fn node_of(client: usize, nodes: usize) -> usize {
    client % nodes.max(1)
}

/// Whether a delivery reached a client on its sender's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    SameNode,
    CrossNode,
}

/// Latency histograms in microseconds: every delivery, and the same ones
/// split by [`Placement`].
#[derive(Debug, Clone)]
pub struct Latencies {
    pub all: Histogram<u64>,
    pub same_node: Histogram<u64>,
    pub cross_node: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Latencies {
        // Three significant digits from 1 µs up, growing as needed.
        let empty = Histogram::new(3).expect("3 significant digits are valid");
        Latencies {
            all: empty.clone(),
            same_node: empty.clone(),
            cross_node: empty,
        }
    }

    /// Records one delivery that took `us` microseconds (at least 1).
    pub fn record(&mut self, placement: Placement, us: u64) {
        let us = us.max(1);
        let split = match placement {
            Placement::SameNode => &mut self.same_node,
            Placement::CrossNode => &mut self.cross_node,
        };
        // The histograms grow to fit (`saturating_record` would clamp to
        // their current range instead); recording fails only on a count
        // overflowing u64.
        let _ = self.all.record(us);
        let _ = split.record(us);
    }

    /// Adds another client's histograms to these.
    pub fn add(&mut self, other: &Latencies) {
        // The histograms resize themselves, so adding cannot overflow a range.
        let _ = self.all.add(&other.all);
        let _ = self.same_node.add(&other.same_node);
        let _ = self.cross_node.add(&other.cross_node);
    }
}

/// The phase the coordinator has reached; clients follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connected; only keep the connection alive.
    Wait,
    /// Senders start sending.
    Go,
    /// Close and hand in the record.
    Stop,
}

/// Counters the clients of a run update.
#[derive(Default)]
pub struct Shared {
    pub ready: AtomicUsize,
    pub finished: AtomicUsize,
    /// Clients that broke off; one is enough to fail the run, and the
    /// others may wait in vain for a cut-off sender's messages.
    pub broken: AtomicUsize,
    /// Woken when `finished` grows.
    pub progress: Notify,
}

impl Shared {
    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
        self.progress.notify_one();
    }
}

/// How a client joined.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    /// From the start of the TCP connect to the whole history received.
    pub took: Duration,
    /// Size of the history message (lanboard's frame, or Socket.IO's packet).
    pub welcome_bytes: usize,
}

/// Connects and waits for the board's history.
pub async fn join(
    addr: SocketAddr,
    dialect: Dialect,
    seed: u32,
) -> Result<(Socket, Joined), String> {
    let started = Instant::now();
    let mut socket = Socket::connect(addr, dialect.path(), seed)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    loop {
        loop {
            let event = match socket.next_message() {
                Ok(Some(payload)) => {
                    let event = dialect.classify(payload);
                    if event == Event::Welcome {
                        let joined = Joined {
                            took: started.elapsed(),
                            welcome_bytes: payload.len(),
                        };
                        socket.flush().await.map_err(|e| e.to_string())?;
                        return Ok((socket, joined));
                    }
                    event
                }
                Ok(None) => break,
                Err(e) => return Err(format!("while joining: {e}")),
            };
            match event {
                Event::Open => {
                    if let Some(request) = dialect.connect_request() {
                        socket.queue_text(request);
                    }
                }
                Event::Ping => socket.queue_text(dialect.pong()),
                Event::Refused(why) => return Err(format!("while joining: {why}")),
                Event::Added { .. } => {
                    return Err("a message arrived before the history".into());
                }
                Event::Welcome | Event::Presence | Event::Other => {}
            }
        }
        socket.flush().await.map_err(|e| e.to_string())?;
        match socket.fill().await {
            Ok(0) => return Err("the server closed the connection while joining".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("while joining: {e}")),
        }
    }
}

/// Everything one client observed in the measured phase.
pub struct Record {
    pub received: Received,
    /// Latency of each delivery.
    pub latency: Latencies,
    /// When this client (as a sender) sent its first message, in ns since `base`.
    pub first_send_ns: Option<u64>,
    /// When its last expected delivery arrived, in ns since `base`.
    pub last_receive_ns: Option<u64>,
    /// Why it stopped early, if it did.
    pub failure: Option<String>,
    /// True if and only if it stopped early on its own (an error or a
    /// refusal), not because the coordinator gave up waiting.
    pub broke: bool,
    /// The size of the first delivery it received (the whole frame, or
    /// Socket.IO packet).
    pub added_bytes: Option<usize>,
}

/// The measured phase of client `me`: runs until the coordinator says stop,
/// and counts as finished once every expected message arrived (or it failed).
pub async fn run(
    mut socket: Socket,
    me: u32,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> Record {
    let expected = plan.expected();
    let with_ids = plan.dialect == Dialect::Lanboard;
    let mut record = Record {
        received: Received {
            keys: Vec::with_capacity(expected),
            ids: Vec::with_capacity(if with_ids { expected } else { 0 }),
        },
        latency: Latencies::new(),
        first_send_ns: None,
        last_receive_ns: None,
        failure: None,
        broke: false,
        added_bytes: None,
    };
    let sender = me < plan.senders;
    let mut sent = 0u32;
    let mut in_flight = 0u32;
    let mut going = *phase.borrow() == Phase::Go;
    let mut finished = expected == 0;
    if finished {
        shared.finish();
    }
    let mut text = Vec::with_capacity(dialect::TEXT_LEN);
    let mut payload = Vec::with_capacity(dialect::TEXT_LEN + plan.files.len() + 64);
    shared.ready.fetch_add(1, Ordering::SeqCst);

    let mut failure = None;
    // Frames may already wait in the buffer from joining, so the loop
    // consumes the buffer before it waits for more.
    let mut now_ns = nanos_since(plan.base);
    'run: loop {
        loop {
            let (event, size) = match socket.next_message() {
                Ok(Some(bytes)) => (plan.dialect.classify(bytes), bytes.len()),
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e.to_string());
                    break 'run;
                }
            };
            match event {
                Event::Added { id, stamp } => {
                    record.added_bytes.get_or_insert(size);
                    record.received.keys.push(stamp.key());
                    if let Some(id) = id {
                        record.received.ids.push(id);
                    }
                    let latency = now_ns.saturating_sub(stamp.sent_ns) / 1000;
                    record
                        .latency
                        .record(plan.placement(stamp.sender, me), latency);
                    if sender && stamp.sender == me {
                        in_flight = in_flight.saturating_sub(1);
                    }
                    if record.received.keys.len() == expected && !finished {
                        finished = true;
                        record.last_receive_ns = Some(now_ns);
                        shared.finish();
                    }
                }
                Event::Ping => socket.queue_text(plan.dialect.pong()),
                Event::Refused(why) => {
                    failure = Some(why);
                    break 'run;
                }
                Event::Open | Event::Welcome | Event::Presence | Event::Other => {}
            }
        }
        if going && sender {
            while in_flight < plan.window && sent < plan.messages {
                let stamp = Stamp {
                    sender: me,
                    seq: sent,
                    sent_ns: nanos_since(plan.base),
                };
                record.first_send_ns.get_or_insert(stamp.sent_ns);
                text.clear();
                dialect::write_text(stamp, &mut text);
                plan.dialect.add_message(&text, &plan.files, &mut payload);
                socket.queue_text(&payload);
                sent += 1;
                in_flight += 1;
            }
        }
        if socket.has_output() {
            if let Err(e) = socket.flush().await {
                failure = Some(format!("sending: {e}"));
                break 'run;
            }
        }
        tokio::select! {
            changed = phase.changed() => {
                let next = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop };
                match next {
                    Phase::Stop => {
                        socket.queue_close();
                        // Leaving politely is best-effort: the record is complete.
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
                        break 'run;
                    }
                    Phase::Go => going = true,
                    Phase::Wait => {}
                }
            }
            filled = socket.fill() => {
                match filled {
                    Ok(0) => {
                        failure = Some("the server closed the connection".into());
                        break 'run;
                    }
                    Ok(_) => now_ns = nanos_since(plan.base),
                    Err(e) => {
                        failure = Some(e.to_string());
                        break 'run;
                    }
                }
            }
        }
    }
    if !finished {
        record.broke = failure.is_some();
        if record.broke {
            shared.broken.fetch_add(1, Ordering::SeqCst);
        }
        record.failure = Some(failure.unwrap_or_else(|| {
            format!(
                "stopped after {} of {expected} message(s)",
                record.received.keys.len()
            )
        }));
        shared.finish();
    }
    record
}

/// Nanoseconds since `base` (a run lasts far less than 584 years).
pub fn nanos_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Checks the same-node/cross-node attribution; panics on the first failure.
pub fn self_check() {
    let plan = |nodes| Plan {
        dialect: Dialect::Lanboard,
        senders: 10,
        messages: 1,
        window: 1,
        base: Instant::now(),
        nodes,
        files: Vec::new(),
    };
    // One node: every delivery is same-node, the sender's own echo included.
    let one = plan(1);
    for (sender, receiver) in [(0, 0), (0, 1), (9, 999)] {
        assert_eq!(one.placement(sender, receiver), Placement::SameNode);
    }
    // Three nodes: clients 0, 3, 6, ... on node 0; 1, 4, 7, ... on node 1.
    let three = plan(3);
    assert_eq!(three.placement(0, 3), Placement::SameNode);
    assert_eq!(three.placement(4, 1), Placement::SameNode);
    assert_eq!(three.placement(5, 5), Placement::SameNode);
    assert_eq!(three.placement(0, 1), Placement::CrossNode);
    assert_eq!(three.placement(2, 999), Placement::CrossNode);
    assert_eq!(three.placement(9, 999), Placement::SameNode);
    // The ten senders are spread 4/3/3 over three nodes, as clients are.
    let mut senders = [0; 3];
    for sender in 0..10 {
        senders[node_of(sender, 3)] += 1;
    }
    assert_eq!(senders, [4, 3, 3]);
    // A receiver on node 1 of 3, with every sender's message: 3 of 10 senders
    // share its node, so 3 same-node and 7 cross-node deliveries.
    let mut latencies = Latencies::new();
    for sender in 0..10 {
        latencies.record(three.placement(sender, 100), 50 + u64::from(sender));
    }
    assert_eq!(latencies.all.len(), 10);
    assert_eq!(latencies.same_node.len(), 3);
    assert_eq!(latencies.cross_node.len(), 7);
    // Senders 1, 4 and 7 share node 1 with receiver 100.
    assert_eq!(latencies.same_node.max(), 57);
    let mut total = Latencies::new();
    total.add(&latencies);
    total.add(&latencies);
    assert_eq!(
        (
            total.all.len(),
            total.same_node.len(),
            total.cross_node.len()
        ),
        (20, 6, 14)
    );
    latencies.record(Placement::CrossNode, 0);
    assert_eq!(latencies.cross_node.min(), 1, "a latency is at least 1 µs");
}
