//! Scenario 6's load generator: a child process of the bench binary itself
//! (`fanout --hall-generator`) holding a share of the hall's clients, each
//! socket bound to the generator's own loopback source address, so that no
//! address runs out of ephemeral ports and no process out of files.
//!
//! The coordinator (`hall.rs`) sends one JSON [`Command`] a line on stdin and
//! reads one JSON [`Report`] a line on stdout; nothing else is written there.
//! The process is single-threaded: one tokio task per client, their state in
//! [`Crowd`], shared through `Rc` and `Cell`, with a few dozen bytes per
//! client besides its socket. Latency is the wall clock at delivery minus
//! the post's stamp (`SystemTime`, as poster and clients are different
//! processes of one machine), kept in one histogram per generator and handed
//! over as buckets.
//!
//! Every client checks its own deliveries: the poster numbers its posts
//! 0, 1, 2, ..., so a client expects exactly the next one; a jump counts the
//! posts it skipped as missed, an old one counts as a duplicate.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::AbortHandle;

use crate::client::node_of;
use crate::dialect::{self, Dialect, Event, Stamp};
use crate::wire::Socket;

/// The first argument that makes the bench binary a generator.
pub const ARG: &str = "--hall-generator";

/// Longest a client may take from its TCP connect to its
/// `messages-available`; one that takes longer failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Room each client keeps free in its read buffer: a post is about 200
/// bytes and the buffer grows for a long history, then shrinks again.
const READ_CHUNK: usize = 1024;
/// Distinct failure reasons kept per generator; more are counted as "other".
const REASONS: usize = 8;
/// How often an [`Command::Await`] looks at every client.
const AWAIT_POLL: Duration = Duration::from_millis(5);
/// How long the generator lets events gather before it waits for more,
/// unless `FANOUT_HALL_BATCH_US` says otherwise. Without it, a post reaching
/// thousands of clients one write at a time woke the generator once per
/// delivery (measured with 9,500 clients a generator: an `epoll_wait` and a
/// context switch per delivery, 11 µs of CPU each); with it, one wake-up
/// reads a batch: a tenth of the wake-ups, and half the generators' CPU per
/// post to 19,000 clients (224 to 282 ms without, 121 to 136 ms with, in
/// back-to-back runs). At most this is added to a latency.
const BATCH_WINDOW: Duration = Duration::from_micros(250);

/// What the coordinator asks, one per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Connect clients `first..first + count` of the hall from `source`,
    /// client `i` to `nodes[node_of(i, nodes.len())]`, with at most
    /// `in_flight` handshakes at once; report when all are in or failed, or
    /// after `within_ms`.
    Join {
        dialect: Dialect,
        nodes: Vec<SocketAddr>,
        source: IpAddr,
        first: u32,
        count: u32,
        in_flight: u32,
        within_ms: u64,
    },
    /// Report how many `presence` frames each client received since it
    /// connected, and stop counting them.
    Presence,
    /// Drop every connection at once, without a close frame, and reconnect
    /// each at a random moment within `spread_ms`, resuming after the last
    /// message it saw; report when all are back or failed, or after
    /// `within_ms`.
    Storm { spread_ms: u64, within_ms: u64 },
    /// Report once every connected client received post `seq`, or after
    /// `within_ms`.
    Await { seq: u32, within_ms: u64 },
    /// Report the totals and exit.
    Quit,
}

/// Histogram buckets, `[value, count]`: what [`Histogram::iter_recorded`]
/// gives, so the coordinator's merged histogram has the same resolution.
pub type Buckets = Vec<(u64, u64)>;

/// Failure reasons and how many clients failed so, the first few distinct.
pub type Reasons = Vec<(String, u32)>;

/// How a round of connections went (the join, or the reconnections of a
/// storm).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Connects {
    /// Clients in the round.
    pub clients: u32,
    /// Wall-clock ns (Unix epoch) when the round began.
    pub started_ns: u64,
    /// Wall-clock ns when the last client of the round was in or failed.
    pub done_ns: u64,
    pub connected: u32,
    pub failed: u32,
    pub reasons: Reasons,
    /// Each connected client's connect-to-`messages-available` time, in µs.
    pub handshake_us: Buckets,
    /// The generator's resident memory at the report.
    pub rss_bytes: u64,
}

