//! Test-only fault injection (cargo feature `fault-injection`, switched on for test builds
//! by the crate's dev-dependency on itself; never in a release build or package): a
//! datagram that makes a worker's packet handling panic, so tests can show the worker
//! contains it (the packet dropped and counted, every other stream still relayed).

/// A datagram that starts with these bytes panics in the forwarding decision of an RTP
/// slot. Its first byte (0xff) is neither RTP nor RTCP, so the check sits in the branch for
/// non-RTP datagrams and costs RTP packets nothing.
pub const PANIC_PACKET: &[u8] = b"\xffrtpanchor fault injection: panic";

/// Panics when `pkt` is [`PANIC_PACKET`].
#[inline]
pub fn check(pkt: &[u8]) {
    if pkt.starts_with(PANIC_PACKET) {
        panic!("injected data-plane panic");
    }
}

/// A datagram that starts with these bytes panics in the engine's own I/O code (io_uring
/// completion handling or the mmsg receive loop), outside the packet decision's guard, so
/// tests can show the worker's loop restarts with its streams.
pub const IO_PANIC_PACKET: &[u8] = b"\xfertpanchor fault injection: engine panic";

/// A datagram that starts with these bytes stalls the worker thread that reads it for
/// [`STALL`] (in the engine's I/O code): its sockets fill meanwhile, as when the thread is
/// descheduled on a busy machine.
pub const STALL_PACKET: &[u8] = b"\xfertpanchor fault injection: stall";

/// How long [`STALL_PACKET`] stalls a worker.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(2);

/// Panics when `pkt` is [`IO_PANIC_PACKET`], sleeps [`STALL`] when it is [`STALL_PACKET`].
/// One byte compare for any other datagram.
#[inline]
pub fn check_io(pkt: &[u8]) {
    if pkt.first() != Some(&0xfe) {
        return;
    }
    if pkt.starts_with(IO_PANIC_PACKET) {
        panic!("injected data-plane engine panic");
    }
    if pkt.starts_with(STALL_PACKET) {
        std::thread::sleep(STALL);
    }
}

/// A datagram that starts with these bytes makes the io_uring worker lose the receive of the
/// socket it came in on (cancelled, its end not seen): the stall watchdog's case.
pub const LOSE_RECEIVE_PACKET: &[u8] = b"\xfertpanchor fault injection: lose receive";

/// Whether `pkt` is [`LOSE_RECEIVE_PACKET`].
#[inline]
pub fn loses_receive(pkt: &[u8]) -> bool {
    pkt.first() == Some(&0xfe) && pkt.starts_with(LOSE_RECEIVE_PACKET)
}

std::thread_local! {
    /// How many more times this thread's io_uring worker set-up is to fail with ENOMEM.
    static RING_ENOMEM: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Makes the next `n` io_uring worker set-ups on this thread fail with ENOMEM, as the
/// kernel's ring allocation does for a moment when memory is fragmented.
pub fn fail_ring_setup(n: u32) {
    RING_ENOMEM.with(|c| c.set(n));
}

/// An ENOMEM while [`fail_ring_setup`] has failures left on this thread (one used).
pub fn ring_setup() -> std::io::Result<()> {
    RING_ENOMEM.with(|c| match c.get() {
        0 => Ok(()),
        n => {
            c.set(n - 1);
            Err(std::io::Error::from_raw_os_error(libc::ENOMEM))
        }
    })
}
