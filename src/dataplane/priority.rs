//! Thread priorities: control threads get a short scheduler slice (so signalling preempts
//! busy workers at once), or, where the kernel has none, the workers step down in nice.

/// Signalling must stay fast while media saturates every core, and a burst of signalling must
/// not starve media. Control threads therefore ask the scheduler for a short time slice
/// (EEVDF's per-task slice, `sched_setattr` with `sched_runtime`, Linux 6.12+): a woken control
/// thread then preempts a busy worker at once, yet gets no larger *share* of the CPU than a
/// worker. (An earlier nice -5 for control threads did the first and not the second: 36k ng
/// requests/s pushed media p99 from 43 us to 122 ms on a shared core.) Where the kernel has
/// no per-task slice, the workers step down to nice +5 instead.
const WORKER_NICE_FALLBACK: libc::c_int = 5;
/// The control threads' slice: a tenth of a millisecond is far more than one ng request or SIP
/// message needs, and the smallest slice the kernel accepts.
pub(super) const CONTROL_SLICE_NS: u64 = 100_000;

pub(super) fn lower_priority(control_slice_ok: bool) {
    if !control_slice_ok {
        set_thread_nice(WORKER_NICE_FALLBACK);
    }
}

/// `struct sched_attr` (include/uapi/linux/sched/types.h), which the libc crate lacks.
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// The calling thread's nice value (0 if it cannot be read).
pub(super) fn thread_nice() -> i32 {
    // SAFETY: gettid takes no arguments; __errno_location returns this thread's errno cell,
    // written before and read after getpriority (whose -1 may be a nice value or an error).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
        if nice == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            nice
        }
    }
}

/// Sets the calling thread's fair-scheduler slice (0 = the kernel default), keeping its
/// nice value (`sched_setattr` sets both: a relay started with `nice -n -5`, or systemd's
/// `Nice=`, kept its priority on every thread but the control threads). False when the
/// kernel does not support a per-task slice.
pub(super) fn set_thread_slice(slice_ns: u64) -> bool {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: thread_nice(),
        sched_priority: 0,
        sched_runtime: slice_ns,
        sched_deadline: 0,
        sched_period: 0,
        sched_util_min: 0,
        sched_util_max: 0,
    };
    // SAFETY: sched_setattr reads `size` bytes from a live, fully initialised struct of
    // exactly that size; pid 0 names the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    rc == 0
}

/// Whether control threads can get their short slice here: tried on the calling thread and
/// undone at once. A kernel before 6.12 accepts the call but ignores the slice, so the
/// version is checked as well.
pub(super) fn control_slice_supported() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (6, 12) {
        return false;
    }
    let ok = set_thread_slice(CONTROL_SLICE_NS);
    if ok {
        set_thread_slice(0);
    }
    ok
}

/// Called on each control-plane thread as it starts (tokio's `on_thread_start`).
pub fn prioritize_control_thread() {
    set_thread_slice(CONTROL_SLICE_NS);
}

/// Sets the calling thread's nice value (best effort: lowering priority always works,
/// raising it needs CAP_SYS_NICE).
pub fn set_thread_nice(nice: libc::c_int) {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours; a
    // failure only leaves the thread at its current priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}
