//! Scenario 6's results: what each phase measured, the progress line, the
//! tables and the JSON document's part. `hall.rs` fills them in.

use serde_json::{json, Value};

use super::{Settings, FIRST_SOURCE, STORM_POSTS_PER_S};
use crate::generator::Reasons;
use crate::report::{self, micros, Latency};
use crate::servers::Kind;

/// What the board aims at; printed beside the results, never asserted.
pub const TARGET_JOIN_S: f64 = 5.0;
pub const TARGET_PRESENCE_FRAMES: u32 = 10;
pub const TARGET_ONE_TO_ALL_P99_US: u64 = 250_000;

/// A share of a core above which a remark says the phase was disturbed
/// (other programs) or its pace maybe set by the generators.
const BUSY: f64 = 0.9;
const DISTURBED: f64 = 0.2;

/// The CPU one phase took, and what other programs took of the same cores.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub wall_s: f64,
    /// All server processes together.
    pub server_cpu_s: Option<f64>,
    /// The generator processes together, and that over their cores' time
    /// (1.0: every generator core busy all along).
    pub generator_cpu_s: Option<f64>,
    pub generator_share: Option<f64>,
    /// The share of the server core, and of the generators' cores, that
    /// other programs and the kernel's own threads used meanwhile: on a
    /// shared machine, how far the times are the neighbours'. Known when
    /// the processes are pinned.
    pub others_server_core: Option<f64>,
    pub others_generator_cores: Option<f64>,
}

impl Usage {
    pub fn json(&self) -> Value {
        json!({
            "wall_s": self.wall_s,
            "server_cpu_s": self.server_cpu_s,
            "generator_cpu_s": self.generator_cpu_s,
            "generator_core_share": self.generator_share,
            "others_server_core_share": self.others_server_core,
            "others_generator_cores_share": self.others_generator_cores,
        })
    }

    /// "server/generators" shares of the cores other programs used.
    fn others(&self) -> String {
        let share = |s: Option<f64>| s.map_or("?".into(), |s| format!("{:.0}%", s * 100.0));
        format!(
            "{}/{}",
            share(self.others_server_core),
            share(self.others_generator_cores)
        )
    }

    /// What a reader of `phase`'s numbers should know about its CPU.
    pub fn remarks(&self, phase: &str) -> Vec<String> {
        let mut remarks = Vec::new();
        if let Some(share) = self.generator_share.filter(|&s| s > BUSY) {
            remarks.push(format!(
                "{phase}: the generators kept their core(s) {:.0}% busy; they may have set the pace",
                100.0 * share
            ));
        }
        let server = self.others_server_core.unwrap_or(0.0);
        let generators = self.others_generator_cores.unwrap_or(0.0);
        if server > DISTURBED || generators > DISTURBED {
            remarks.push(format!(
                "{phase}: other programs used {:.0}% of the server core and {:.0}% of the \
                 generators' meanwhile; its times are partly theirs",
                100.0 * server,
                100.0 * generators
            ));
        }
        remarks
    }
}

/// One board's run of scenario 6.
#[derive(Debug, Clone)]
pub struct Hall {
    pub kind: Kind,
    pub clients: u32,
    pub generators: u32,
    pub join: Option<Join>,
    pub storm: Option<Storm>,
    pub one_to_all: Option<Spread>,
    pub sustained: Option<Spread>,
    /// What went wrong in a phase that ran to its end: failed connections,
    /// missed or repeated posts, clients cut off. Any fails the run.
    pub problems: Vec<String>,
    /// Things worth knowing that fail nothing (a busy generator core).
    pub remarks: Vec<String>,
    /// Warnings and errors the servers logged (see `servers::notable`).
    pub notes: Vec<String>,
    /// Why the run stopped before its end.
    pub failure: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Join {
    /// From the first connect to the last `messages-available`.
    pub all_in_s: f64,
    pub connected: u32,
    pub failed: u32,
    pub reasons: Reasons,
    pub handshake: Latency,
    /// All server processes together, before the first client and after
    /// the last one's presence settled.
    pub rss_before: Option<u64>,
    pub rss_after: Option<u64>,
    /// `presence` frames per client until then.
    pub presence_max: u32,
    pub presence_median: u32,
    /// Server CPU time from the first connect until presence settled.
    pub server_cpu_s: Option<f64>,
    /// From the first connect until the last client was in.
    pub usage: Usage,
    /// The generators' resident memory with every client in.
    pub generator_rss: u64,
}

impl Join {
    pub fn rss_per_connection(&self) -> Option<f64> {
        let grown = self.rss_after? as f64 - self.rss_before? as f64;
        (self.connected > 0).then(|| grown / f64::from(self.connected))
    }
}

#[derive(Debug, Clone)]
pub struct Storm {
    /// Clients that dropped.
    pub clients: u32,
    /// From the drop to the last client's `messages-available`.
    pub all_back_s: f64,
    pub back: u32,
    pub failed: u32,
    pub reasons: Reasons,
    pub handshake: Latency,
    /// Posts made from before the drop until after the last was back.
    pub posts: u32,
    /// Latency of every post's delivery over the storm, catch-up included.
    pub delivery: Latency,
    pub check: Check,
    /// From the drop until the last client was back.
    pub usage: Usage,
}

/// The one-to-all and the sustained phases.
#[derive(Debug, Clone)]
pub struct Spread {
    pub posts: u32,
    /// Clients connected at the end.
    pub clients: u32,
    pub deliveries: u64,
    pub latency: Latency,
    pub check: Check,
    /// Over the whole phase, pauses included: per post, the generators'
    /// share tells whether they could read a post as fast as it came.
    pub usage: Usage,
    /// Sustained: from sending the last post until every client had it
    /// (to within 5 ms); far above the p99 when the board fell behind.
    pub last_post_s: Option<f64>,
}

impl Spread {
    /// CPU milliseconds per post.
    pub fn per_post_ms(&self, cpu_s: Option<f64>) -> Option<f64> {
        cpu_s.map(|c| 1000.0 * c / f64::from(self.posts.max(1)))
    }
}

/// The correctness of one phase's deliveries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Check {
    /// Posts clients skipped, and posts they received again or late.
    pub missed: u64,
    pub duplicates: u64,
    /// Posts up to the last that connected clients still lacked at the end.
    pub short: u64,
    /// Clients the server cut off during the phase.
    pub cut: u32,
    /// `error` events and resumes cut short.
    pub errors: u32,
}

