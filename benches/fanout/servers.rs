//! The boards under test as child processes: lanboard's release binary (one
//! process, or several nodes sharing a board in Redis), the original Node
//! board and the ceiling (this bench's own binary, see `ceiling.rs`), each
//! started fresh, pinned to the server core, read from `/proc`
//! for CPU time and memory, and killed when dropped (also when the generator
//! panics). The `redis-server` the nodes share lives in `redis.rs`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a board may take to start listening (1,000,000 stored messages
/// included).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `npm ci` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `lanboard import` of a big board may take.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// Most lanboard nodes one Redis board may be measured with (`redis16`):
/// far more than two cores can tell apart, but a typo like `redis100` should
/// not start a hundred processes.
pub const MAX_NODES: u8 = 16;

/// Which board, and how it keeps history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// lanboard with history in its SQLite file (the default).
    Lanboard,
    /// lanboard `--memory`.
    LanboardMemory,
    /// The original Socket.IO board.
    Original,
    /// This many lanboard nodes serving one board in a fresh `redis-server`.
    Redis(u8),
    /// The least work a server of protocol v1 can do (`ceiling.rs`).
    Ceiling,
}

impl Kind {
    pub fn label(self) -> String {
        match self {
            Kind::Lanboard => "lanboard".into(),
            Kind::LanboardMemory => "lanboard --memory".into(),
            Kind::Original => "original".into(),
            Kind::Redis(1) => "redis, 1 node".into(),
            Kind::Redis(n) => format!("redis, {n} nodes"),
            Kind::Ceiling => "ceiling".into(),
        }
    }

    /// The name used in `FANOUT_SERVERS`.
    pub fn key(self) -> String {
        match self {
            Kind::Lanboard => "lanboard".into(),
            Kind::LanboardMemory => "memory".into(),
            Kind::Original => "original".into(),
            Kind::Redis(n) => format!("redis{n}"),
            Kind::Ceiling => "ceiling".into(),
        }
    }

    /// The kind a `FANOUT_SERVERS` name stands for: `lanboard`, `memory`,
    /// `original`, `ceiling`, or `redisN` for N nodes (1 to [`MAX_NODES`]).
    pub fn parse(key: &str) -> Option<Kind> {
        match key {
            "lanboard" => Some(Kind::Lanboard),
            "memory" => Some(Kind::LanboardMemory),
            "original" => Some(Kind::Original),
            "ceiling" => Some(Kind::Ceiling),
            _ => {
                let nodes: u8 = key.strip_prefix("redis")?.parse().ok()?;
                (1..=MAX_NODES)
                    .contains(&nodes)
                    .then_some(Kind::Redis(nodes))
            }
        }
    }

    /// How many processes take clients.
    pub fn nodes(self) -> usize {
        match self {
            Kind::Redis(n) => usize::from(n),
            Kind::Lanboard | Kind::LanboardMemory | Kind::Original | Kind::Ceiling => 1,
        }
    }
}

/// Which CPUs the server and the generator run on.
#[derive(Debug, Clone)]
pub struct Pinning {
    pub server: Option<usize>,
    pub generator: Vec<usize>,
}

impl Pinning {
    /// Pins this process (and so every thread it starts later) to all allowed
    /// CPUs but the first, which is left to the servers. Does nothing with
    /// fewer than two CPUs or when `enabled` is false.
    pub fn apply(enabled: bool) -> Pinning {
        let allowed = allowed_cpus();
        if !enabled || allowed.len() < 2 {
            return Pinning {
                server: None,
                generator: allowed,
            };
        }
        let server = allowed[0];
        let generator = allowed[1..].to_vec();
        if let Err(e) = set_affinity(0, &generator) {
            eprintln!("fanout: could not pin the generator ({e}); running unpinned");
            return Pinning {
                server: None,
                generator: allowed,
            };
        }
        Pinning {
            server: Some(server),
            generator,
        }
    }

    pub fn describe(&self) -> String {
        match self.server {
            Some(core) => format!(
                "server pinned to core {core} (with several nodes: every node and \
                 redis-server), generator to core(s) {}",
                list(&self.generator)
            ),
            None => format!(
                "not pinned (server and generator share core(s) {})",
                list(&self.generator)
            ),
        }
    }
}

