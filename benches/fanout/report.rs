//! Results of the scenarios, their medians over repeated runs, the text tables
//! and the JSON document written next to the build. Runs on several nodes add
//! same-node and cross-node latency and one CPU and memory line per process;
//! runs on the ceiling add every board's distance from it.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::dialect::Posts;
use crate::servers::Kind;

/// Latency percentiles of one run, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    /// The percentiles of `histogram`, or `None` when it is empty (the
    /// cross-node latency of a single node).
    pub fn of_some(histogram: &Histogram<u64>) -> Option<Latency> {
        (!histogram.is_empty()).then(|| Latency::of(histogram))
    }

    pub fn json(&self) -> Value {
        json!({
            "p50": self.p50, "p90": self.p90, "p99": self.p99,
            "p99.9": self.p999, "max": self.max,
        })
    }

    /// The medians of each percentile over `runs`.
    fn median_of(runs: &[Latency]) -> Latency {
        let med =
            |f: fn(&Latency) -> u64| median(runs.iter().map(|l| f(l) as f64).collect()) as u64;
        Latency {
            p50: med(|l| l.p50),
            p90: med(|l| l.p90),
            p99: med(|l| l.p99),
            p999: med(|l| l.p999),
            max: med(|l| l.max),
        }
    }

    pub fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// One run of a throughput scenario (1 to 3).
#[derive(Debug, Clone)]
pub struct Run {
    pub scenario: u32,
    pub name: &'static str,
    pub kind: Kind,
    /// What the senders posted.
    pub posts: Posts,
    pub run: usize,
    pub clients: u32,
    pub senders: u32,
    pub window: u32,
    /// Messages per sender.
    pub messages: u32,
    /// All clients connected and holding the history.
    pub connect_s: f64,
    /// First send to last delivery.
    pub wall_s: f64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub msgs_per_s: f64,
    pub latency: Latency,
    /// Deliveries to clients on their sender's node; `None` if there were none.
    pub same_node: Option<Latency>,
    /// Deliveries to clients on another node; `None` with a single node.
    pub cross_node: Option<Latency>,
    /// Processes that took clients.
    pub nodes: usize,
    /// Server CPU time over the wall time, all server processes together.
    pub cpu_s: Option<f64>,
    /// All server processes' RSS together, at the end of the run.
    pub rss_bytes: Option<u64>,
    /// Each server process.
    pub processes: Vec<Usage>,
    /// The generator's own CPU time over the wall time.
    pub generator_cpu_s: Option<f64>,
    pub sender_fifo: bool,
    /// The size of one delivery (the first client's first).
    pub frame_bytes: Option<usize>,
    /// Warnings and errors the servers logged during the run (see
    /// `servers::notable`), as `role: line`; a run can pass and have some.
    pub notes: Vec<String>,
    pub failure: Option<String>,
}

/// One server process over one run.
#[derive(Debug, Clone)]
pub struct Usage {
    /// "lanboard", "node 2", "redis-server", ...
    pub role: String,
    /// CPU time (user plus system) from the first send to the last delivery.
    pub cpu_s: Option<f64>,
    /// Resident memory at the end of that time.
    pub rss_bytes: Option<u64>,
}

impl Usage {
    /// The sum over `processes`, `None` if any is unknown.
    pub fn total_cpu_s(processes: &[Usage]) -> Option<f64> {
        processes.iter().map(|p| p.cpu_s).sum()
    }

    /// The sum over `processes`, `None` if any is unknown.
    pub fn total_rss_bytes(processes: &[Usage]) -> Option<u64> {
        processes.iter().map(|p| p.rss_bytes).sum()
    }
}

