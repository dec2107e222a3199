//! Which engine the data plane's workers run (io_uring or recvmmsg/sendmmsg), and the
//! start-up sums that go with it: the descriptor limit raised and read, and how many rings a
//! worker thread needs for its sockets.

use crate::config::IoEngine;

use super::uring;

/// Which engine the workers run, and why (logged once at start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    Uring,
    Mmsg { reason: String },
}

impl EngineChoice {
    pub fn name(&self) -> &'static str {
        match self {
            EngineChoice::Uring => "io_uring",
            EngineChoice::Mmsg { .. } => "recvmmsg/sendmmsg",
        }
    }
}

/// Decides the engine: forced by config, or io_uring when a probe ring with the features we
/// use can be built here (it fails under old kernels and container seccomp profiles).
pub fn choose_engine(wanted: IoEngine) -> EngineChoice {
    match wanted {
        IoEngine::Mmsg => EngineChoice::Mmsg {
            reason: "forced by --io-engine mmsg".into(),
        },
        IoEngine::Uring | IoEngine::Auto => match uring::probe() {
            Ok(()) => EngineChoice::Uring,
            Err(e) if wanted == IoEngine::Auto => EngineChoice::Mmsg {
                reason: format!("io_uring unavailable: {e}"),
            },
            Err(e) => EngineChoice::Mmsg {
                reason: format!("io_uring forced but unavailable ({e}); falling back"),
            },
        },
    }
}

/// Descriptors kept free at least (`--spare-descriptors`).
pub(super) const MIN_SPARE_DESCRIPTORS: usize = 64;

/// Rings per worker thread: as asked, or the fewest whose fixed-file tables hold the
/// sockets of the thread's share of the port range that its share of spare descriptors does
/// not (one ring when sockets stay descriptors).
pub(super) fn rings_per_thread(
    asked: Option<u32>,
    fixed_files: u32,
    beyond_descriptors: usize,
) -> usize {
    let max = crate::config::MAX_URING_RINGS as usize;
    match asked {
        Some(n) => (n as usize).clamp(1, max),
        None if fixed_files == 0 => 1,
        None => beyond_descriptors
            .div_ceil(fixed_files as usize)
            .clamp(1, max),
    }
}

/// The soft RLIMIT_NOFILE (after [`raise_fd_limit`]).
pub(super) fn fd_soft_limit() -> u32 {
    nofile_limit().map_or(0, |l| u32::try_from(l.rlim_cur).unwrap_or(u32::MAX))
}

/// The process's RLIMIT_NOFILE, if it can be read.
fn nofile_limit() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit struct.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// Each stream holds four sockets; the default soft limit of 1024 descriptors would cap the
/// relay at ~250 streams. Raise the soft limit to the hard one (and the hard one too where
/// we may).
pub(super) fn raise_fd_limit() {
    let Some(lim) = nofile_limit() else {
        return;
    };
    let want = 1u64 << 20;
    let try_raise = |cur: u64, max: u64| {
        let l = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 }
    };
    if lim.rlim_max < want && try_raise(want, want) {
        return;
    }
    try_raise(lim.rlim_max, lim.rlim_max);
}

#[cfg(test)]
mod tests {
    use super::rings_per_thread;

    #[test]
    fn a_worker_gets_the_fewest_rings_whose_tables_hold_its_sockets() {
        // Sockets beyond the descriptors to spare: none, or up to one table of 20,000.
        assert_eq!(rings_per_thread(None, 20_000, 0), 1);
        assert_eq!(rings_per_thread(None, 20_000, 20_000), 1);
        // 43,000 ports on one worker with 15,000 descriptors to spare: 28,000 in tables.
        assert_eq!(rings_per_thread(None, 20_000, 43_000 - 15_000), 2);
        assert_eq!(rings_per_thread(None, 20_000, 40_001), 3);
        // Capped, and one ring when sockets stay descriptors.
        assert_eq!(rings_per_thread(None, 100, 1_000_000), 8);
        assert_eq!(rings_per_thread(None, 0, 1_000_000), 1);
        // Asked for, within 1-8.
        assert_eq!(rings_per_thread(Some(3), 20_000, 10), 3);
        assert_eq!(rings_per_thread(Some(0), 20_000, 10), 1);
        assert_eq!(rings_per_thread(Some(99), 20_000, 10), 8);
    }
}