/// One line about this machine: CPU model, CPUs this process may use,
/// kernel, and the load average as the benchmark starts (the machine may be
/// shared, and a busy neighbour shows up here).
pub fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, name)| name.trim())
        .to_owned();
    let release = read("/proc/sys/kernel/osrelease");
    let loadavg = read("/proc/loadavg");
    let load = loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{model}, {} CPU(s) usable, Linux {}, load average {} at start",
        allowed_cpus().len(),
        release.trim(),
        if load.is_empty() { "?" } else { &load }
    )
}

fn list(cores: &[usize]) -> String {
    let names: Vec<String> = cores.iter().map(usize::to_string).collect();
    names.join(",")
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, and
    // sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Sets the CPU affinity of `pid` (0: the calling thread). Async-signal-safe,
/// so a child may call it between fork and exec.
fn set_affinity(pid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cpus`; CPU_SET only writes inside the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `command`'s process run on `core` only, and die with the generator.
pub fn confine(command: &mut Command, core: Option<usize>) {
    confine_to(command, core.as_slice());
}

/// Makes `command`'s process run on `cores` only (anywhere when empty), and
/// die with the generator.
pub fn confine_to(command: &mut Command, cores: &[usize]) {
    let cores = cores.to_vec();
    // SAFETY: between fork and exec only async-signal-safe calls are allowed;
    // sched_setaffinity and prctl are plain system calls, and the closure
    // only reads the list it owns.
    unsafe {
        command.pre_exec(move || {
            if !cores.is_empty() {
                set_affinity(0, &cores)?;
            }
            // The signal comes when the thread that spawned the child exits;
            // servers are spawned from the coordinator on the main thread, so
            // that is when the generator itself ends (even by SIGKILL).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A running board, killed and reaped when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// From spawn until it listened (lanboard: until its banner named the address).
    pub started_in: Duration,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The child may have exited already; then there is nothing to kill,
        // and reaping it is all that is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// A started child serving at `addr`, writing its log to `log`.
    pub fn new(child: Child, addr: SocketAddr, started_in: Duration, log: PathBuf) -> Server {
        Server {
            child,
            addr,
            started_in,
            log,
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This process under the name `role`, for the CPU and memory table.
    pub fn process(&self, role: &str) -> Process {
        Process {
            role: role.to_owned(),
            pid: self.pid(),
            log: self.log.clone(),
        }
    }

    /// Resident memory now, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        status_kib(self.pid(), "VmRSS:").map(|kib| kib * 1024)
    }

    /// The last lines the board wrote on stderr, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

/// One process a run accounts for: its role in the tables, its pid, its log.
#[derive(Debug, Clone)]
pub struct Process {
    pub role: String,
    pub pid: u32,
    log: PathBuf,
}

impl Process {
    /// CPU time so far (user plus system, all threads), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid)
    }

    /// Resident memory now, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        status_kib(self.pid, "VmRSS:").map(|kib| kib * 1024)
    }

    /// The lines of its log that say something went wrong (see [`notable`]).
    pub fn notable(&self) -> Vec<String> {
        notable(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

/// The lines of a lanboard log that say something went wrong: warnings and
/// errors (env_logger writes the level between spaces), panics, and clients
/// disconnected for falling behind (logged at info, as a client's slowness
/// is not the server's fault, but under this load it is worth knowing).
pub fn notable(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            [" WARN ", " ERROR ", "panicked", "too slow to keep up"]
                .iter()
                .any(|mark| line.contains(mark))
        })
        .map(str::to_owned)
        .collect()
}

/// The processes that serve one board for one run: a single board, or
/// lanboard nodes and the `redis-server` they share. Dropping it stops them
/// all, the nodes first (fields drop in order), so no node sees Redis vanish.
pub struct Deployment {
    nodes: Vec<Server>,
    redis: Option<Server>,
    /// The role of a single board in the tables; nodes are "node 1", ...
    single_role: &'static str,
}

impl Deployment {
    /// A board served by one process, called `role` in the tables.
    pub fn single(server: Server, role: &'static str) -> Deployment {
        Deployment {
            nodes: vec![server],
            redis: None,
            single_role: role,
        }
    }

    /// `nodes` sharing the board in `redis`.
    pub fn cluster(nodes: Vec<Server>, redis: Server) -> Deployment {
        Deployment {
            nodes,
            redis: Some(redis),
            single_role: "",
        }
    }

    /// Where clients connect: client `i` to `addrs()[i % len]`.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|node| node.addr).collect()
    }

    /// Every server process: the nodes in order, then Redis.
    pub fn processes(&self) -> Vec<Process> {
        let Some(redis) = &self.redis else {
            return self
                .nodes
                .iter()
                .map(|node| node.process(self.single_role))
                .collect();
        };
        let mut processes: Vec<Process> = (self.nodes.iter().enumerate())
            .map(|(i, node)| node.process(&format!("node {}", i + 1)))
            .collect();
        processes.push(redis.process("redis-server"));
        processes
    }

    /// The last lines of every process's log, each under its role when
    /// there are several.
    pub fn log_tail(&self) -> String {
        let servers = self.nodes.iter().chain(&self.redis);
        let processes = self.processes();
        if processes.len() == 1 {
            return self.nodes[0].log_tail();
        }
        let mut out = String::new();
        for (server, process) in servers.zip(&processes) {
            let tail = server.log_tail();
            if !tail.trim().is_empty() {
                out.push_str(&format!("  [{}]\n{tail}\n", process.role));
            }
        }
        out
    }

    /// A sentence per process that is no longer running.
    pub fn exits(&mut self) -> Vec<String> {
        let roles: Vec<String> = self.processes().into_iter().map(|p| p.role).collect();
        let servers = self.nodes.iter_mut().chain(&mut self.redis);
        servers
            .zip(roles)
            .filter_map(|(server, role)| {
                let status = server.exited()?;
                Some(format!("{role} exited during the run ({status})"))
            })
            .collect()
    }
}

/// How to start lanboard.
pub struct Lanboard {
    pub binary: PathBuf,
    /// True if and only if this build has `--rate-limit` (passed as 0).
    pub rate_limit_flag: bool,
    /// True if and only if this build has `--redis` (several nodes).
    pub redis_flag: bool,
    /// True if and only if this build has `--max-connections-per-ip`
    /// (passed as 0: scenario 6 connects from addresses other than
    /// 127.0.0.1, which the limit would count).
    pub per_ip_flag: bool,
}

/// Where a started lanboard keeps its board.
#[derive(Debug, Clone, Copy)]
pub enum Storage<'a> {
    /// `--data PATH`, the SQLite file.
    File(&'a Path),
    /// `--memory`.
    Memory,
    /// `--redis URL --redis-prefix PREFIX`.
    Redis { url: &'a str, prefix: &'a str },
}

impl Lanboard {
    pub fn new() -> Lanboard {
        // FANOUT_LANBOARD measures another build (say, a patched one) with
        // the same generator.
        let binary = std::env::var_os("FANOUT_LANBOARD")
            .filter(|path| !path.is_empty())
            .map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_lanboard")),
                PathBuf::from,
            );
        let help = Command::new(&binary)
            .arg("--help")
            .env_clear()
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        Lanboard {
            rate_limit_flag: help.contains("--rate-limit"),
            redis_flag: help.contains("--redis"),
            per_ip_flag: help.contains("--max-connections-per-ip"),
            binary,
        }
    }

    /// Starts a board on a free port, keeping its board in `storage`, with
    /// `extra` flags, and writing its stderr to `log`.
    pub fn start(
        &self,
        storage: Storage<'_>,
        extra: &[&str],
        log: &Path,
        core: Option<usize>,
    ) -> Result<Server, String> {
        let mut command = Command::new(&self.binary);
        command.args(["--bind", "127.0.0.1", "--port", "0", "--no-qr"]);
        command.args(extra);
        match storage {
            Storage::File(path) => {
                command.arg("--data").arg(path);
            }
            Storage::Memory => {
                command.arg("--memory");
            }
            Storage::Redis { url, prefix } => {
                command.args(["--redis", url, "--redis-prefix", prefix]);
            }
        }
        if self.rate_limit_flag {
            command.args(["--rate-limit", "0"]);
        }
        if self.per_ip_flag {
            command.args(["--max-connections-per-ip", "0"]);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LANBOARD_") {
                command.env_remove(name);
            }
        }
        announced(command, "lanboard", log, core)
    }

    /// Fills the fresh file `data` from the JSON Lines file `lines`.
    pub fn import(&self, lines: &Path, data: &Path) -> Result<Duration, String> {
        let mut command = Command::new(&self.binary);
        command.arg("import").arg(lines).arg("--data").arg(data);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let output = run_bounded(command, IMPORT_TIMEOUT)?;
        if output.0.success() {
            Ok(started.elapsed())
        } else {
            Err(format!("lanboard import failed: {}", output.1.trim()))
        }
    }
}

/// The port in a banner line like `  http://127.0.0.1:4000   (this computer only)`.
pub fn banner_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("http://127.0.0.1:")? + "http://127.0.0.1:".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// Starts the ceiling (`ceiling.rs`): this bench's own binary, serving on a
/// free loopback port, with its stderr in `log`.
pub fn start_ceiling(log: &Path, core: Option<usize>) -> Result<Server, String> {
    let binary = std::env::current_exe().map_err(|e| format!("the bench's own binary: {e}"))?;
    let mut command = Command::new(binary);
    command.arg(crate::ceiling::ARG);
    announced(command, "the ceiling", log, core)
}

/// Spawns `command` (the board called `what` in errors) on `core`, with its
/// stderr in `log`, and waits until its stdout names the port it listens on
/// in a line like `http://127.0.0.1:PORT`.
fn announced(
    mut command: Command,
    what: &str,
    log: &Path,
    core: Option<usize>,
) -> Result<Server, String> {
    let stderr = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    confine(&mut command, core);
    let spawned = Instant::now();
    let mut child = command.spawn().map_err(|e| {
        format!(
            "starting {what} ({}): {e}",
            command.get_program().to_string_lossy()
        )
    })?;
    // The banner is read (and the rest of stdout drained) on a thread, so
    // the wait for it can time out.
    let stdout = child.stdout.take().expect("stdout is piped");
    let (found, port) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(port) = banner_port(&line) {
                    // The receiver may have given up waiting; nothing to do then.
                    let _ = found.send(port);
                    sent = true;
                }
            }
        }
    });
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        started_in: Duration::ZERO,
        log: log.to_owned(),
    };
    match port.recv_timeout(START_TIMEOUT) {
        Ok(port) => {
            server.started_in = spawned.elapsed();
            server.addr.set_port(port);
            Ok(server)
        }
        Err(_) => Err(format!(
            "{what} printed no http://127.0.0.1:PORT line within {START_TIMEOUT:?}; its stderr:\n{}",
            server.log_tail()
        )),
    }
}

