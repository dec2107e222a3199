//! What the control plane and a worker share: the command queue to the worker, the event
//! queue back, the worker's counters and its wake-up eventfd.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::rtp::clock::ClockRates;
use crate::session::backend::{MediaEvent, Side, StreamId};
use crate::session::latch::LatchMode;

use super::shared::{StreamShared, WorkerCounters};

/// Commands queued per worker. Bounded so a stuck worker cannot make the control plane grow
/// without limit; 64k outstanding commands is far more than a second of signalling.
pub const COMMAND_QUEUE: usize = 65_536;
/// Latch events waiting for the control plane; they are rare (a few per call).
pub const EVENT_QUEUE: usize = 65_536;

/// One side's addresses and policy, as the data plane needs them.
#[derive(Clone, Debug)]
pub struct SideInit {
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
    pub rtcp_mux: bool,
    pub latch: LatchMode,
    pub clock_rates: ClockRates,
}

pub struct NewStream {
    pub id: StreamId,
    /// In the order A_RTP, A_RTCP, B_RTP, B_RTCP.
    pub sockets: [OwnedFd; 4],
    /// Their local ports, in the same order.
    pub ports: [u16; 4],
    pub a: SideInit,
    pub b: SideInit,
    pub shared: Arc<StreamShared>,
}

/// A side's RTCP socket bound again, with its port and the side's signalling.
pub struct RtcpOpen {
    pub socket: OwnedFd,
    pub port: u16,
    pub init: SideInit,
}

pub enum Command {
    Add(Box<NewStream>),
    /// Boxed, like `Add`: every slot of the command queue is as large as its largest
    /// command, and the queue is preallocated (resident memory of an idle relay).
    Update {
        id: StreamId,
        side: Side,
        init: Box<SideInit>,
    },
    Remove(StreamId),
    /// A side's separate RTCP socket: closed (`None`: its endpoint muxes RTCP on the RTP
    /// port; the slot is freed) or attached again (a re-offer without mux).
    Rtcp {
        id: StreamId,
        side: Side,
        open: Option<Box<RtcpOpen>>,
    },
    /// A takeover: stop receiving on every socket (the receives in flight end first and what
    /// they brought is relayed), then set [`WorkerShared::paused`]. Datagrams arriving later
    /// stay in the sockets' queues for the process that took them over.
    Pause,
}

/// The handle the control plane keeps for one worker.
pub struct WorkerShared {
    pub commands: ArrayQueue<Command>,
    pub events: ArrayQueue<MediaEvent>,
    pub counters: WorkerCounters,
    pub wake: OwnedFd,
    /// Set by the first command after the worker last woke; later commands see it set and
    /// skip the eventfd write, so a burst of signalling costs one wake-up, not one each.
    pub notified: AtomicBool,
    /// Set by the worker once a [`Command::Pause`] is complete: nothing is being received
    /// and nothing received is still to be sent.
    pub paused: AtomicBool,
}

impl WorkerShared {
    pub fn new() -> std::io::Result<Arc<WorkerShared>> {
        let wake = new_eventfd()?;
        Ok(Arc::new(WorkerShared {
            commands: ArrayQueue::new(COMMAND_QUEUE),
            events: ArrayQueue::new(EVENT_QUEUE),
            counters: WorkerCounters::default(),
            wake,
            notified: AtomicBool::new(false),
            paused: AtomicBool::new(false),
        }))
    }

    /// Queues a command and wakes the worker. Returns the command back if the queue is full.
    pub fn send(&self, cmd: Command) -> Result<(), Command> {
        self.commands.push(cmd)?;
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.wake_worker();
        }
        Ok(())
    }

    /// Queues a command that can wait for the worker's next turn (at most its idle timeout):
    /// tearing a stream down needs no wake-up of its own.
    pub fn send_lazy(&self, cmd: Command) -> Result<(), Command> {
        self.commands.push(cmd)
    }

    /// Called by the worker when it wakes, before it drains the queue.
    fn clear_notified(&self) {
        self.notified.store(false, Ordering::Release);
    }

    /// The worker read a wake-up: clears the eventfd and the notified flag, so the next
    /// command wakes it again. Commands are drained after this.
    pub fn woken(&self) {
        drain_eventfd(&self.wake);
        self.clear_notified();
    }

    fn wake_worker(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd; failure (EAGAIN when the
        // counter is saturated) still leaves the worker awake, so it is ignored.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// A fresh non-blocking eventfd (counter 0).
pub fn new_eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Reads and clears the eventfd counter (non-blocking).
fn drain_eventfd(fd: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64; EAGAIN when nothing is pending is fine.
    unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut v as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        );
    }
}