/// Deliveries since the last report, and the totals of what went wrong.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Deliveries {
    /// Clients connected now.
    pub live: u32,
    /// Of those, the ones holding the awaited post.
    pub reached: u32,
    /// Posts up to the awaited one that the others still lack.
    pub short: u64,
    /// Posts received since the last report, and the latency of each in µs.
    pub deliveries: u64,
    pub latency_us: Buckets,
    /// Since the generator started: posts a client skipped, and posts it
    /// received again (or after a later one).
    pub missed: u64,
    pub duplicates: u64,
    /// Clients the server cut off (a close frame, the end of the stream, a
    /// reset) since the generator started, and why.
    pub cut: u32,
    pub cut_reasons: Reasons,
    /// `error` events and resumes cut short (`"gap": true`) since the start.
    pub errors: u32,
    pub error_reasons: Reasons,
    pub rss_bytes: u64,
}

/// What a generator answers, one line per command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "report", rename_all = "kebab-case")]
pub enum Report {
    Joined(Connects),
    /// `[frames, clients]`: how many clients received that many `presence`
    /// frames.
    Presence {
        counts: Vec<(u32, u32)>,
    },
    Stormed(Connects),
    Reached(Deliveries),
    Done(Deliveries),
    /// The command could not be carried out.
    Refused {
        why: String,
    },
}

