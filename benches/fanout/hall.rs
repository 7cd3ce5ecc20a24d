//! Scenario 6, "hall": a whole office's worth of clients on one board. The
//! coordinator here starts the board, spreads the clients over generator
//! processes (`generator.rs`, each with its own loopback source address and
//! at most [`Settings::per_generator`] sockets), posts through a socket of
//! its own, and turns the generators' reports into four measurements:
//!
//! - **join**: every client connects, at most `in_flight` handshakes at once;
//!   the time until all hold their `messages-available`, failed upgrades,
//!   handshake times, the servers' RSS per connection and CPU time, and the
//!   `presence` frames each client received meanwhile.
//! - **storm**: every client drops at once, without a close frame, and comes
//!   back within a second, resuming with `?since=` (and `&epoch=`), while
//!   the poster keeps posting: the time until all are back, failures, and
//!   every post received exactly once, in order.
//! - **one to all**: single posts, each awaited by every client.
//! - **sustained**: a post a second for [`Settings::seconds`], each checked
//!   at every client; clients the server cut off are counted.
//!
//! Nothing here fails on a time: a run fails when a client could not
//! connect, missed, repeated or reordered a post, or was cut off. The
//! targets the board aims at are printed beside the results, which, with
//! their tables, live in `hall_report.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use crate::client;
use crate::dialect::{self, Dialect, Event, Stamp};
use crate::generator::{self, Buckets, Command, Connects, Deliveries, Reasons, Report};
use crate::report::{micros, Latency};
use crate::servers::{self, Kind, Lanboard, Process};
use crate::wire::Socket;
use crate::Bed;

#[path = "hall_report.rs"]
mod results;
use results::{
    sources_label, Check, Join, Spread, Storm, Usage, TARGET_JOIN_S, TARGET_ONE_TO_ALL_P99_US,
    TARGET_PRESENCE_FRAMES,
};
pub use results::{tables, Hall};

/// How long lanboard may gather presence changes before it sends one frame
/// (up to 2 s as the crowd grows, see `run_presence` in src/board.rs), plus
/// a margin: the join's presence frames are counted until then.
const PRESENCE_SETTLE: Duration = Duration::from_secs(3);
/// Posts per second while the storm goes on, from before the drop until
/// after the last client is back.
pub const STORM_POSTS_PER_S: f64 = 20.0;
const STORM_LEAD: Duration = Duration::from_secs(1);
const STORM_TRAIL: Duration = Duration::from_secs(2);
/// How long the poster waits for its own post to come back.
const ECHO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long past a generator's own deadline its report may take.
const REPORT_MARGIN: Duration = Duration::from_secs(15);
/// How long a generator may take to exit after `Quit`.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The stamp's sender number of the poster, the only sender.
const POSTER: u32 = 0;
/// The first generator's source address is 127.0.0.2, the next .3, ...;
/// 127.0.0.1 is the poster's.
pub const FIRST_SOURCE: u8 = 2;
const MOST_GENERATORS: u32 = 253;

/// Scenario 6's knobs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Clients on a board served by one process (`FANOUT_HALL_N`).
    pub single: u32,
    /// Clients in all on a board of several nodes (`FANOUT_HALL_NODES_N`);
    /// `None`: `single` per node.
    pub cluster: Option<u32>,
    /// Nodes of the Redis board measured by default (`FANOUT_HALL_NODES`).
    pub nodes: u8,
    /// Clients on the original board (`FANOUT_HALL_ORIGINAL_N`).
    pub original: u32,
    /// Handshakes in flight, all generators together (`FANOUT_HALL_IN_FLIGHT`).
    pub in_flight: u32,
    /// Seconds of the sustained phase (`FANOUT_HALL_SECONDS`).
    pub seconds: u32,
    /// Most sockets one generator holds (`FANOUT_HALL_PER_GENERATOR`), well
    /// under the 20,000 open files a process may have here.
    pub per_generator: u32,
    /// Generator processes (`FANOUT_HALL_GENERATORS`); `None`: as many as
    /// `per_generator` needs, and at least two.
    pub generators: Option<u32>,
    /// Posts of the one-to-all phase, and the pause after each.
    pub one_to_all: u32,
    pub pause: Duration,
    /// The storm's clients come back at random moments within this.
    pub storm_spread: Duration,
    /// Longest wait for one phase.
    pub timeout: Duration,
}

