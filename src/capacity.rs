//! How many connections one node can hold: every open page is a socket,
//! every socket an open file, and the process's open-file limit caps them.
//!
//! Many systems start programs with a soft limit of 1,024 open files while
//! allowing far more (the hard limit): a board left at the soft limit turns
//! away the 1,000th phone in a hall. The board raises its soft limit to the
//! hard one at start, as far as the system lets it, and says in the banner
//! how many connections that holds when it is fewer than a hall needs.

/// Open files a node uses besides its connections: the database and its
/// journal for each connection to it, Redis connections, the listener,
/// the runtime's event queues and wake-ups, logs. A running node holds
/// about 30; the rest is room for uploads and the blocking pool.
pub const RESERVED_FILES: u64 = 100;

/// Below this many connections the banner says how many a node can hold.
pub const BANNER_BELOW: u64 = 10_000;

/// The open-file limit once raised, and what it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit now in force.
    pub limit: u64,
    /// The soft limit the process started with.
    pub was: u64,
}

impl OpenFiles {
    /// How many connections fit beside the node's own files.
    pub fn connections(self) -> u64 {
        self.limit.saturating_sub(RESERVED_FILES)
    }

    /// The banner's line when the limit holds fewer connections than
    /// [`BANNER_BELOW`].
    pub fn notice(self) -> Option<String> {
        let connections = self.connections();
        (connections < BANNER_BELOW).then(|| {
            format!(
                "Connections: up to {connections} at once (open-file limit {}); \
                 raise it with `ulimit -n` to serve more.",
                self.limit
            )
        })
    }
}

/// Raises the soft open-file limit to the hard limit (on macOS, to the most
/// the kernel gives one process when the hard limit is unlimited), and
/// returns the limit in force. `None` where there is no such limit, or it
/// cannot be read.
#[cfg(unix)]
// `rlim_t` is 64 bits on most Unix targets, 32 on some: the casts stay.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_files() -> Option<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let was = limit.rlim_cur;
    // macOS refuses a soft limit above OPEN_MAX (10,240) even when the hard
    // limit is unlimited; try that next.
    for wanted in [limit.rlim_max, limit.rlim_max.min(10_240)] {
        if wanted <= limit.rlim_cur {
            break;
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = wanted;
            break;
        }
    }
    Some(OpenFiles {
        limit: limit.rlim_cur as u64,
        was: was as u64,
    })
}

/// Windows has no per-process limit on sockets to raise.
#[cfg(not(unix))]
pub fn raise_open_files() -> Option<OpenFiles> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_holds_its_limit_less_its_own_files() {
        let files = OpenFiles {
            limit: 20_000,
            was: 1_024,
        };
        assert_eq!(files.connections(), 20_000 - RESERVED_FILES);
        assert_eq!(files.notice(), None);
    }

    #[test]
    fn the_banner_names_a_limit_too_small_for_a_hall() {
        let files = OpenFiles {
            limit: 1_024,
            was: 1_024,
        };
        let notice = files.notice().expect("1,024 files is below a hall");
        assert!(notice.contains("up to 924 at once"), "{notice}");
        assert!(notice.contains("ulimit -n"), "{notice}");
    }

    #[cfg(unix)]
    #[test]
    #[allow(clippy::unnecessary_cast)]
    fn raising_reaches_the_hard_limit() {
        let raised = raise_open_files().expect("a Unix process has an open-file limit");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the limit into the struct it is given.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(raised.limit, limit.rlim_cur as u64);
        assert!(raised.limit >= raised.was);
        if !cfg!(target_os = "macos") {
            assert_eq!(limit.rlim_cur, limit.rlim_max);
        }
    }
}