impl Run {
    pub fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "name": self.name,
            "server": self.kind.label(),
            "posts": self.posts.key(),
            "frame_bytes": self.frame_bytes,
            "run": self.run,
            "clients": self.clients,
            "senders": self.senders,
            "window": self.window,
            "messages_per_sender": self.messages,
            "connect_s": self.connect_s,
            "wall_s": self.wall_s,
            "deliveries": self.deliveries,
            "deliveries_per_s": self.deliveries_per_s,
            "msgs_per_s": self.msgs_per_s,
            "nodes": self.nodes,
            "latency_us": self.latency.json(),
            "latency_same_node_us": self.same_node.as_ref().map(Latency::json),
            "latency_cross_node_us": self.cross_node.as_ref().map(Latency::json),
            "server_cpu_s": self.cpu_s,
            "server_rss_bytes": self.rss_bytes,
            "processes": self.processes.iter().map(|p| json!({
                "role": p.role,
                "cpu_s": p.cpu_s,
                "cpu_share": p.cpu_s.map(|c| c / self.wall_s),
                "rss_bytes": p.rss_bytes,
            })).collect::<Vec<_>>(),
            "generator_cpu_s": self.generator_cpu_s,
            "per_sender_fifo": self.sender_fifo,
            "server_log_notes": self.notes,
            "ok": self.failure.is_none(),
            "failure": self.failure,
        })
    }

    /// One progress line, printed as the run ends.
    pub fn line(&self) -> String {
        let notes = match self.notes.first() {
            Some(first) => format!(
                "\n  the servers logged {} warning(s) or error(s), first: {first}",
                self.notes.len()
            ),
            None => String::new(),
        };
        match &self.failure {
            Some(why) => format!("FAILED: {why}{notes}"),
            None => {
                let mut line = format!(
                    "{:.0} deliveries/s, {:.0} msgs/s, p50 {} p99 {}",
                    self.deliveries_per_s,
                    self.msgs_per_s,
                    micros(self.latency.p50),
                    micros(self.latency.p99),
                );
                if let Some(cross) = &self.cross_node {
                    let same = self.same_node.unwrap_or_default();
                    line += &format!(
                        " (same node p50 {} p99 {}, cross node p50 {} p99 {})",
                        micros(same.p50),
                        micros(same.p99),
                        micros(cross.p50),
                        micros(cross.p99),
                    );
                }
                line += &format!(", server CPU {}", share(self.cpu_s, self.wall_s));
                if self.processes.len() > 1 {
                    let each: Vec<String> = (self.processes.iter())
                        .map(|p| format!("{} {}", p.role, share(p.cpu_s, self.wall_s)))
                        .collect();
                    line += &format!(" ({})", each.join(", "));
                }
                line += &format!(
                    ", generator CPU {}",
                    share(self.generator_cpu_s, self.wall_s)
                );
                line + &notes
            }
        }
    }
}

/// The medians of a scenario's runs on one server.
#[derive(Debug, Clone)]
pub struct Summary {
    pub scenario: u32,
    pub name: &'static str,
    pub kind: Kind,
    pub posts: Posts,
    pub runs: usize,
    pub failed: usize,
    pub clients: u32,
    pub senders: u32,
    pub window: u32,
    pub messages: u32,
    pub connect_s: f64,
    pub deliveries_per_s: f64,
    pub msgs_per_s: f64,
    pub latency: Latency,
    pub same_node: Option<Latency>,
    pub cross_node: Option<Latency>,
    pub nodes: usize,
    pub cpu_s: Option<f64>,
    pub cpu_share: Option<f64>,
    pub generator_cpu_s: Option<f64>,
    pub generator_share: Option<f64>,
    pub rss_mib: Option<f64>,
    /// Each server process, in the order of the runs' processes.
    pub processes: Vec<UsageSummary>,
    /// Server log warnings and errors over all runs.
    pub notes: usize,
    /// The size of one delivery.
    pub frame_bytes: Option<usize>,
}

/// The medians of one server process over a scenario's runs.
#[derive(Debug, Clone)]
pub struct UsageSummary {
    pub role: String,
    pub cpu_s: Option<f64>,
    /// CPU time over the wall time: 1.0 is one core busy all the time.
    pub cpu_share: Option<f64>,
    pub rss_mib: Option<f64>,
}