impl Settings {
    /// The knobs from the environment; `quick` shrinks every default.
    pub fn from_env(quick: bool, timeout: Duration) -> Result<Settings, String> {
        let number = |name: &str, default: u32| -> Result<u32, String> {
            match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => {
                    (v.trim().parse::<u32>()).map_err(|_| format!("{name}={v} is not a number"))
                }
            }
        };
        let optional = |name: &str| -> Result<Option<u32>, String> {
            let set = std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
            set.then(|| number(name, 0)).transpose()
        };
        let nodes = number("FANOUT_HALL_NODES", 5)?;
        if !(1..=u32::from(servers::MAX_NODES)).contains(&nodes) {
            return Err(format!(
                "FANOUT_HALL_NODES={nodes} is not 1 to {}",
                servers::MAX_NODES
            ));
        }
        Ok(Settings {
            single: number("FANOUT_HALL_N", if quick { 1_000 } else { 19_000 })?.max(1),
            cluster: optional("FANOUT_HALL_NODES_N")?.map(|n| n.max(1)),
            nodes: nodes as u8,
            original: number("FANOUT_HALL_ORIGINAL_N", if quick { 500 } else { 5_000 })?.max(1),
            in_flight: number("FANOUT_HALL_IN_FLIGHT", 256)?.max(1),
            seconds: number("FANOUT_HALL_SECONDS", if quick { 5 } else { 30 })?.max(1),
            per_generator: number("FANOUT_HALL_PER_GENERATOR", 9_500)?.max(1),
            generators: optional("FANOUT_HALL_GENERATORS")?.map(|g| g.max(1)),
            one_to_all: if quick { 3 } else { 10 },
            pause: Duration::from_secs(1),
            storm_spread: Duration::from_secs(1),
            timeout,
        })
    }

    /// The clients scenario 6 opens on a board of `kind`.
    pub fn clients(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Original => self.original,
            _ if kind.nodes() > 1 => {
                (self.cluster).unwrap_or_else(|| self.single.saturating_mul(kind.nodes() as u32))
            }
            _ => self.single,
        }
    }

    /// How many generator processes share `clients`.
    fn generators_for(&self, clients: u32) -> Result<u32, String> {
        let needed = clients.div_ceil(self.per_generator);
        let generators = self.generators.unwrap_or(needed.max(2)).min(clients);
        if generators > MOST_GENERATORS {
            return Err(format!(
                "{clients} clients need {generators} generators, more than the \
                 {MOST_GENERATORS} loopback source addresses 127.0.0.2 to 127.0.0.254"
            ));
        }
        if generators < needed {
            return Err(format!(
                "{generators} generator(s) for {clients} clients would hold more than \
                 FANOUT_HALL_PER_GENERATOR={} sockets each",
                self.per_generator
            ));
        }
        Ok(generators)
    }

    pub fn json(&self) -> Value {
        json!({
            "clients_one_node": self.single,
            "clients_several_nodes": self.cluster.map_or(json!("per node as one node"), |n| json!(n)),
            "clients_original": self.original,
            "handshakes_in_flight": self.in_flight,
            "sustained_s": self.seconds,
            "sockets_per_generator_at_most": self.per_generator,
            "one_to_all_posts": self.one_to_all,
            "storm_spread_s": self.storm_spread.as_secs_f64(),
            "storm_posts_per_s": STORM_POSTS_PER_S,
            "targets": {
                "join_s": TARGET_JOIN_S,
                "failed_upgrades": 0,
                "presence_frames_per_client": TARGET_PRESENCE_FRAMES,
                "one_to_all_p99_ms": TARGET_ONE_TO_ALL_P99_US / 1000,
            },
        })
    }
}

/// Runs scenario 6 on every board of `kinds`, one after the other, with the
/// generators pinned to `cores`.
pub async fn run(bed: &Bed<'_>, kinds: &[Kind], settings: &Settings, cores: &[usize]) -> Vec<Hall> {
    let mut halls = Vec::new();
    for &kind in kinds {
        let clients = settings.clients(kind);
        eprint!("scenario 6 hall on {}, {clients} clients: ", kind.label());
        // Progress text only; a failed flush loses nothing.
        let _ = std::io::Write::flush(&mut std::io::stderr());
        let hall = measure(bed, kind, clients, settings, cores).await;
        eprintln!("{}", hall.line());
        halls.push(hall);
    }
    halls
}

/// One run of scenario 6 on a fresh board of `kind`.
pub async fn measure(
    bed: &Bed<'_>,
    kind: Kind,
    clients: u32,
    settings: &Settings,
    cores: &[usize],
) -> Hall {
    let generators = match settings.generators_for(clients) {
        Ok(generators) => generators,
        Err(why) => {
            let mut hall = Hall::new(kind, clients, 0);
            hall.failure = Some(why);
            return hall;
        }
    };
    let mut hall = Hall::new(kind, clients, generators);
    let outcome = async {
        let dir = bed.folder()?;
        let mut deployment = bed.deploy(kind, dir.path())?;
        let processes = deployment.processes();
        let mut fleet = Fleet::spawn(clients, generators, cores)?;
        let run = Run {
            addrs: deployment.addrs(),
            processes: &processes,
            server_core: bed.core,
            dialect: crate::dialect(kind),
            settings,
            totals: Totals::default(),
        };
        let phases = run.phases(&mut fleet, &mut hall).await;
        fleet.quit().await;
        hall.notes = (processes.iter())
            .flat_map(|p| (p.notable().into_iter()).map(|line| format!("{}: {line}", p.role)))
            .collect();
        // A server that died explains whatever the clients saw.
        let phases = match deployment.exits().into_iter().next() {
            Some(exit) => Err(phases
                .err()
                .map_or(exit.clone(), |why| format!("{exit}; {why}"))),
            None => phases,
        };
        phases.map_err(|why| crate::with_log(why, &deployment.log_tail()))
    };
    if let Err(why) = outcome.await {
        hall.failure = Some(why);
    }
    hall
}