impl Check {
    pub fn clean(&self) -> bool {
        self.missed == 0
            && self.duplicates == 0
            && self.short == 0
            && self.cut == 0
            && self.errors == 0
    }

    pub fn describe(&self) -> String {
        format!(
            "{} missed, {} duplicated or out of order, {} still lacking at the end, \
             {} client(s) cut off, {} error(s)",
            self.missed, self.duplicates, self.short, self.cut, self.errors
        )
    }

    fn json(&self) -> Value {
        json!({
            "missed": self.missed,
            "duplicated_or_out_of_order": self.duplicates,
            "lacking_at_end": self.short,
            "clients_cut_off": self.cut,
            "errors": self.errors,
        })
    }
}

impl Hall {
    /// Records what a phase's check found (`why`: what the phase itself
    /// adds to it) as a problem, and its usage's remarks.
    pub fn note_phase(&mut self, phase: &str, check: &Check, why: &str, usage: &Usage) {
        if !check.clean() {
            self.problems
                .push(format!("{phase}: {}{why}", check.describe()));
        }
        self.remarks.extend(usage.remarks(phase));
    }

    pub fn new(kind: Kind, clients: u32, generators: u32) -> Hall {
        Hall {
            kind,
            clients,
            generators,
            join: None,
            storm: None,
            one_to_all: None,
            sustained: None,
            problems: Vec::new(),
            remarks: Vec::new(),
            notes: Vec::new(),
            failure: None,
        }
    }

    /// True if and only if the run stopped early or found a problem.
    pub fn failed(&self) -> bool {
        self.failure.is_some() || !self.problems.is_empty()
    }

    /// Which targets the run met, by name; `None` where it did not get there.
    fn targets(&self) -> Vec<(&'static str, Option<bool>)> {
        let join = self.join.as_ref();
        vec![
            (
                "join <= 5 s",
                join.map(|j| j.all_in_s <= TARGET_JOIN_S && j.failed == 0),
            ),
            ("0 failed upgrades", join.map(|j| j.failed == 0)),
            (
                "presence <= 10 frames per client",
                join.map(|j| j.presence_max <= TARGET_PRESENCE_FRAMES),
            ),
            (
                "one-to-all p99 <= 250 ms",
                (self.one_to_all.as_ref()).map(|o| o.latency.p99 <= TARGET_ONE_TO_ALL_P99_US),
            ),
        ]
    }