/// The original board, installed once in a scratch folder.
pub struct Original {
    dir: PathBuf,
}

impl Original {
    /// Copies the seed to `scratch` and runs `npm ci` there. An error explains
    /// why the original cannot be measured.
    pub fn install(seed: &Path, scratch: &Path) -> Result<Original, String> {
        let version = Command::new("node").arg("--version").output();
        match version {
            Ok(output) if output.status.success() => {}
            _ => return Err("node is not installed".into()),
        }
        let dir = scratch.join("socketio-seed");
        copy_tree(seed, &dir).map_err(|e| format!("copying {}: {e}", seed.display()))?;
        let mut command = Command::new("npm");
        command
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (status, stderr) =
            run_bounded(command, INSTALL_TIMEOUT).map_err(|e| format!("npm ci: {e}"))?;
        if !status.success() {
            return Err(format!(
                "npm ci failed in {}: {}",
                dir.display(),
                stderr.trim()
            ));
        }
        Ok(Original { dir })
    }

    /// Starts a fresh board (it never forgets a socket) on a free port.
    pub fn start(&self, scratch: &Path, core: Option<usize>) -> Result<Server, String> {
        // The port is free now; the short race with other programs is harmless here.
        let port = free_port()?;
        let log = scratch.join("original.log");
        let (output, errors) = log_file(&log)?;
        let mut command = Command::new("node");
        command
            .arg("server.js")
            .current_dir(&self.dir)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors);
        confine(&mut command, core);
        let spawned = Instant::now();
        let child = command.spawn().map_err(|e| format!("starting node: {e}"))?;
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            started_in: Duration::ZERO,
            log,
        };
        // It prints nothing, so it is up once it accepts a connection.
        while spawned.elapsed() < START_TIMEOUT {
            if TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_ok() {
                server.started_in = spawned.elapsed();
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("node exited ({status}): {}", server.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "node did not listen on port {port} within {START_TIMEOUT:?}"
        ))
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "node_modules" {
                copy_tree(&entry.path(), &target)?;
            }
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Runs `command` to completion within `limit`, returning its status and stderr.
fn run_bounded(
    mut command: Command,
    limit: Duration,
) -> Result<(std::process::ExitStatus, String), String> {
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            // Unreadable output only loses the error text.
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        }
        text
    });
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status, reader.join().unwrap_or_default())),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                // Past the limit (or unwaitable): stop it; it may have just exited.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {limit:?}"));
            }
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// User plus system CPU time of process `pid` and all its threads, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces; fields follow the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; the first after ')' is field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// Time the CPUs `cores` spent running processes (anyone's) or stolen by
/// the hypervisor since boot, in seconds, from `/proc/stat`. Interrupt
/// time is left out: on loopback much of it is our own sockets' traffic,
/// which no process is charged for.
pub fn busy_seconds(cores: &[usize]) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        return None;
    }
    let mut ticks = 0;
    for &core in cores {
        let name = format!("cpu{core} ");
        let line = stat.lines().find(|line| line.starts_with(&name))?;
        // user nice system idle iowait irq softirq steal ... (guest time is
        // inside user already).
        let fields: Vec<u64> = (line[name.len()..].split_whitespace())
            .take(8)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let [user, nice, system, _idle, _iowait, _irq, _softirq, steal] = fields[..] else {
            return None;
        };
        ticks += user + nice + system + steal;
    }
    Some(ticks as f64 / per_second as f64)
}