/// Medians over the successful runs of one scenario on one server.
pub fn summarise(runs: &[Run]) -> Option<Summary> {
    let first = runs.first()?;
    let ok: Vec<&Run> = runs.iter().filter(|r| r.failure.is_none()).collect();
    let med = |f: &dyn Fn(&Run) -> f64| median(ok.iter().map(|r| f(r)).collect());
    let med_opt = |f: &dyn Fn(&Run) -> Option<f64>| {
        let values: Vec<f64> = ok.iter().filter_map(|r| f(r)).collect();
        (!values.is_empty()).then(|| median(values))
    };
    let split = |f: &dyn Fn(&Run) -> Option<Latency>| {
        let runs: Vec<Latency> = ok.iter().filter_map(|r| f(r)).collect();
        (!runs.is_empty()).then(|| Latency::median_of(&runs))
    };
    let roles: Vec<String> = ok
        .first()
        .map(|r| r.processes.iter().map(|p| p.role.clone()).collect())
        .unwrap_or_default();
    let processes = roles
        .into_iter()
        .enumerate()
        .map(|(i, role)| {
            let of = |r: &Run| r.processes.get(i).filter(|p| p.role == role).cloned();
            UsageSummary {
                cpu_s: med_opt(&|r| of(r)?.cpu_s),
                cpu_share: med_opt(&|r| Some(of(r)?.cpu_s? / r.wall_s)),
                rss_mib: med_opt(&|r| Some(of(r)?.rss_bytes? as f64 / MIB)),
                role,
            }
        })
        .collect();
    Some(Summary {
        scenario: first.scenario,
        name: first.name,
        kind: first.kind,
        posts: first.posts,
        runs: runs.len(),
        failed: runs.len() - ok.len(),
        clients: first.clients,
        senders: first.senders,
        window: first.window,
        messages: first.messages,
        connect_s: med(&|r| r.connect_s),
        deliveries_per_s: med(&|r| r.deliveries_per_s),
        msgs_per_s: med(&|r| r.msgs_per_s),
        latency: Latency::median_of(&ok.iter().map(|r| r.latency).collect::<Vec<_>>()),
        same_node: split(&|r| r.same_node),
        cross_node: split(&|r| r.cross_node),
        nodes: first.nodes,
        cpu_s: med_opt(&|r| r.cpu_s),
        cpu_share: med_opt(&|r| r.cpu_s.map(|c| c / r.wall_s)),
        generator_cpu_s: med_opt(&|r| r.generator_cpu_s),
        generator_share: med_opt(&|r| r.generator_cpu_s.map(|c| c / r.wall_s)),
        rss_mib: med_opt(&|r| r.rss_bytes.map(|b| b as f64 / MIB)),
        processes,
        notes: runs.iter().map(|r| r.notes.len()).sum(),
        frame_bytes: ok.iter().find_map(|r| r.frame_bytes),
    })
}

impl Summary {
    /// The board and what was posted to it, as the tables name them.
    pub fn label(&self) -> String {
        label(self.kind, self.posts)
    }

    /// Server CPU time (all processes) per delivery, in nanoseconds.
    pub fn cpu_ns_per_delivery(&self) -> Option<f64> {
        let deliveries =
            f64::from(self.clients) * f64::from(self.senders) * f64::from(self.messages);
        Some(self.cpu_s? * 1e9 / deliveries)
    }

    pub fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "name": self.name,
            "server": self.kind.label(),
            "posts": self.posts.key(),
            "frame_bytes": self.frame_bytes,
            "runs": self.runs,
            "failed_runs": self.failed,
            "clients": self.clients,
            "senders": self.senders,
            "window": self.window,
            "messages_per_sender": self.messages,
            "median": {
                "connect_s": self.connect_s,
                "deliveries_per_s": self.deliveries_per_s,
                "msgs_per_s": self.msgs_per_s,
                "latency_us": self.latency.json(),
                "latency_same_node_us": self.same_node.as_ref().map(Latency::json),
                "latency_cross_node_us": self.cross_node.as_ref().map(Latency::json),
                "server_cpu_s": self.cpu_s,
                "server_cpu_share": self.cpu_share,
                "generator_cpu_s": self.generator_cpu_s,
                "generator_cpu_share": self.generator_share,
                "server_rss_mib": self.rss_mib,
                "processes": self.processes.iter().map(|p| json!({
                    "role": p.role,
                    "cpu_s": p.cpu_s,
                    "cpu_share": p.cpu_share,
                    "rss_mib": p.rss_mib,
                })).collect::<Vec<_>>(),
            },
            "nodes": self.nodes,
            "server_log_notes": self.notes,
        })
    }
}

/// Scenario 4: memory of idle connections.
#[derive(Debug, Clone)]
pub struct Idle {
    pub kind: Kind,
    pub clients: usize,
    pub connect_s: f64,
    /// One client's connect-to-history time: median and worst.
    pub join_median_s: f64,
    pub join_max_s: f64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub failure: Option<String>,
}

impl Idle {
    pub fn per_connection(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / self.clients as f64
    }