    /// One progress line, printed as the run ends.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(j) = &self.join {
            parts.push(format!(
                "join {:.1}s ({} failed, presence max {})",
                j.all_in_s, j.failed, j.presence_max
            ));
        }
        if let Some(s) = &self.storm {
            parts.push(format!(
                "storm back in {:.1}s ({} failed, {} missed, {} duplicated)",
                s.all_back_s, s.failed, s.check.missed, s.check.duplicates
            ));
        }
        if let Some(o) = &self.one_to_all {
            parts.push(format!(
                "one-to-all p99 {} max {}",
                micros(o.latency.p99),
                micros(o.latency.max)
            ));
        }
        if let Some(s) = &self.sustained {
            parts.push(format!(
                "sustained p99 {} ({} cut off)",
                micros(s.latency.p99),
                s.check.cut
            ));
        }
        let mut line = parts.join(", ");
        if let Some(why) = &self.failure {
            line += &format!("\n  FAILED: {why}");
        }
        for problem in &self.problems {
            line += &format!("\n  PROBLEM: {problem}");
        }
        for remark in &self.remarks {
            line += &format!("\n  note: {remark}");
        }
        if let Some(first) = self.notes.first() {
            line += &format!(
                "\n  the servers logged {} warning(s) or error(s), first: {first}",
                self.notes.len()
            );
        }
        line
    }

    pub fn json(&self) -> Value {
        let latency = |l: &Latency| json!({"p50": l.p50, "p90": l.p90, "p99": l.p99, "p99.9": l.p999, "max": l.max});
        let reasons = |r: &Reasons| {
            (r.iter())
                .map(|(why, count)| json!({"reason": why, "clients": count}))
                .collect::<Vec<_>>()
        };
        json!({
            "scenario": 6,
            "name": "hall",
            "server": self.kind.label(),
            "clients": self.clients,
            "generators": self.generators,
            "source_addresses": sources_label(self.generators),
            "join": self.join.as_ref().map(|j| json!({
                "all_in_s": j.all_in_s,
                "connected": j.connected,
                "failed": j.failed,
                "failure_reasons": reasons(&j.reasons),
                "handshake_us": latency(&j.handshake),
                "server_rss_before_bytes": j.rss_before,
                "server_rss_after_bytes": j.rss_after,
                "server_rss_per_connection_bytes": j.rss_per_connection(),
                "presence_frames_per_client_max": j.presence_max,
                "presence_frames_per_client_median": j.presence_median,
                "server_cpu_s_whole_join": j.server_cpu_s,
                "cpu_until_all_in": j.usage.json(),
                "generator_rss_bytes": j.generator_rss,
            })),
            "storm": self.storm.as_ref().map(|s| json!({
                "clients": s.clients,
                "all_back_s": s.all_back_s,
                "back": s.back,
                "failed": s.failed,
                "failure_reasons": reasons(&s.reasons),
                "handshake_us": latency(&s.handshake),
                "posts": s.posts,
                "delivery_us": latency(&s.delivery),
                "check": s.check.json(),
                "cpu_until_all_back": s.usage.json(),
            })),
            "one_to_all": self.one_to_all.as_ref().map(|o| spread_json(o, latency)),
            "sustained": self.sustained.as_ref().map(|s| spread_json(s, latency)),
            "targets_met": self.targets().into_iter().map(|(name, met)| (name.to_owned(), json!(met)))
                .collect::<serde_json::Map<_, _>>(),
            "problems": self.problems,
            "remarks": self.remarks,
            "server_log_notes": self.notes,
            "ok": !self.failed(),
            "failure": self.failure,
        })
    }
}

fn spread_json(s: &Spread, latency: impl Fn(&Latency) -> Value) -> Value {
    json!({
        "posts": s.posts,
        "clients": s.clients,
        "deliveries": s.deliveries,
        "latency_us": latency(&s.latency),
        "check": s.check.json(),
        "cpu": s.usage.json(),
        "last_post_to_all_s": s.last_post_s,
        "server_cpu_ms_per_post": s.per_post_ms(s.usage.server_cpu_s),
        "generator_cpu_ms_per_post": s.per_post_ms(s.usage.generator_cpu_s),
    })
}

pub fn sources_label(generators: u32) -> String {
    let last = u32::from(FIRST_SOURCE) + generators.max(1) - 1;
    if generators <= 1 {
        format!("127.0.0.{FIRST_SOURCE}")
    } else {
        format!("127.0.0.{FIRST_SOURCE} to 127.0.0.{last}")
    }
}