/// A `kB` line (such as `VmRSS:`) of `/proc/<pid>/status`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Raises this process's open-file limit to its hard limit (children inherit
/// it), returning the new soft limit.
pub fn raise_open_files() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the one struct passed in.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

/// Checks the pure parts of this module; panics on the first failure.
pub fn self_check() {
    assert_eq!(
        banner_port("  http://127.0.0.1:4000   (this computer only)"),
        Some(4000)
    );
    assert_eq!(banner_port("http://127.0.0.1:51234"), Some(51234));
    assert_eq!(banner_port("  http://192.168.1.5:4000"), None);
    assert!(
        cpu_seconds(std::process::id()).is_some(),
        "/proc/self/stat is readable"
    );
    assert!(status_kib(std::process::id(), "VmRSS:").is_some_and(|kib| kib > 0));
    assert!(busy_seconds(&allowed_cpus()).is_some_and(|s| s > 0.0));
    for key in [
        "lanboard", "memory", "original", "ceiling", "redis1", "redis3", "redis16",
    ] {
        let kind = Kind::parse(key).expect("a known server name");
        assert_eq!(kind.key(), key);
    }
    assert_eq!(Kind::parse("redis2").map(Kind::nodes), Some(2));
    assert_eq!(
        Kind::parse("redis2").map(Kind::label).as_deref(),
        Some("redis, 2 nodes")
    );
    for bad in ["redis", "redis0", "redis17", "redisx", "Redis1", "sqlite"] {
        assert_eq!(Kind::parse(bad), None, "{bad}");
    }
    let log = "[2026-01-01T00:00:00Z INFO  lanboard::session] 127.0.0.1:5 connected (1 online)\n\
               [2026-01-01T00:00:01Z WARN  lanboard::store::redis] lost Redis at redis://x\n\
               [2026-01-01T00:00:02Z INFO  lanboard::board] connection 7 is too slow to keep up; disconnecting it\n\
               [2026-01-01T00:00:03Z ERROR lanboard::http] reading messages failed: x\n";
    let found = notable(log);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].contains("lost Redis") && found[2].contains("reading messages failed"));
}

/// A loopback port that is free right now.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// A fresh log file at `path`, as two handles: a process's stdout and stderr.
pub fn log_file(path: &Path) -> Result<(File, File), String> {
    let output = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let errors = output.try_clone().map_err(|e| e.to_string())?;
    Ok((output, errors))
}