    pub fn json(&self) -> Value {
        json!({
            "server": self.kind.label(),
            "clients": self.clients,
            "connect_s": self.connect_s,
            "join_median_s": self.join_median_s,
            "join_max_s": self.join_max_s,
            "rss_before_bytes": self.rss_before,
            "rss_after_bytes": self.rss_after,
            "bytes_per_connection": self.per_connection(),
            "ok": self.failure.is_none(),
            "failure": self.failure,
        })
    }
}

/// Scenario 5: what a new client costs on a board holding `stored` messages.
#[derive(Debug, Clone)]
pub struct Growth {
    pub kind: Kind,
    pub stored: u64,
    /// "imported" (lanboard import) or "posted" (through a socket).
    pub how: &'static str,
    /// Time to import or post the messages.
    pub fill_s: f64,
    /// Spawn to listening, on the filled board (lanboard) or empty (original).
    pub start_s: f64,
    pub welcome_bytes: usize,
    /// Median over the joins of a new client.
    pub join_s: f64,
    pub joins: usize,
    pub rss_bytes: Option<u64>,
    pub failure: Option<String>,
}

impl Growth {
    pub fn json(&self) -> Value {
        json!({
            "server": self.kind.label(),
            "stored_messages": self.stored,
            "filled_by": self.how,
            "fill_s": self.fill_s,
            "server_start_s": self.start_s,
            "server_start_note": if self.kind == Kind::Original {
                "started empty; the original keeps history only in memory"
            } else {
                "started on the filled board"
            },
            "welcome_bytes": self.welcome_bytes,
            "join_s_median": self.join_s,
            "joins": self.joins,
            "server_rss_bytes": self.rss_bytes,
            "ok": self.failure.is_none(),
            "failure": self.failure,
        })
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Appends one formatted line to a table.
fn push_line(out: &mut String, line: std::fmt::Arguments<'_>) {
    // Formatting into a String cannot fail.
    let _ = out.write_fmt(line);
    out.push('\n');
}

pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A latency in microseconds, in the unit that reads best.
pub fn micros(us: u64) -> String {
    match us {
        0..=9_999 => format!("{us}µs"),
        10_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

fn share(part: Option<f64>, whole: f64) -> String {
    part.map_or("?".into(), |p| format!("{:.0}%", 100.0 * p / whole))
}

/// A rate with a k or M suffix.
pub fn rate(per_second: f64) -> String {
    if per_second.is_nan() {
        "-".into()
    } else if per_second >= 1e6 {
        format!("{:.2}M", per_second / 1e6)
    } else if per_second >= 1e4 {
        format!("{:.0}k", per_second / 1e3)
    } else {
        format!("{per_second:.0}")
    }
}

pub fn bytes(n: f64) -> String {
    if n.abs() >= MIB {
        format!("{:.1} MiB", n / MIB)
    } else if n.abs() >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or("?".into(), |v| format!("{v:.digits$}"))
}

/// The table of scenarios 1 to 3 and the lanboard/original ratios.
pub fn throughput_table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    push_line(
        &mut out,
        format_args!(
            "{:<28} {:<25} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}",
            "scenario",
            "server",
            "connect",
            "deliv/s",
            "msgs/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "CPU s",
            "srv CPU",
            "gen CPU",
            "RSS MiB"
        ),
    );
    for s in summaries {
        let scenario = format!(
            "{} {} C={} S={} W={}",
            s.scenario, s.name, s.clients, s.senders, s.window
        );
        if s.failed == s.runs {
            push_line(
                &mut out,
                format_args!(
                    "{:<28} {:<25} all {} run(s) FAILED (see the runs above)",
                    scenario,
                    s.label(),
                    s.runs
                ),
            );
            continue;
        }
        let failed = if s.failed > 0 {
            format!("  ({} of {} runs FAILED)", s.failed, s.runs)
        } else {
            String::new()
        };
        push_line(
        &mut out,
        format_args!(
            "{:<28} {:<25} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}{failed}",
            scenario,
            s.label(),
            micros((s.connect_s * 1e6) as u64),
            rate(s.deliveries_per_s),
            rate(s.msgs_per_s),
            micros(s.latency.p50),
            micros(s.latency.p90),
            micros(s.latency.p99),
            micros(s.latency.p999),
            micros(s.latency.max),
            opt(s.cpu_s, 2),
            s.cpu_share.map_or("?".into(), |c| format!("{:.0}%", c * 100.0)),
            s.generator_share.map_or("?".into(), |c| format!("{:.0}%", c * 100.0)),
            opt(s.rss_mib, 1),
        ),
    );
    }
    let ratios = ratios(summaries);
    if !ratios.is_empty() {
        push_line(
            &mut out,
            format_args!("\ndeliveries/s, each board / original (medians):"),
        );
        for (scenario, kind, ratio) in ratios {
            push_line(
                &mut out,
                format_args!("  scenario {scenario}: {:<25} {ratio:.2}x", kind.label()),
            );
        }
    }
    out
}

/// A board and what was posted to it, as the tables name them.
fn label(kind: Kind, posts: Posts) -> String {
    format!("{}{}", kind.label(), posts.suffix())
}

/// Posts with an image against the same posts without it, per scenario and
/// board: the frame each client receives, deliveries/s, latency and the
/// server's CPU time for the same number of deliveries.
pub fn posts_table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    push_line(
        &mut out,
        format_args!(
            "{:<28} {:<18} {:>13} {:>15} {:>6} {:>17} {:>17} {:>13}",
            "scenario", "server", "frame B", "deliv/s", "ratio", "p50", "p99", "CPU s"
        ),
    );
    let usable = |s: &&Summary| s.failed < s.runs;
    for image in (summaries.iter().filter(usable)).filter(|s| s.posts == Posts::Image) {
        let Some(text) = (summaries.iter().filter(usable)).find(|t| {
            t.posts == Posts::Text && t.kind == image.kind && t.scenario == image.scenario
        }) else {
            continue;
        };
        let pair = |f: &dyn Fn(&Summary) -> String| format!("{} / {}", f(text), f(image));
        push_line(
            &mut out,
            format_args!(
                "{:<28} {:<18} {:>13} {:>15} {:>5.2}x {:>17} {:>17} {:>13}",
                scenario_label(image),
                image.kind.label(),
                pair(&|s| s.frame_bytes.map_or("?".into(), |b| b.to_string())),
                pair(&|s| rate(s.deliveries_per_s)),
                image.deliveries_per_s / text.deliveries_per_s,
                pair(&|s| micros(s.latency.p50)),
                pair(&|s| micros(s.latency.p99)),
                pair(&|s| opt(s.cpu_s, 2)),
            ),
        );
    }
    out
}

/// The label of a scenario in the tables.
fn scenario_label(s: &Summary) -> String {
    format!(
        "{} {} C={} S={} W={}",
        s.scenario, s.name, s.clients, s.senders, s.window
    )
}

fn percent(share: Option<f64>) -> String {
    share.map_or("?".into(), |c| format!("{:.0}%", c * 100.0))
}

/// Rates and latency split by where the receiver was (same node as the
/// sender, or another), with deliveries/s against one lanboard node on its
/// SQLite file in the same scenario.
pub fn nodes_table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    push_line(
        &mut out,
        format_args!(
            "{:<28} {:<25} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "scenario",
            "server",
            "nodes",
            "deliv/s",
            "vs SQLite",
            "msgs/s",
            "p50",
            "p99",
            "same p50",
            "same p99",
            "cross p50",
            "cross p99",
        ),
    );
    for s in summaries {
        let scenario = scenario_label(s);
        if s.failed == s.runs {
            push_line(
                &mut out,
                format_args!("{:<28} {:<25} all runs FAILED", scenario, s.label()),
            );
            continue;
        }
        let sqlite = summaries.iter().find(|o| {
            o.scenario == s.scenario
                && o.kind == Kind::Lanboard
                && o.posts == s.posts
                && o.failed < o.runs
        });
        let versus = sqlite.map_or("-".into(), |o| {
            format!("{:.2}x", s.deliveries_per_s / o.deliveries_per_s)
        });
        let pair = |l: Option<Latency>| {
            l.map_or(("-".into(), "-".into()), |l| (micros(l.p50), micros(l.p99)))
        };
        let (same50, same99) = pair(s.same_node);
        let (cross50, cross99) = pair(s.cross_node);
        push_line(
            &mut out,
            format_args!(
                "{:<28} {:<25} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
                scenario,
                s.label(),
                s.nodes,
                rate(s.deliveries_per_s),
                versus,
                rate(s.msgs_per_s),
                micros(s.latency.p50),
                micros(s.latency.p99),
                same50,
                same99,
                cross50,
                cross99,
            ),
        );
    }
    out
}

/// CPU time, share of one core and RSS of every server process, their
/// total, and the generator's CPU, per scenario and server.
pub fn process_table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    push_line(
        &mut out,
        format_args!(
            "{:<28} {:<25} {:<14} {:>7} {:>7} {:>8}",
            "scenario", "server", "process", "CPU s", "% core", "RSS MiB"
        ),
    );
    for s in summaries.iter().filter(|s| s.failed < s.runs) {
        let scenario = scenario_label(s);
        let label = s.label();
        let mut row = |role: &str, cpu_s: Option<f64>, share: Option<f64>, rss: Option<f64>| {
            push_line(
                &mut out,
                format_args!(
                    "{:<28} {:<25} {:<14} {:>7} {:>7} {:>8}",
                    scenario,
                    label,
                    role,
                    opt(cpu_s, 2),
                    percent(share),
                    rss.map_or("-".into(), |r| format!("{r:.1}")),
                ),
            );
        };
        for p in &s.processes {
            row(&p.role, p.cpu_s, p.cpu_share, p.rss_mib);
        }
        if s.processes.len() > 1 {
            row("all servers", s.cpu_s, s.cpu_share, s.rss_mib);
        }
        row("generator", s.generator_cpu_s, s.generator_share, None);
    }
    out
}