/// Wall-clock nanoseconds since the Unix epoch: the clock every process of
/// scenario 6 stamps and times with.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs a generator until its coordinator says [`Command::Quit`] or goes away.
pub fn main() -> ExitCode {
    crate::servers::raise_open_files();
    // Commands come from a plain thread: tokio's stdin reads on a blocking
    // thread that would hold the runtime open at exit until the next line.
    let (lines, commands) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let batch = std::env::var("FANOUT_HALL_BATCH_US")
        .ok()
        .and_then(|us| us.trim().parse().ok())
        .map_or(BATCH_WINDOW, Duration::from_micros);
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if !batch.is_zero() {
        // Called each time the runtime has nothing left to run, just
        // before it waits for events: they gather meanwhile.
        builder.on_thread_park(move || std::thread::sleep(batch));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fanout generator: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, serve(commands)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("fanout generator: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Answers commands until `Quit` or the end of stdin.
async fn serve(mut commands: mpsc::UnboundedReceiver<String>) -> Result<(), String> {
    let mut crowd: Option<Rc<Crowd>> = None;
    while let Some(line) = commands.recv().await {
        let command: Command =
            serde_json::from_str(&line).map_err(|e| format!("a command {line:?}: {e}"))?;
        let quit = command == Command::Quit;
        let report = match (command, &crowd) {
            (
                Command::Join {
                    dialect,
                    nodes,
                    source,
                    first,
                    count,
                    in_flight,
                    within_ms,
                },
                None,
            ) if !nodes.is_empty() => {
                let joined = Crowd::join(dialect, nodes, source, first, count, in_flight as usize);
                let report = joined.wait_for_round(within_ms).await;
                crowd = Some(joined);
                Report::Joined(report)
            }
            (Command::Presence, Some(crowd)) => Report::Presence {
                counts: crowd.presence(),
            },
            (
                Command::Storm {
                    spread_ms,
                    within_ms,
                },
                Some(crowd),
            ) => {
                crowd.storm(spread_ms);
                Report::Stormed(crowd.wait_for_round(within_ms).await)
            }
            (Command::Await { seq, within_ms }, Some(crowd)) => {
                Report::Reached(crowd.wait_for(seq, within_ms).await)
            }
            (Command::Quit, Some(crowd)) => {
                crowd.stop();
                Report::Done(crowd.deliveries(None))
            }
            (Command::Quit, None) => Report::Done(Deliveries::default()),
            (command, _) => Report::Refused {
                why: format!("{command:?} does not fit this generator's state"),
            },
        };
        let mut text = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        text.push('\n');
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing a report: {e}"))?;
        if quit {
            break;
        }
    }
    Ok(())
}

/// Where a client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Connecting,
    Live,
    /// Never got in, or did not get back in after a storm.
    Failed,
    /// The server ended its connection.
    Cut,
}

/// One client's state between and across its connections.
struct Client {
    state: Cell<State>,
    /// The sequence number of the last post received; -1 before the first.
    last_seq: Cell<i64>,
    /// lanboard's id of the newest message received: the `since` of a resume.
    last_id: Cell<u64>,
    /// The `epoch` of the last `messages-available` (a Redis board's).
    epoch: RefCell<Option<Rc<str>>>,
    /// `presence` frames received while they are being counted.
    presence: Cell<u32>,
}

/// The counters of one generator.
struct Tally {
    /// The current round of connections.
    round: Connects,
    handshake: Histogram<u64>,
    latency: Histogram<u64>,
    deliveries: u64,
    missed: u64,
    duplicates: u64,
    cut: u32,
    cut_reasons: Reasons,
    errors: u32,
    error_reasons: Reasons,
    counting_presence: bool,
    storms: u32,
}

/// Every client of this generator and what they share.
struct Crowd {
    dialect: Dialect,
    nodes: Vec<SocketAddr>,
    source: IpAddr,
    /// The hall-wide number of this generator's first client.
    first: u32,
    clients: Vec<Client>,
    /// Each client's task, so that a storm can end them all at once: a
    /// client waits on its socket alone, with nothing else in its way.
    tasks: RefCell<Vec<Option<AbortHandle>>>,
    tally: RefCell<Tally>,
    /// Woken when a client of the current round is in or failed.
    progress: Notify,
    /// Handshakes in flight while joining.
    gate: Semaphore,
}

impl Crowd {
    /// Starts `count` client tasks, which connect at most `in_flight` at a
    /// time.
    fn join(
        dialect: Dialect,
        nodes: Vec<SocketAddr>,
        source: IpAddr,
        first: u32,
        count: u32,
        in_flight: usize,
    ) -> Rc<Crowd> {
        // Three significant digits from 1 µs up, growing as needed.
        let histogram = Histogram::new(3).expect("3 significant digits are valid");
        let crowd = Rc::new(Crowd {
            dialect,
            nodes,
            source,
            first,
            clients: (0..count)
                .map(|_| Client {
                    state: Cell::new(State::Connecting),
                    last_seq: Cell::new(-1),
                    last_id: Cell::new(0),
                    epoch: RefCell::new(None),
                    presence: Cell::new(0),
                })
                .collect(),
            tasks: RefCell::new(Vec::new()),
            tally: RefCell::new(Tally {
                round: Connects {
                    clients: count,
                    started_ns: unix_ns(),
                    ..Connects::default()
                },
                handshake: histogram.clone(),
                latency: histogram,
                deliveries: 0,
                missed: 0,
                duplicates: 0,
                cut: 0,
                cut_reasons: Reasons::new(),
                errors: 0,
                error_reasons: Reasons::new(),
                counting_presence: true,
                storms: 0,
            }),
            progress: Notify::new(),
            gate: Semaphore::new(in_flight.max(1)),
        });
        let tasks = (0..count as usize)
            .map(|k| Some(tokio::task::spawn_local(join_and_stay(crowd.clone(), k)).abort_handle()))
            .collect();
        *crowd.tasks.borrow_mut() = tasks;
        crowd
    }

    /// Waits until every client of the current round is in or failed, or
    /// `within_ms` passed (then the ones still trying count as failed).
    async fn wait_for_round(&self, within_ms: u64) -> Connects {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(within_ms);
        loop {
            let pending = {
                let tally = self.tally.borrow();
                let round = &tally.round;
                (round.clients).saturating_sub(round.connected + round.failed)
            };
            if pending == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, self.progress.notified())
                .await
                .is_err()
            {
                let mut tally = self.tally.borrow_mut();
                tally.round.failed += pending;
                let why = format!("still connecting after {within_ms} ms");
                add_reason(&mut tally.round.reasons, &why, pending);
                break;
            }
        }
        let mut tally = self.tally.borrow_mut();
        let mut round = tally.round.clone();
        round.handshake_us = buckets(&tally.handshake);
        round.rss_bytes = own_rss();
        tally.handshake.reset();
        round
    }

    /// `[frames, clients]` of the presence frames counted so far; stops
    /// counting.
    fn presence(&self) -> Vec<(u32, u32)> {
        self.tally.borrow_mut().counting_presence = false;
        let mut counts = std::collections::BTreeMap::new();
        for client in &self.clients {
            if client.state.get() == State::Live {
                *counts.entry(client.presence.get()).or_insert(0u32) += 1;
            }
        }
        counts.into_iter().collect()
    }

    /// Starts a storm: every connected client drops at once (its task
    /// ends, and its socket, set to linger 0, resets the connection as a
    /// lost network or a killed browser would, without a close frame), and
    /// a new task brings it back at its moment within `spread_ms`.
    fn storm(self: &Rc<Crowd>, spread_ms: u64) {
        let live = self.connected().count() as u32;
        let mut tally = self.tally.borrow_mut();
        tally.storms += 1;
        tally.round = Connects {
            clients: live,
            started_ns: unix_ns(),
            ..Connects::default()
        };
        tally.handshake.reset();
        let round = tally.storms;
        drop(tally);
        let mut tasks = self.tasks.borrow_mut();
        for (k, task) in tasks.iter_mut().enumerate() {
            if self.clients[k].state.get() != State::Live {
                continue;
            }
            if let Some(task) = task.take() {
                // An aborted task is never polled again: the old
                // connection can no longer touch the client's state.
                task.abort();
            }
            self.clients[k].state.set(State::Connecting);
            let pause = self.pause(k, round, spread_ms);
            let back = tokio::task::spawn_local(come_back(self.clone(), k, round, pause));
            *task = Some(back.abort_handle());
        }
    }

    /// Ends every client's task (and so its connection).
    fn stop(&self) {
        for task in self.tasks.borrow_mut().iter_mut() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
    }

    /// The clients connected now.
    fn connected(&self) -> impl Iterator<Item = &Client> {
        (self.clients.iter()).filter(|c| c.state.get() == State::Live)
    }

    /// Waits until every connected client holds post `seq`, or `within_ms`.
    async fn wait_for(&self, seq: u32, within_ms: u64) -> Deliveries {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(within_ms);
        let seq = i64::from(seq);
        loop {
            let behind = self.connected().any(|c| c.last_seq.get() < seq);
            if !behind || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(AWAIT_POLL).await;
        }
        self.deliveries(Some(seq))
    }

    /// The report of deliveries since the last one; with `seq`, how many
    /// connected clients hold that post.
    fn deliveries(&self, seq: Option<i64>) -> Deliveries {
        let (mut live, mut reached, mut short) = (0, 0, 0);
        for client in self.connected() {
            live += 1;
            let last = client.last_seq.get();
            match seq {
                Some(seq) if last < seq => short += (seq - last) as u64,
                _ => reached += 1,
            }
        }
        let mut tally = self.tally.borrow_mut();
        let report = Deliveries {
            live,
            reached,
            short,
            deliveries: tally.deliveries,
            latency_us: buckets(&tally.latency),
            missed: tally.missed,
            duplicates: tally.duplicates,
            cut: tally.cut,
            cut_reasons: tally.cut_reasons.clone(),
            errors: tally.errors,
            error_reasons: tally.error_reasons.clone(),
            rss_bytes: own_rss(),
        };
        tally.deliveries = 0;
        tally.latency.reset();
        report
    }

    /// The path a client opens: a resume carries the last id it saw and the
    /// board's epoch (see the README's protocol section); the original
    /// board has no resume and sends its whole history instead.
    fn path(&self, k: usize, resume: bool) -> String {
        let path = self.dialect.path();
        if !resume || self.dialect != Dialect::Lanboard {
            return path.to_owned();
        }
        let client = &self.clients[k];
        let mut path = format!("{path}?since={}", client.last_id.get());
        if let Some(epoch) = client.epoch.borrow().as_deref() {
            path.push_str("&epoch=");
            path.push_str(&percent_encoded(epoch));
        }
        path
    }

    /// Connects client `k` and reads up to and including its
    /// `messages-available`.
    async fn connect(&self, k: usize, resume: bool) -> Result<Socket, String> {
        let started = std::time::Instant::now();
        let hall_index = self.first as usize + k;
        let node = self.nodes[node_of(hall_index, self.nodes.len())];
        let path = self.path(k, resume);
        let attempt = async {
            let tcp = match self.source {
                IpAddr::V4(_) => TcpSocket::new_v4(),
                IpAddr::V6(_) => TcpSocket::new_v6(),
            }
            .map_err(|e| format!("a socket: {e}"))?;
            tcp.bind(SocketAddr::new(self.source, 0))
                .map_err(|e| format!("binding to {}: {e}", self.source))?;
            let stream = tcp
                .connect(node)
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            // A dropped client resets its connection (see `storm`); without
            // the option it would close it with a FIN instead, which the
            // server sees as a drop all the same.
            let _ = stream.set_zero_linger();
            let seed = (hall_index as u32).wrapping_mul(0x9E37_79B9);
            let mut socket = Socket::upgrade(stream, node, &path, seed, READ_CHUNK)
                .await
                .map_err(|e| e.to_string())?;
            self.welcome(k, &mut socket, resume).await?;
            Ok::<_, String>(socket)
        };
        let socket = match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(format!(
                    "no messages-available within {HANDSHAKE_TIMEOUT:?}"
                ))
            }
        };
        let us = started.elapsed().as_micros() as u64;
        // The histogram grows to fit; recording fails only on a count
        // overflowing u64.
        let _ = self.tally.borrow_mut().handshake.record(us.max(1));
        Ok(socket)
    }

    /// Reads until the `messages-available`, answering what the dialect
    /// asks on the way, and takes in the messages it carries.
    async fn welcome(&self, k: usize, socket: &mut Socket, resume: bool) -> Result<(), String> {
        loop {
            loop {
                let event = match socket.next_message() {
                    Ok(Some(payload)) => match self.dialect.classify(payload) {
                        Event::Welcome => {
                            let now = unix_ns();
                            self.take_history(k, payload, now, resume)?;
                            socket.shrink();
                            socket.flush().await.map_err(|e| e.to_string())?;
                            return Ok(());
                        }
                        event => event,
                    },
                    Ok(None) => break,
                    Err(e) => return Err(e.to_string()),
                };
                match event {
                    Event::Open => {
                        if let Some(request) = self.dialect.connect_request() {
                            socket.queue_text(request);
                        }
                    }
                    Event::Ping => socket.queue_text(self.dialect.pong()),
                    Event::Presence => self.count_presence(k),
                    Event::Refused(why) => return Err(why),
                    Event::Added { .. } => {
                        return Err("a message arrived before messages-available".into())
                    }
                    Event::Welcome | Event::Other => {}
                }
            }
            socket.flush().await.map_err(|e| e.to_string())?;
            match socket.fill().await {
                Ok(0) => return Err("the server closed the connection while joining".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Takes in the messages of a `messages-available`: on a resume, what
    /// the client missed; on the original, the whole history, of which only
    /// the posts after the client's last one are new.
    fn take_history(&self, k: usize, payload: &[u8], now: u64, resume: bool) -> Result<(), String> {
        let history = History::parse(self.dialect, payload)?;
        if history.gap {
            self.error("a resume was cut short (\"gap\": true)");
        }
        if let Some(epoch) = history.epoch {
            let mut slot = self.clients[k].epoch.borrow_mut();
            if slot.as_deref() != Some(epoch.as_str()) {
                *slot = Some(Rc::from(epoch));
            }
        }
        // The original always sends everything it holds.
        let replay = self.dialect != Dialect::Lanboard;
        for shown in history.messages {
            if let Some(id) = shown.id {
                self.note_id(k, id);
            }
            match dialect::read_stamp(shown.message.as_bytes()) {
                Some(stamp) => self.deliver(k, None, stamp, now, replay),
                // A fresh board holds no one else's messages; on a resume
                // lanboard sends nothing but posts.
                None if resume && !replay => self.error("a resume carried an unstamped message"),
                None => {}
            }
        }
        Ok(())
    }

    fn note_id(&self, k: usize, id: u64) {
        let client = &self.clients[k];
        if id > client.last_id.get() {
            client.last_id.set(id);
        }
    }

    /// Checks and times one post reaching client `k`. With `replay`, an
    /// old post is a copy the board sent again on purpose, not a duplicate.
    fn deliver(&self, k: usize, id: Option<u64>, stamp: Stamp, now: u64, replay: bool) {
        if let Some(id) = id {
            self.note_id(k, id);
        }
        let client = &self.clients[k];
        let (seq, last) = (i64::from(stamp.seq), client.last_seq.get());
        let mut tally = self.tally.borrow_mut();
        if seq <= last {
            if !replay {
                tally.duplicates += 1;
            }
            return;
        }
        tally.missed += (seq - last - 1) as u64;
        client.last_seq.set(seq);
        tally.deliveries += 1;
        let us = now.saturating_sub(stamp.sent_ns) / 1000;
        // As above: the histogram grows to fit.
        let _ = tally.latency.record(us.max(1));
    }

    fn count_presence(&self, k: usize) {
        if self.tally.borrow().counting_presence {
            let client = &self.clients[k];
            client.presence.set(client.presence.get() + 1);
        }
    }

    fn error(&self, why: &str) {
        let mut tally = self.tally.borrow_mut();
        tally.errors += 1;
        add_reason(&mut tally.error_reasons, why, 1);
    }

    /// Client `k` is in (or failed) in round `round` (0: the join, then
    /// each storm). A client of an earlier round, already given up on,
    /// changes only its own state.
    fn arrived(&self, k: usize, round: u32, outcome: Result<(), String>) {
        let mut tally = self.tally.borrow_mut();
        let counted = round == tally.storms;
        let state = if outcome.is_ok() {
            State::Live
        } else {
            State::Failed
        };
        self.clients[k].state.set(state);
        if !counted {
            return;
        }
        match outcome {
            Ok(()) => tally.round.connected += 1,
            Err(why) => {
                tally.round.failed += 1;
                add_reason(&mut tally.round.reasons, &why, 1);
            }
        }
        tally.round.done_ns = unix_ns();
        drop(tally);
        self.progress.notify_one();
    }

    /// Reads client `k`'s connection until the server ends it (or the
    /// task is aborted by a storm or the end).
    async fn stay(&self, k: usize, mut socket: Socket) {
        let mut now = unix_ns();
        loop {
            loop {
                let event = match socket.next_message() {
                    Ok(Some(payload)) => self.dialect.classify(payload),
                    Ok(None) => break,
                    Err(e) => return self.cut(k, &e.to_string()),
                };
                match event {
                    Event::Added { id, stamp } => self.deliver(k, id, stamp, now, false),
                    Event::Presence => self.count_presence(k),
                    Event::Ping => socket.queue_text(self.dialect.pong()),
                    Event::Refused(why) => self.error(&why),
                    Event::Open | Event::Welcome | Event::Other => {}
                }
            }
            if socket.has_output() {
                if let Err(e) = socket.flush().await {
                    return self.cut(k, &format!("sending: {e}"));
                }
            }
            match socket.fill().await {
                Ok(0) => return self.cut(k, "the server ended the connection"),
                Ok(_) => now = unix_ns(),
                Err(e) => return self.cut(k, &e.to_string()),
            }
        }
    }

    fn cut(&self, k: usize, why: &str) {
        self.clients[k].state.set(State::Cut);
        let mut tally = self.tally.borrow_mut();
        tally.cut += 1;
        add_reason(&mut tally.cut_reasons, why, 1);
    }

    /// Client `k`'s random moment to come back in storm `round`: uniform
    /// over `spread_ms`, the same in every run.
    fn pause(&self, k: usize, round: u32, spread_ms: u64) -> Duration {
        let hall_index = u64::from(self.first) + k as u64;
        let random = splitmix((hall_index << 16) | u64::from(round));
        Duration::from_micros(random % (spread_ms.max(1) * 1000))
    }
}

/// Client `k` joins, then stays until the server ends its connection or a
/// storm or the end aborts the task.
async fn join_and_stay(crowd: Rc<Crowd>, k: usize) {
    let joined = {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = crowd.gate.acquire().await;
        crowd.connect(k, false).await
    };
    match joined {
        Ok(socket) => {
            crowd.arrived(k, 0, Ok(()));
            crowd.stay(k, socket).await;
        }
        Err(why) => crowd.arrived(k, 0, Err(why)),
    }
}

/// Client `k` comes back after storm `round`, resuming, then stays.
async fn come_back(crowd: Rc<Crowd>, k: usize, round: u32, pause: Duration) {
    tokio::time::sleep(pause).await;
    match crowd.connect(k, true).await {
        Ok(socket) => {
            crowd.arrived(k, round, Ok(()));
            crowd.stay(k, socket).await;
        }
        Err(why) => crowd.arrived(k, round, Err(why)),
    }
}

/// The messages of a `messages-available`, parsed in full: it comes once
/// per connection, so serde's cost is no matter, and it does not depend on
/// the order of keys.
struct History<'a> {
    messages: Vec<Shown<'a>>,
    gap: bool,
    epoch: Option<String>,
}

#[derive(Deserialize)]
struct Shown<'a> {
    /// lanboard's id; the original's messages have none.
    id: Option<u64>,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
}

#[derive(Deserialize)]
struct LanboardWelcome<'a> {
    #[serde(borrow)]
    data: Vec<Shown<'a>>,
    #[serde(default)]
    gap: bool,
    epoch: Option<String>,
}