/// Totals the generators reported last, so each phase gets its own share.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    missed: u64,
    duplicates: u64,
    cut: u32,
    errors: u32,
}

/// The generators' merged answer to an `Await`.
struct Merged {
    live: u32,
    short: u64,
    deliveries: u64,
    latency: Histogram<u64>,
    totals: Totals,
    cut_reasons: Reasons,
    error_reasons: Reasons,
}

impl Merged {
    fn of(reports: &[Deliveries]) -> Merged {
        let mut merged = Merged {
            live: 0,
            short: 0,
            deliveries: 0,
            latency: histogram(),
            totals: Totals::default(),
            cut_reasons: Reasons::new(),
            error_reasons: Reasons::new(),
        };
        for d in reports {
            merged.live += d.live;
            merged.short += d.short;
            merged.deliveries += d.deliveries;
            record(&mut merged.latency, &d.latency_us);
            merged.totals.missed += d.missed;
            merged.totals.duplicates += d.duplicates;
            merged.totals.cut += d.cut;
            merged.totals.errors += d.errors;
            merge_reasons(&mut merged.cut_reasons, &d.cut_reasons);
            merge_reasons(&mut merged.error_reasons, &d.error_reasons);
        }
        merged
    }

    /// What changed since `before`, with what is still lacking.
    fn check(&self, before: Totals) -> Check {
        Check {
            missed: self.totals.missed - before.missed,
            duplicates: self.totals.duplicates - before.duplicates,
            short: self.short,
            cut: self.totals.cut - before.cut,
            errors: self.totals.errors - before.errors,
        }
    }

    /// Why clients were cut off or got errors, for a problem line.
    fn why(&self) -> String {
        let mut why = String::new();
        if !self.cut_reasons.is_empty() {
            why += &format!("; cut off: {}", reasons_text(&self.cut_reasons));
        }
        if !self.error_reasons.is_empty() {
            why += &format!("; errors: {}", reasons_text(&self.error_reasons));
        }
        why
    }
}

/// One board's phases and what they share.
struct Run<'a> {
    addrs: Vec<SocketAddr>,
    processes: &'a [Process],
    /// The core the servers are pinned to, if they are.
    server_core: Option<usize>,
    dialect: Dialect,
    settings: &'a Settings,
    totals: Totals,
}

/// CPU times at one moment, to take a phase's [`Usage`] from.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    server: Option<f64>,
    generators: Option<f64>,
    /// This process: the coordinator runs on the generators' cores.
    coordinator: Option<f64>,
    /// Busy time of the server core and of the generators' cores, whoever
    /// used them.
    server_core: Option<f64>,
    generator_cores: Option<f64>,
}