/// One board against the ceiling in the same scenario, text posts only (the
/// ceiling takes no files).
#[derive(Debug, Clone, Copy)]
pub struct VersusCeiling<'a> {
    pub board: &'a Summary,
    pub ceiling: &'a Summary,
}

impl VersusCeiling<'_> {
    /// Deliveries per second, the board's over the ceiling's.
    pub fn rate_ratio(&self) -> f64 {
        self.board.deliveries_per_s / self.ceiling.deliveries_per_s
    }

    /// 99th percentile latency, the board's over the ceiling's.
    pub fn p99_ratio(&self) -> f64 {
        self.board.latency.p99 as f64 / self.ceiling.latency.p99.max(1) as f64
    }

    /// Server CPU time per delivery, the board's over the ceiling's.
    pub fn cpu_ratio(&self) -> Option<f64> {
        Some(self.board.cpu_ns_per_delivery()? / self.ceiling.cpu_ns_per_delivery()?)
    }

    pub fn json(&self) -> Value {
        let (board, ceiling) = (self.board, self.ceiling);
        json!({
            "scenario": board.scenario,
            "server": board.kind.label(),
            "deliveries_per_s": board.deliveries_per_s,
            "ceiling_deliveries_per_s": ceiling.deliveries_per_s,
            "deliveries_per_s_vs_ceiling": self.rate_ratio(),
            "p99_us": board.latency.p99,
            "ceiling_p99_us": ceiling.latency.p99,
            "p99_vs_ceiling": self.p99_ratio(),
            "server_cpu_ns_per_delivery": board.cpu_ns_per_delivery(),
            "ceiling_cpu_ns_per_delivery": ceiling.cpu_ns_per_delivery(),
            "server_cpu_per_delivery_vs_ceiling": self.cpu_ratio(),
        })
    }
}