/// The tables of scenario 6, and the targets each run met.
pub fn tables(halls: &[Hall], settings: &Settings) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let gen_share = |s: Option<f64>| s.map_or("?".into(), |s| format!("{:.0}%", s * 100.0));
    let cpu = |c: Option<f64>| c.map_or("?".into(), |c| format!("{c:.1}"));
    let ms = |m: Option<f64>| m.map_or("?".into(), |m| format!("{m:.0}ms"));
    line(format!(
        "Join (handshakes: connect to messages-available; RSS and CPU: all server processes; \
         gen core: the generators' share of their core(s); others: the share of the server core / \
         of the generators' that other programs used):\n{:<20} {:>7} {:>4} {:>8} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "server", "clients", "gens", "all in", "failed", "hs p50", "hs p99", "hs max",
        "RSS/conn", "presence", "srv CPU s", "gen core", "others"
    ));
    for h in halls {
        match &h.join {
            Some(j) => line(format!(
                "{:<20} {:>7} {:>4} {:>7.2}s {:>6} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>9}",
                h.kind.label(),
                h.clients,
                h.generators,
                j.all_in_s,
                j.failed,
                micros(j.handshake.p50),
                micros(j.handshake.p99),
                micros(j.handshake.max),
                j.rss_per_connection().map_or("?".into(), report::bytes),
                format!("{}/{}", j.presence_max, j.presence_median),
                cpu(j.server_cpu_s),
                gen_share(j.usage.generator_share),
                j.usage.others(),
            )),
            None => line(format!(
                "{:<20} {:>7} FAILED before the join ended",
                h.kind.label(),
                h.clients
            )),
        }
    }
    line("  (presence: the most frames one client received / the median)".into());
    line(format!(
        "\nStorm (every client drops at once and resumes within {:.1} s while {STORM_POSTS_PER_S} posts/s go on; \
         late: posts still lacking at the end):\n{:<20} {:>7} {:>8} {:>6} {:>8} {:>8} {:>8} {:>5} {:>6} {:>4} {:>5} {:>9} {:>9} {:>9} {:>8} {:>9}",
        settings.storm_spread.as_secs_f64(),
        "server", "clients", "all back", "failed", "hs p50", "hs p99", "hs max", "posts",
        "missed", "dup", "late", "post p99", "post max", "srv CPU s", "gen core", "others"
    ));
    for h in halls {
        if let Some(s) = &h.storm {
            line(format!(
                "{:<20} {:>7} {:>7.2}s {:>6} {:>8} {:>8} {:>8} {:>5} {:>6} {:>4} {:>5} {:>9} {:>9} {:>9} {:>8} {:>9}",
                h.kind.label(),
                s.clients,
                s.all_back_s,
                s.failed,
                micros(s.handshake.p50),
                micros(s.handshake.p99),
                micros(s.handshake.max),
                s.posts,
                s.check.missed,
                s.check.duplicates,
                s.check.short,
                micros(s.delivery.p99),
                micros(s.delivery.max),
                cpu(s.usage.server_cpu_s),
                gen_share(s.usage.generator_share),
                s.usage.others(),
            ));
        }
    }
    for (title, pick) in [
        (
            "\nOne to all (single posts, each awaited by every client; latency from send to each client):",
            (|h: &Hall| h.one_to_all.clone()) as fn(&Hall) -> Option<Spread>,
        ),
        (
            "\nSustained (a post a second; every delivery checked once and in order; cut: clients the server closed; \
             CPU/post: CPU time over the phase per post, the servers' and the generators'; others as above; \
             last post: from sending it until every client had it):",
            |h: &Hall| h.sustained.clone(),
        ),
    ] {
        line(format!(
            "{title}\n{:<20} {:>7} {:>5} {:>10} {:>8} {:>8} {:>8} {:>6} {:>4} {:>5} {:>4} {:>12} {:>12} {:>9} {:>9}",
            "server", "clients", "posts", "deliveries", "p50", "p99", "max", "missed", "dup", "late", "cut",
            "srv CPU/post", "gen CPU/post", "others", "last post"
        ));
        for h in halls {
            if let Some(s) = pick(h) {
                line(format!(
                    "{:<20} {:>7} {:>5} {:>10} {:>8} {:>8} {:>8} {:>6} {:>4} {:>5} {:>4} {:>12} {:>12} {:>9} {:>9}",
                    h.kind.label(),
                    s.clients,
                    s.posts,
                    s.deliveries,
                    micros(s.latency.p50),
                    micros(s.latency.p99),
                    micros(s.latency.max),
                    s.check.missed,
                    s.check.duplicates,
                    s.check.short,
                    s.check.cut,
                    ms(s.per_post_ms(s.usage.server_cpu_s)),
                    ms(s.per_post_ms(s.usage.generator_cpu_s)),
                    s.usage.others(),
                    s.last_post_s.map_or("-".into(), |t| format!("{t:.2}s")),
                ));
            }
        }
    }
    line(format!(
        "\nTargets (join <= {TARGET_JOIN_S} s with 0 failed upgrades, presence <= {TARGET_PRESENCE_FRAMES} \
         frames per client, one-to-all p99 <= {} ms), and failures:",
        TARGET_ONE_TO_ALL_P99_US / 1000
    ));
    for h in halls {
        let targets: Vec<String> = (h.targets().into_iter())
            .map(|(name, met)| {
                let verdict = match met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "not measured",
                };
                format!("{name}: {verdict}")
            })
            .collect();
        line(format!(
            "{:<20} {:>7}  {}",
            h.kind.label(),
            h.clients,
            targets.join(", ")
        ));
        if let Some(why) = &h.failure {
            line(format!("  FAILED: {why}"));
        }
        for problem in &h.problems {
            line(format!("  PROBLEM: {problem}"));
        }
        for remark in &h.remarks {
            line(format!("  note: {remark}"));
        }
    }
    out
}
