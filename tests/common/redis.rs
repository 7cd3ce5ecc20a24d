//! A real `redis-server` for tests: its own free loopback port and temp
//! folder, stopped when dropped. Without `redis-server` on the PATH the tests
//! that need it say so loudly and pass, except under `CI=true`, where a
//! missing server fails them: CI must really run them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How Redis keeps its data, as the operator chose in `redis.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// No snapshots, no append-only file: a restart loses everything.
    None,
    /// `appendonly yes` with `appendfsync always`.
    AppendOnly,
}

pub struct Redis {
    pub port: u16,
    persistence: Persistence,
    extra: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Starts a fresh `redis-server`, or returns `None` (after saying so)
    /// when there is none on this machine and CI does not require one.
    pub fn start(persistence: Persistence) -> Option<Redis> {
        Redis::start_with(persistence, &[])
    }

    /// As [`Redis::start`], with extra `redis-server` options such as
    /// `["--maxmemory-policy", "allkeys-lru"]`.
    pub fn start_with(persistence: Persistence, extra: &[&str]) -> Option<Redis> {
        if !available() {
            return None;
        }
        let port = free_port();
        let mut redis = Redis {
            port,
            persistence,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().expect("a temp dir"),
            child: None,
        };
        redis.launch();
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis is running").id()
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already dead is fine; it is reaped below either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and folder (so with
    /// [`Persistence::AppendOnly`] it reloads its data).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Runs one command through `redis-cli` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety effects.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(["--save", "", "--protected-mode", "no", "--daemonize", "no"]);
        match self.persistence {
            Persistence::None => command.args(["--appendonly", "no"]),
            Persistence::AppendOnly => {
                command.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
        };
        command
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(command.spawn().expect("redis-server starts"));
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + super::WAIT;
        while Instant::now() < deadline {
            if ping(addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // A paused server would never die of SIGKILL's reaping wait otherwise.
        if self.child.is_some() {
            self.resume();
        }
        self.kill();
    }
}

/// True when `redis-server` can run here. Under `CI=true` its absence is a
/// failure, since CI installs it.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is not installed, and CI=true requires the Redis tests to run"
        );
        eprintln!(
            "\n*** SKIPPED: redis-server is not installed, so this Redis test did not run. \
             Install it (apt-get install redis-server) to run it. ***\n"
        );
    }
    found
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").port()
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 16];
    stream.write_all(b"PING\r\n").is_ok()
        && stream
            .read(&mut reply)
            .is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
}