/// Every other board with text posts against the ceiling in the same
/// scenario, where both have a run that passed.
pub fn versus_ceiling(summaries: &[Summary]) -> Vec<VersusCeiling<'_>> {
    let usable = |s: &&Summary| s.failed < s.runs && s.posts == Posts::Text;
    (summaries.iter().filter(usable))
        .filter(|s| s.kind != Kind::Ceiling)
        .filter_map(|board| {
            let ceiling = (summaries.iter().filter(usable))
                .find(|c| c.kind == Kind::Ceiling && c.scenario == board.scenario)?;
            Some(VersusCeiling { board, ceiling })
        })
        .collect()
}

/// Each board against the ceiling: the frame each client receives,
/// deliveries/s, p99 and the server's CPU time per delivery, as board /
/// ceiling with the ratio beside.
pub fn ceiling_table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    push_line(
        &mut out,
        format_args!(
            "{:<28} {:<18} {:>11} {:>15} {:>6} {:>15} {:>6} {:>13} {:>6}",
            "scenario",
            "server",
            "frame B",
            "deliv/s",
            "ratio",
            "p99",
            "ratio",
            "CPU ns/deliv",
            "ratio"
        ),
    );
    for versus in versus_ceiling(summaries) {
        let (board, ceiling) = (versus.board, versus.ceiling);
        let pair = |f: &dyn Fn(&Summary) -> String| format!("{} / {}", f(board), f(ceiling));
        let cpu = |s: &Summary| opt(s.cpu_ns_per_delivery(), 0);
        push_line(
            &mut out,
            format_args!(
                "{:<28} {:<18} {:>11} {:>15} {:>5.2}x {:>15} {:>5.2}x {:>13} {:>6}",
                scenario_label(board),
                board.kind.label(),
                pair(&|s| s.frame_bytes.map_or("?".into(), |b| b.to_string())),
                pair(&|s| rate(s.deliveries_per_s)),
                versus.rate_ratio(),
                pair(&|s| micros(s.latency.p99)),
                versus.p99_ratio(),
                pair(&cpu),
                versus
                    .cpu_ratio()
                    .map_or("?".into(), |r| format!("{r:.2}x")),
            ),
        );
    }
    out
}