impl<'a> History<'a> {
    fn parse(dialect: Dialect, payload: &'a [u8]) -> Result<History<'a>, String> {
        let unreadable = |e: serde_json::Error| format!("an unreadable messages-available: {e}");
        match dialect {
            Dialect::Lanboard => {
                let welcome: LanboardWelcome<'a> =
                    serde_json::from_slice(payload).map_err(unreadable)?;
                Ok(History {
                    messages: welcome.data,
                    gap: welcome.gap,
                    epoch: welcome.epoch,
                })
            }
            Dialect::SocketIo => {
                // `42["messages-available",[...]]`: the packet type, then JSON.
                let json = payload.get(2..).unwrap_or_default();
                let (_, messages): (Cow<'a, str>, Vec<Shown<'a>>) =
                    serde_json::from_slice(json).map_err(unreadable)?;
                Ok(History {
                    messages,
                    gap: false,
                    epoch: None,
                })
            }
        }
    }
}

/// Adds `count` failures for `why` to `reasons`, keeping the first
/// [`REASONS`] distinct ones.
pub fn add_reason(reasons: &mut Reasons, why: &str, count: u32) {
    let why: String = why.chars().take(160).collect();
    if let Some(entry) = reasons.iter_mut().find(|(seen, _)| *seen == why) {
        entry.1 += count;
    } else if reasons.len() < REASONS {
        reasons.push((why, count));
    } else if let Some(entry) = reasons.iter_mut().find(|(seen, _)| seen == "other") {
        entry.1 += count;
    } else {
        reasons.push(("other".into(), count));
    }
}

/// The recorded buckets of `histogram`.
pub fn buckets(histogram: &Histogram<u64>) -> Buckets {
    (histogram.iter_recorded())
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// This process's resident memory, in bytes (0 if unknown).
fn own_rss() -> u64 {
    crate::servers::status_kib(std::process::id(), "VmRSS:").map_or(0, |kib| kib * 1024)
}

/// A query value with everything but unreserved characters percent-encoded
/// (lanboard's epochs are hex, so this is a precaution).
fn percent_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// SplitMix64: a well-spread number from any input.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks the pure parts of this module; panics on the first failure.
pub fn self_check() {
    let join = Command::Join {
        dialect: Dialect::Lanboard,
        nodes: vec![SocketAddr::from(([127, 0, 0, 1], 4000))],
        source: IpAddr::from([127, 0, 0, 2]),
        first: 9_500,
        count: 9_500,
        in_flight: 128,
        within_ms: 1_000,
    };
    let line = serde_json::to_string(&join).unwrap();
    assert!(
        line.starts_with(r#"{"command":"join","dialect":"Lanboard""#),
        "{line}"
    );
    assert_eq!(serde_json::from_str::<Command>(&line).unwrap(), join);
    let report = Report::Reached(Deliveries {
        live: 3,
        latency_us: vec![(120, 2), (4_000, 1)],
        cut_reasons: vec![("the server ended the connection".into(), 1)],
        ..Deliveries::default()
    });
    let line = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), report);

    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for us in [1, 250, 250, 99_000, 3_000_000] {
        histogram.record(us).unwrap();
    }
    let mut merged = Histogram::<u64>::new(3).unwrap();
    for (value, count) in buckets(&histogram) {
        merged.record_n(value, count).unwrap();
    }
    assert_eq!(merged.len(), 5);
    assert_eq!(
        merged.value_at_quantile(0.5),
        histogram.value_at_quantile(0.5)
    );
    assert_eq!(merged.max(), histogram.max());

    let mut reasons = Reasons::new();
    for i in 0..12 {
        add_reason(&mut reasons, &format!("HTTP/1.1 50{i}"), 1);
    }
    add_reason(&mut reasons, "HTTP/1.1 500", 2);
    assert_eq!(reasons.len(), REASONS + 1);
    assert_eq!(reasons[0], ("HTTP/1.1 500".into(), 3));
    assert_eq!(reasons[REASONS], ("other".into(), 4));

    let text = {
        let mut text = Vec::new();
        let stamp = Stamp {
            sender: 0,
            seq: 7,
            sent_ns: 1_764_000_000_000_000_000,
        };
        dialect::write_text(stamp, &mut text);
        String::from_utf8(text).unwrap()
    };
    let welcome = format!(
        r#"{{"event":"messages-available","data":[{{"id":41,"name":"fanout","message":"{text}","time":1}}],"epoch":"ab12"}}"#
    );
    let history = History::parse(Dialect::Lanboard, welcome.as_bytes()).unwrap();
    assert_eq!(history.epoch.as_deref(), Some("ab12"));
    assert!(!history.gap);
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].id, Some(41));
    assert_eq!(
        dialect::read_stamp(history.messages[0].message.as_bytes()).map(|s| s.seq),
        Some(7)
    );
    let gap = r#"{"data":[],"event":"messages-available","gap":true}"#;
    assert!(
        History::parse(Dialect::Lanboard, gap.as_bytes())
            .unwrap()
            .gap
    );
    let original = format!(r#"42["messages-available",[{{"name":"fanout","message":"{text}"}}]]"#);
    let history = History::parse(Dialect::SocketIo, original.as_bytes()).unwrap();
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].id, None);

    assert_eq!(percent_encoded("a1-f"), "a1-f");
    assert_eq!(percent_encoded("a b&c"), "a%20b%26c");
    let spread: Vec<u64> = (0..1000).map(|i| splitmix(i) % 1000).collect();
    assert!(spread.iter().any(|&v| v < 100) && spread.iter().any(|&v| v >= 900));
}