impl Run<'_> {
    async fn phases(mut self, fleet: &mut Fleet, hall: &mut Hall) -> Result<(), String> {
        let join = self.join(fleet).await?;
        if join.failed > 0 {
            hall.problems.push(format!(
                "join: {} of {} clients could not connect: {}",
                join.failed,
                hall.clients,
                reasons_text(&join.reasons)
            ));
        }
        hall.remarks.extend(join.usage.remarks("join"));
        let connected = join.connected;
        hall.join = Some(join);
        if connected == 0 {
            return Err("no client could connect".into());
        }

        let poster = Poster::connect(self.addrs[0], self.dialect).await?;
        let storm = self.storm(fleet, &poster).await?;
        if storm.failed > 0 {
            hall.problems.push(format!(
                "storm: {} of {} clients did not come back: {}",
                storm.failed,
                storm.clients,
                reasons_text(&storm.reasons)
            ));
        }
        hall.note_phase("storm", &storm.check, "", &storm.usage);
        hall.storm = Some(storm);

        let (one_to_all, why) = self.one_to_all(fleet, &poster).await?;
        hall.note_phase("one to all", &one_to_all.check, &why, &one_to_all.usage);
        // The generators read a post's deliveries as fast as their cores
        // allow: when that takes about as long as the slowest delivery,
        // the tail measures the generators as much as the board.
        let reading_ms =
            (one_to_all.per_post_ms(one_to_all.usage.generator_cpu_s)).map(|ms| ms / fleet.cores());
        if let Some(ms) = reading_ms.filter(|&ms| ms * 1000.0 > 0.5 * one_to_all.latency.p99 as f64)
        {
            hall.remarks.push(format!(
                "one to all: reading a post's {} deliveries took the generators {ms:.0} ms of \
                 their core(s), against a p99 of {}: the tail is partly theirs",
                one_to_all.clients,
                micros(one_to_all.latency.p99)
            ));
        }
        hall.one_to_all = Some(one_to_all);

        let (sustained, why) = self.sustained(fleet, &poster).await?;
        hall.note_phase("sustained", &sustained.check, &why, &sustained.usage);
        hall.sustained = Some(sustained);
        Ok(())
    }

    fn server_rss(&self) -> Option<u64> {
        self.processes.iter().map(Process::rss_bytes).sum()
    }

    fn server_cpu(&self) -> Option<f64> {
        self.processes.iter().map(Process::cpu_seconds).sum()
    }

    fn snapshot(&self, fleet: &Fleet) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            server: self.server_cpu(),
            generators: fleet.cpu_seconds(),
            coordinator: servers::cpu_seconds(std::process::id()),
            server_core: (self.server_core).and_then(|core| servers::busy_seconds(&[core])),
            generator_cores: (!fleet.cores.is_empty())
                .then(|| servers::busy_seconds(&fleet.cores))
                .flatten(),
        }
    }

    /// The CPU taken since `then`, and how much of our cores other
    /// programs took meanwhile (their busy time less our processes').
    fn usage(&self, then: Snapshot, fleet: &Fleet) -> Usage {
        let now = self.snapshot(fleet);
        let wall_s = now.at.duration_since(then.at).as_secs_f64();
        let server_cpu_s = delta(then.server, now.server);
        let generator_cpu_s = delta(then.generators, now.generators);
        let coordinator = delta(then.coordinator, now.coordinator);
        let share = |busy: Option<f64>, ours: Option<f64>, cores: usize| {
            Some(((busy? - ours?) / wall_s / cores as f64).max(0.0))
        };
        let ours_on_generator_cores = generator_cpu_s.zip(coordinator).map(|(g, c)| g + c);
        Usage {
            wall_s,
            server_cpu_s,
            generator_cpu_s,
            generator_share: generator_cpu_s.map(|c| c / wall_s / fleet.cores()),
            others_server_core: share(delta(then.server_core, now.server_core), server_cpu_s, 1),
            others_generator_cores: share(
                delta(then.generator_cores, now.generator_cores),
                ours_on_generator_cores,
                fleet.cores.len(),
            ),
        }
    }

    async fn join(&mut self, fleet: &mut Fleet) -> Result<Join, String> {
        let rss_before = self.server_rss();
        let start = self.snapshot(fleet);
        let per_generator = self.settings.in_flight.div_ceil(fleet.len() as u32);
        let within_ms = self.settings.timeout.as_millis() as u64;
        let dialect = self.dialect;
        let nodes = self.addrs.clone();
        let reports = fleet
            .ask(
                |g| Command::Join {
                    dialect,
                    nodes: nodes.clone(),
                    source: g.source,
                    first: g.first,
                    count: g.count,
                    in_flight: per_generator,
                    within_ms,
                },
                self.settings.timeout,
            )
            .await?;
        let connects = reports
            .into_iter()
            .map(|report| match report {
                Report::Joined(connects) => Ok(connects),
                other => Err(format!("a generator answered the join with {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let usage = self.usage(start, fleet);
        tokio::time::sleep(PRESENCE_SETTLE).await;
        let server_cpu_s = delta(start.server, self.server_cpu());
        let rss_after = self.server_rss();
        let mut presence: BTreeMap<u32, u64> = BTreeMap::new();
        for report in fleet
            .ask(|_| Command::Presence, self.settings.timeout)
            .await?
        {
            let Report::Presence { counts } = report else {
                return Err(format!("a generator answered presence with {report:?}"));
            };
            for (frames, clients) in counts {
                *presence.entry(frames).or_default() += u64::from(clients);
            }
        }
        let round = Round::of(&connects);
        Ok(Join {
            all_in_s: round.span_s,
            connected: round.connected,
            failed: round.failed,
            reasons: round.reasons,
            handshake: Latency::of(&round.handshake),
            rss_before,
            rss_after,
            presence_max: presence.keys().next_back().copied().unwrap_or(0),
            presence_median: median_of_counts(&presence),
            server_cpu_s,
            usage,
            generator_rss: connects.iter().map(|c| c.rss_bytes).sum(),
        })
    }

    async fn storm(&mut self, fleet: &mut Fleet, poster: &Poster) -> Result<Storm, String> {
        let (stop, stopped) = watch::channel(false);
        let posting = tokio::spawn(keep_posting(poster.clone(), STORM_POSTS_PER_S, stopped));
        tokio::time::sleep(STORM_LEAD).await;
        let start = self.snapshot(fleet);
        let spread_ms = self.settings.storm_spread.as_millis() as u64;
        let within_ms = self.settings.timeout.as_millis() as u64;
        let reports = fleet
            .ask(
                |_| Command::Storm {
                    spread_ms,
                    within_ms,
                },
                self.settings.timeout,
            )
            .await;
        let usage = self.usage(start, fleet);
        if reports.is_ok() {
            tokio::time::sleep(STORM_TRAIL).await;
        }
        stop.send_replace(true);
        let posted = posting
            .await
            .map_err(|e| format!("the storm's poster: {e}"))?;
        let connects = reports?
            .into_iter()
            .map(|report| match report {
                Report::Stormed(connects) => Ok(connects),
                other => Err(format!("a generator answered the storm with {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(why) = posted.failure {
            return Err(format!("posting through the storm: {why}"));
        }
        let last = posted.last.ok_or("no post went through during the storm")?;
        let merged = self.await_post(fleet, last).await?;
        let check = merged.check(self.totals);
        self.totals = merged.totals;
        let round = Round::of(&connects);
        Ok(Storm {
            clients: connects.iter().map(|c| c.clients).sum(),
            all_back_s: round.span_s,
            back: round.connected,
            failed: round.failed,
            reasons: round.reasons,
            handshake: Latency::of(&round.handshake),
            posts: posted.count,
            delivery: Latency::of(&merged.latency),
            check,
            usage,
        })
    }

    async fn one_to_all(
        &mut self,
        fleet: &mut Fleet,
        poster: &Poster,
    ) -> Result<(Spread, String), String> {
        let start = self.snapshot(fleet);
        let before = self.totals;
        let mut latency = histogram();
        let (mut deliveries, mut last) = (0, None);
        for i in 0..self.settings.one_to_all {
            if i > 0 {
                tokio::time::sleep(self.settings.pause).await;
            }
            let seq = poster.post().await?;
            let merged = self.await_post(fleet, seq).await?;
            deliveries += merged.deliveries;
            // Both histograms grow to fit.
            let _ = latency.add(&merged.latency);
            self.totals = merged.totals;
            last = Some(merged);
        }
        let last = last.ok_or("the one-to-all phase made no post")?;
        Ok((
            Spread {
                posts: self.settings.one_to_all,
                clients: last.live,
                deliveries,
                latency: Latency::of(&latency),
                check: last.check(before),
                usage: self.usage(start, fleet),
                last_post_s: None,
            },
            last.why(),
        ))
    }

    async fn sustained(
        &mut self,
        fleet: &mut Fleet,
        poster: &Poster,
    ) -> Result<(Spread, String), String> {
        let start = self.snapshot(fleet);
        let started = tokio::time::Instant::now();
        let (mut last, mut last_sent) = (0, Instant::now());
        for second in 0..self.settings.seconds {
            tokio::time::sleep_until(started + Duration::from_secs(u64::from(second))).await;
            last_sent = Instant::now();
            last = poster.post().await?;
        }
        let merged = self.await_post(fleet, last).await?;
        let last_post_s = last_sent.elapsed().as_secs_f64();
        let check = merged.check(self.totals);
        self.totals = merged.totals;
        Ok((
            Spread {
                posts: self.settings.seconds,
                clients: merged.live,
                deliveries: merged.deliveries,
                latency: Latency::of(&merged.latency),
                check,
                usage: self.usage(start, fleet),
                last_post_s: Some(last_post_s),
            },
            merged.why(),
        ))
    }

    /// Waits until every connected client holds post `seq` (or the
    /// timeout), and merges what the generators saw since the last time.
    async fn await_post(&self, fleet: &mut Fleet, seq: u32) -> Result<Merged, String> {
        let within_ms = self.settings.timeout.as_millis() as u64;
        let reports = fleet
            .ask(|_| Command::Await { seq, within_ms }, self.settings.timeout)
            .await?;
        let deliveries = reports
            .into_iter()
            .map(|report| match report {
                Report::Reached(deliveries) => Ok(deliveries),
                other => Err(format!("a generator answered await with {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Merged::of(&deliveries))
    }
}

/// A round of connections, merged over the generators.
struct Round {
    /// From the earliest start to the latest arrival.
    span_s: f64,
    connected: u32,
    failed: u32,
    reasons: Reasons,
    handshake: Histogram<u64>,
}

impl Round {
    fn of(connects: &[Connects]) -> Round {
        let started = connects.iter().map(|c| c.started_ns).min().unwrap_or(0);
        let done = connects.iter().map(|c| c.done_ns).max().unwrap_or(0);
        let mut round = Round {
            span_s: done.saturating_sub(started) as f64 / 1e9,
            connected: 0,
            failed: 0,
            reasons: Reasons::new(),
            handshake: histogram(),
        };
        for c in connects {
            round.connected += c.connected;
            round.failed += c.failed;
            merge_reasons(&mut round.reasons, &c.reasons);
            record(&mut round.handshake, &c.handshake_us);
        }
        round
    }
}

fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

fn histogram() -> Histogram<u64> {
    // Three significant digits from 1 µs up, growing as needed.
    Histogram::new(3).expect("3 significant digits are valid")
}

fn record(histogram: &mut Histogram<u64>, buckets: &Buckets) {
    for &(value, count) in buckets {
        // The histogram grows to fit; recording fails only on a count
        // overflowing u64.
        let _ = histogram.record_n(value.max(1), count);
    }
}

fn merge_reasons(into: &mut Reasons, from: &Reasons) {
    for (why, count) in from {
        generator::add_reason(into, why, *count);
    }
}

fn reasons_text(reasons: &Reasons) -> String {
    let parts: Vec<String> = (reasons.iter())
        .map(|(why, count)| format!("{count} x {why}"))
        .collect();
    parts.join("; ")
}

/// The median of a distribution given as value -> how many.
fn median_of_counts(counts: &BTreeMap<u32, u64>) -> u32 {
    let total: u64 = counts.values().sum();
    let mut seen = 0;
    for (&value, &count) in counts {
        seen += count;
        if 2 * seen >= total {
            return value;
        }
    }
    0
}

/// The generator processes of one run.
struct Fleet {
    generators: Vec<Generator>,
    /// The cores they are pinned to (empty: not pinned).
    cores: Vec<usize>,
}

/// One generator process and its share of the clients.
struct Generator {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    reports: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pid: u32,
    source: IpAddr,
    first: u32,
    count: u32,
}

impl Fleet {
    /// Starts `generators` processes for `clients` clients, pinned to `cores`.
    fn spawn(clients: u32, generators: u32, cores: &[usize]) -> Result<Fleet, String> {
        let exe = std::env::current_exe().map_err(|e| format!("the bench's own binary: {e}"))?;
        let mut fleet = Fleet {
            generators: Vec::new(),
            cores: cores.to_vec(),
        };
        let mut first = 0;
        for g in 0..generators {
            let count = clients / generators + u32::from(g < clients % generators);
            let mut command = std::process::Command::new(&exe);
            command
                .arg(generator::ARG)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            servers::confine_to(&mut command, cores);
            let mut command = tokio::process::Command::from(command);
            command.kill_on_drop(true);
            let mut child = command
                .spawn()
                .map_err(|e| format!("starting generator {}: {e}", g + 1))?;
            let (Some(stdin), Some(stdout), Some(pid)) =
                (child.stdin.take(), child.stdout.take(), child.id())
            else {
                return Err(format!("generator {} has no pipes", g + 1));
            };
            fleet.generators.push(Generator {
                child,
                stdin,
                reports: BufReader::new(stdout).lines(),
                pid,
                source: IpAddr::V4(Ipv4Addr::new(127, 0, 0, FIRST_SOURCE + g as u8)),
                first,
                count,
            });
            first += count;
        }
        Ok(fleet)
    }

    fn len(&self) -> usize {
        self.generators.len()
    }

    /// The cores the generators may use: their pinned cores, or, unpinned,
    /// as many as they are (at most the machine's).
    fn cores(&self) -> f64 {
        if self.cores.is_empty() {
            let machine = std::thread::available_parallelism().map_or(1, usize::from);
            self.generators.len().min(machine).max(1) as f64
        } else {
            self.cores.len() as f64
        }
    }

    fn cpu_seconds(&self) -> Option<f64> {
        (self.generators.iter())
            .map(|g| servers::cpu_seconds(g.pid))
            .sum()
    }

    /// Sends each generator its command, then collects every report, each
    /// within `within` and a margin.
    async fn ask(
        &mut self,
        command: impl Fn(&Generator) -> Command,
        within: Duration,
    ) -> Result<Vec<Report>, String> {
        for g in &mut self.generators {
            let mut line = serde_json::to_string(&command(g)).map_err(|e| e.to_string())?;
            line.push('\n');
            let sent = async {
                g.stdin.write_all(line.as_bytes()).await?;
                g.stdin.flush().await
            };
            sent.await
                .map_err(|e| format!("the generator on {}: {e}", g.source))?;
        }
        let deadline = tokio::time::Instant::now() + within + REPORT_MARGIN;
        let mut reports = Vec::with_capacity(self.generators.len());
        for g in &mut self.generators {
            let line = match tokio::time::timeout_at(deadline, g.reports.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = g.child.try_wait().ok().flatten();
                    return Err(format!(
                        "the generator on {} stopped answering (exit: {status:?})",
                        g.source
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "the generator on {} did not report within {:?}",
                        g.source,
                        within + REPORT_MARGIN
                    ))
                }
            };
            match serde_json::from_str::<Report>(&line) {
                Ok(Report::Refused { why }) => {
                    return Err(format!("the generator on {}: {why}", g.source))
                }
                Ok(report) => reports.push(report),
                Err(e) => return Err(format!("the generator on {} wrote {line:?}: {e}", g.source)),
            }
        }
        Ok(reports)
    }

    /// Tells every generator to finish and waits for them; the ones that
    /// do not exit in time are killed.
    async fn quit(mut self) {
        // Best-effort: the measurement is complete, and a generator that
        // cannot be told is killed below.
        let _ = self.ask(|_| Command::Quit, QUIT_TIMEOUT).await;
        for g in &mut self.generators {
            if tokio::time::timeout(QUIT_TIMEOUT, g.child.wait())
                .await
                .is_err()
            {
                // It may have exited just now; then there is nothing to kill.
                let _ = g.child.kill().await;
            }
        }
    }
}

/// The one client that posts: a cheap handle to a task that owns the
/// socket, answers pings between posts, and sends one post at a time,
/// waiting for it to come back, so posts are stored in the order of their
/// sequence numbers.
#[derive(Clone)]
struct Poster {
    requests: mpsc::Sender<oneshot::Sender<Result<u32, String>>>,
}

impl Poster {
    async fn connect(addr: SocketAddr, dialect: Dialect) -> Result<Poster, String> {
        let (socket, _) = tokio::time::timeout(ECHO_TIMEOUT, client::join(addr, dialect, 7))
            .await
            .map_err(|_| format!("the poster got no history within {ECHO_TIMEOUT:?}"))?
            .map_err(|why| format!("the poster: {why}"))?;
        let (requests, incoming) = mpsc::channel(1);
        tokio::spawn(post_loop(socket, dialect, incoming));
        Ok(Poster { requests })
    }

    /// Posts the next message and returns its sequence number once it came
    /// back to the poster.
    async fn post(&self) -> Result<u32, String> {
        let (reply, answer) = oneshot::channel();
        let gone = || "the poster's task ended".to_owned();
        self.requests.send(reply).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

type Request = oneshot::Sender<Result<u32, String>>;

async fn post_loop(mut socket: Socket, dialect: Dialect, mut requests: mpsc::Receiver<Request>) {
    let mut next = 0u32;
    let mut waiting: Option<(u32, Request, tokio::time::Instant)> = None;
    let (mut text, mut payload) = (Vec::new(), Vec::new());
    let broken = 'run: loop {
        loop {
            let event = match socket.next_message() {
                Ok(Some(bytes)) => dialect.classify(bytes),
                Ok(None) => break,
                Err(e) => break 'run e.to_string(),
            };
            match event {
                Event::Added { stamp, .. }
                    if stamp.sender == POSTER
                        && waiting.as_ref().is_some_and(|(seq, ..)| *seq == stamp.seq) =>
                {
                    if let Some((seq, reply, _)) = waiting.take() {
                        // The coordinator may have stopped waiting.
                        let _ = reply.send(Ok(seq));
                    }
                }
                Event::Ping => socket.queue_text(dialect.pong()),
                Event::Refused(why) => {
                    if let Some((_, reply, _)) = waiting.take() {
                        // As above.
                        let _ = reply.send(Err(format!("the post was refused: {why}")));
                    }
                }
                _ => {}
            }
        }
        if socket.has_output() {
            if let Err(e) = socket.flush().await {
                break 'run format!("sending: {e}");
            }
        }
        let deadline = waiting.as_ref().map_or_else(
            || tokio::time::Instant::now() + ECHO_TIMEOUT,
            |(_, _, deadline)| *deadline,
        );
        tokio::select! {
            request = requests.recv(), if waiting.is_none() => {
                let Some(reply) = request else { return };
                let stamp = Stamp { sender: POSTER, seq: next, sent_ns: generator::unix_ns() };
                text.clear();
                dialect::write_text(stamp, &mut text);
                dialect.add_message(&text, b"", &mut payload);
                socket.queue_text(&payload);
                waiting = Some((next, reply, tokio::time::Instant::now() + ECHO_TIMEOUT));
                next += 1;
            }
            filled = socket.fill() => match filled {
                Ok(0) => break 'run "the server ended the poster's connection".to_owned(),
                Ok(_) => {}
                Err(e) => break 'run e.to_string(),
            },
            () = tokio::time::sleep_until(deadline), if waiting.is_some() => {
                break 'run format!("a post did not come back within {ECHO_TIMEOUT:?}");
            }
        }
    };
    // Every request from now on gets the reason.
    if let Some((_, reply, _)) = waiting.take() {
        // The coordinator may have stopped waiting.
        let _ = reply.send(Err(broken.clone()));
    }
    while let Some(reply) = requests.recv().await {
        // As above.
        let _ = reply.send(Err(broken.clone()));
    }
}

/// What [`keep_posting`] did.
struct Posted {
    count: u32,
    last: Option<u32>,
    failure: Option<String>,
}

/// Posts `per_second` until `stop` turns true; a post that is slow to come
/// back delays the next, rather than piling up.
async fn keep_posting(poster: Poster, per_second: f64, mut stop: watch::Receiver<bool>) -> Posted {
    let mut posted = Posted {
        count: 0,
        last: None,
        failure: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return posted,
            _ = tick.tick() => match poster.post().await {
                Ok(seq) => {
                    posted.count += 1;
                    posted.last = Some(seq);
                }
                Err(why) => {
                    posted.failure = Some(why);
                    return posted;
                }
            },
        }
    }
}

/// The live self-check: a few hundred clients over two generator processes
/// and two source addresses against a real lanboard, through every phase,
/// shortened; asserts only that nothing failed, was missed or repeated.
/// Without the lanboard binary it fails under `CI=true` and says SKIPPED
/// otherwise; `FANOUT_HALL_CHECK=0` skips it.
pub fn check() {
    if std::env::var("FANOUT_HALL_CHECK").is_ok_and(|v| v.trim() == "0") {
        println!("fanout: SKIPPED the scenario 6 self-check (FANOUT_HALL_CHECK=0)");
        return;
    }
    let lanboard = Lanboard::new();
    if !lanboard.binary.is_file() {
        let why = format!(
            "the scenario 6 self-check needs lanboard at {} (cargo builds it for `cargo test --bench fanout`; \
             FANOUT_LANBOARD names another)",
            lanboard.binary.display()
        );
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "{why}");
        println!("fanout: SKIPPED {why}");
        return;
    }
    servers::raise_open_files();
    let scratch = tempfile::tempdir().expect("a scratch folder for the self-check");
    let bed = Bed {
        lanboard: &lanboard,
        original: None,
        scratch: scratch.path(),
        core: None,
        timeout: Duration::from_secs(60),
        connect_concurrency: 100,
    };
    let settings = Settings {
        single: 300,
        cluster: None,
        nodes: 1,
        original: 300,
        in_flight: 64,
        seconds: 3,
        per_generator: 9_500,
        generators: Some(2),
        one_to_all: 3,
        pause: Duration::from_millis(200),
        storm_spread: Duration::from_secs(1),
        timeout: Duration::from_secs(60),
    };
    // The runtime of the coordinator alone: the generators are processes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the self-check");
    let started = Instant::now();
    let hall = runtime.block_on(measure(
        &bed,
        Kind::Lanboard,
        settings.single,
        &settings,
        &[],
    ));
    assert!(
        !hall.failed(),
        "the scenario 6 self-check failed against {}: {}",
        lanboard.binary.display(),
        hall.line()
    );
    let (storm, sustained) = (hall.storm.as_ref(), hall.sustained.as_ref());
    assert!(
        storm.is_some_and(|s| s.back == s.clients && s.clients == 300 && s.posts > 0),
        "every client came back from the storm: {}",
        hall.line()
    );
    assert!(
        sustained.is_some_and(|s| s.deliveries == 300 * u64::from(settings.seconds)),
        "every client got every sustained post: {}",
        hall.line()
    );
    println!(
        "fanout: scenario 6 self-check passed in {:.1}s: 300 clients over 2 generators \
         (127.0.0.2, 127.0.0.3) joined, stormed, got every post once and in order",
        started.elapsed().as_secs_f64()
    );
}

/// Checks the pure parts of this module; panics on the first failure.
pub fn self_check() {
    let settings = Settings {
        single: 19_000,
        cluster: None,
        nodes: 5,
        original: 5_000,
        in_flight: 256,
        seconds: 30,
        per_generator: 9_500,
        generators: None,
        one_to_all: 10,
        pause: Duration::from_secs(1),
        storm_spread: Duration::from_secs(1),
        timeout: Duration::from_secs(180),
    };
    assert_eq!(settings.clients(Kind::Lanboard), 19_000);
    assert_eq!(settings.clients(Kind::Redis(5)), 95_000);
    assert_eq!(settings.clients(Kind::Redis(1)), 19_000);
    assert_eq!(settings.clients(Kind::Original), 5_000);
    assert_eq!(settings.generators_for(19_000), Ok(2));
    assert_eq!(settings.generators_for(19_001), Ok(3));
    assert_eq!(settings.generators_for(95_000), Ok(10));
    assert_eq!(settings.generators_for(300), Ok(2));
    assert_eq!(settings.generators_for(1), Ok(1));
    let forced = Settings {
        generators: Some(1),
        ..settings.clone()
    };
    assert!(forced.generators_for(19_000).is_err());
    let huge = Settings {
        per_generator: 10,
        ..settings
    };
    assert!(huge.generators_for(19_000).is_err());
    assert_eq!(sources_label(2), "127.0.0.2 to 127.0.0.3");
    assert_eq!(sources_label(1), "127.0.0.2");

    let counts: BTreeMap<u32, u64> = [(1, 10), (2, 5), (40, 1)].into_iter().collect();
    assert_eq!(median_of_counts(&counts), 1);
    let counts: BTreeMap<u32, u64> = [(1, 2), (3, 3)].into_iter().collect();
    assert_eq!(median_of_counts(&counts), 3);
    assert_eq!(median_of_counts(&BTreeMap::new()), 0);

    let connects = |started_ns, done_ns, connected, us: u64| Connects {
        clients: connected,
        started_ns,
        done_ns,
        connected,
        handshake_us: vec![(us, u64::from(connected))],
        ..Connects::default()
    };
    let round = Round::of(&[
        connects(1_000_000_000, 3_000_000_000, 10, 500),
        connects(1_500_000_000, 4_500_000_000, 30, 2_000),
    ]);
    assert_eq!(round.span_s, 3.5);
    assert_eq!(round.connected, 40);
    assert_eq!(round.handshake.len(), 40);
    assert_eq!(round.handshake.value_at_quantile(0.5), 2_000);

    let reached = |missed, cut| Deliveries {
        live: 5,
        short: 1,
        deliveries: 10,
        latency_us: vec![(100, 10)],
        missed,
        cut,
        ..Deliveries::default()
    };
    let merged = Merged::of(&[reached(2, 0), reached(1, 1)]);
    assert_eq!(
        (merged.live, merged.deliveries, merged.latency.len()),
        (10, 20, 20)
    );
    let check = merged.check(Totals {
        missed: 2,
        ..Totals::default()
    });
    assert_eq!((check.missed, check.short, check.cut), (1, 2, 1));
    assert!(!check.clean());
    assert!(Check::default().clean());
}