/// (scenario, board, its deliveries/s over the original's).
pub fn ratios(summaries: &[Summary]) -> Vec<(u32, Kind, f64)> {
    let mut found = Vec::new();
    // The original takes no files: only text posts are compared with it.
    for s in (summaries.iter()).filter(|s| s.kind != Kind::Original && s.posts == Posts::Text) {
        let original = summaries
            .iter()
            .find(|o| o.scenario == s.scenario && o.kind == Kind::Original && o.failed < o.runs);
        if let Some(original) = original {
            if s.failed < s.runs {
                found.push((
                    s.scenario,
                    s.kind,
                    s.deliveries_per_s / original.deliveries_per_s,
                ));
            }
        }
    }
    found
}

pub fn idle_table(idle: &[Idle]) -> String {
    let mut out = String::new();
    push_line(
        &mut out,
        format_args!(
            "{:<18} {:>8} {:>10} {:>10} {:>10} {:>12} {:>12} {:>14}",
            "server",
            "clients",
            "connect",
            "join p50",
            "join max",
            "RSS before",
            "RSS after",
            "per connection"
        ),
    );
    for i in idle {
        if let Some(why) = &i.failure {
            push_line(
                &mut out,
                format_args!("{:<18} {:>8} FAILED: {why}", i.kind.label(), i.clients),
            );
            continue;
        }
        push_line(
            &mut out,
            format_args!(
                "{:<18} {:>8} {:>9.2}s {:>10} {:>10} {:>12} {:>12} {:>14}",
                i.kind.label(),
                i.clients,
                i.connect_s,
                micros((i.join_median_s * 1e6) as u64),
                micros((i.join_max_s * 1e6) as u64),
                bytes(i.rss_before as f64),
                bytes(i.rss_after as f64),
                bytes(i.per_connection()),
            ),
        );
    }
    out
}

pub fn growth_table(growth: &[Growth]) -> String {
    let mut out = String::new();
    push_line(
        &mut out,
        format_args!(
            "{:<18} {:>9} {:<9} {:>9} {:>13} {:>13} {:>10} {:>10}",
            "server", "stored", "by", "fill", "server start", "history size", "new join", "RSS"
        ),
    );
    for g in growth {
        if let Some(why) = &g.failure {
            push_line(
                &mut out,
                format_args!("{:<18} {:>9} FAILED: {why}", g.kind.label(), g.stored),
            );
            continue;
        }
        let start = if g.kind == Kind::Original {
            format!("{:.2}s empty", g.start_s)
        } else {
            format!("{:.2}s", g.start_s)
        };
        push_line(
            &mut out,
            format_args!(
                "{:<18} {:>9} {:<9} {:>8.2}s {:>13} {:>13} {:>10} {:>10}",
                g.kind.label(),
                g.stored,
                g.how,
                g.fill_s,
                start,
                bytes(g.welcome_bytes as f64),
                micros((g.join_s * 1e6) as u64),
                g.rss_bytes.map_or("?".into(), |b| bytes(b as f64)),
            ),
        );
    }
    out
}

/// Checks the pure parts of this module; panics on the first failure.
pub fn self_check() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(median(Vec::new()).is_nan());
    assert_eq!(micros(85), "85µs");
    assert_eq!(micros(12_345), "12.3ms");
    assert_eq!(micros(2_500_000), "2.50s");
    assert_eq!(rate(1_234_567.0), "1.23M");
    assert_eq!(rate(45_600.0), "46k");
    assert_eq!(bytes(3.0 * 1024.0), "3.0 KiB");
}
