//! The SIP server's UDP input: the socket read into a queue of our own, served by priority,
//! and overload control switched by how long new requests waited (see `sip::admission`).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::{bump, dispatch, send_udp, stopped, SipShared};
use crate::session::backend::MediaBackend;
use crate::sip::admission::{priority, InputQueue, Overflow, Queued, Shedder};
use crate::sip::message::{build_response, ReplyContext};
use crate::sip::parse::{ParseError, MAX_MESSAGE_LEN};
use crate::sip::transport::Transport;
use crate::time;

/// Overload signal: how long a datagram waited in the UDP input queue (the kernel stamps
/// each one, `SO_TIMESTAMPNS`). New INVITEs are refused once one waited this long, well
/// before T1 (500 ms), when the peers' retransmissions would multiply the load: at 5,000
/// calls/s offered with digest auth the queue grew to seconds, nearly every BYE was
/// retransmitted and goodput fell to a third of capacity. Shorter waits (the control thread
/// descheduled on a shared machine for a moment, a generator's burst, one long pass of the
/// control thread's housekeeping) do not refuse calls: at 100 ms, single stalls of the
/// relay refused ~300 calls in a 2,000 calls/s step that it otherwise held.
const SHED_DELAY_ON_NS: u64 = 250_000_000;

/// Refusing stops once a datagram waited less than this (or the queue is empty).
const SHED_DELAY_OFF_NS: u64 = 50_000_000;

/// Datagrams read from a UDP socket in one round, before queued ones are served.
const DRAIN_MAX: usize = 256;

/// Datagrams served between two reads of the socket: what arrives for admitted calls waits
/// at most this many messages' work before it is queued ahead of new requests.
const SERVE_BATCH: usize = 16;

/// Most datagrams queued in user space per UDP socket (~1 KB each). Beyond it new requests
/// are dropped unanswered, oldest first (their senders retransmit); at 5,000 calls/s offered
/// the queue holds a quarter of a second of new requests when shedding starts.
const INPUT_QUEUE_CAP: usize = 16_384;

/// Serves one UDP socket; the one that `sheds` drives overload control.
///
/// The socket is read empty into an [`InputQueue`] (at most [`DRAIN_MAX`] datagrams a round)
/// and served by priority, [`SERVE_BATCH`] at a time, so that what belongs to calls already
/// admitted never waits behind new INVITEs (`sip::admission`). How long each new request
/// waited since the kernel queued it (`SO_TIMESTAMPNS`; without stamps, since it was read)
/// switches overload control on and off.
pub(super) async fn udp_loop<B: MediaBackend + 'static>(
    shared: Arc<SipShared<B>>,
    udp: Arc<UdpSocket>,
    shutdown: watch::Receiver<bool>,
    sheds: bool,
) -> anyhow::Result<()> {
    // One byte more than the largest message, to tell "exactly the limit" from "more".
    let mut buf = vec![0u8; MAX_MESSAGE_LEN + 1];
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    if let Err(e) = crate::dataplane::stamped::enable(udp.as_fd()) {
        tracing::warn!(error = %e, "SIP socket: no receive timestamps; overload is judged by the wait after reading");
    }
    let mut queue: InputQueue<(Vec<u8>, SocketAddr)> = InputQueue::new(INPUT_QUEUE_CAP);
    let mut shed = Shedder::new(SHED_DELAY_ON_NS, SHED_DELAY_OFF_NS);
    loop {
        // 1. Read what the socket holds.
        let mut dry = false;
        for _ in 0..DRAIN_MAX {
            match crate::dataplane::stamped::recv(udp.as_fd(), &mut buf) {
                Ok(d) => {
                    take_datagram(&shared, &mut queue, &buf, d).await;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    dry = true;
                    break;
                }
                // ICMP errors from earlier sends surface here; keep serving.
                Err(e) => tracing::debug!(error = %e, "SIP UDP receive error"),
            }
        }
        // 2. Serve the most urgent of what is queued.
        for _ in 0..SERVE_BATCH {
            let Some(q) = queue.pop() else {
                break;
            };
            if sheds {
                let waited = unix_now_ns().saturating_sub(q.queued_ns);
                if let Some(on) = shed.serving(q.priority, waited) {
                    shared.set_shedding(on);
                }
            }
            let (data, peer) = q.item;
            bump(&shared.stats.udp_received);
            let out = shared.incoming(&data, peer, Transport::Udp);
            dispatch(&shared, out).await;
        }
        if !queue.is_empty() || !dry {
            // Let the timer and connection tasks in between batches.
            tokio::task::yield_now().await;
            continue;
        }
        // 3. Nothing left: wait for the next datagram.
        if sheds {
            if let Some(on) = shed.idle() {
                shared.set_shedding(on);
            }
        }
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                r = udp.readable() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "SIP UDP readiness error");
                    }
                }
            }
            // Through `try_io`, so that a stale readiness is cleared when nothing is there.
            let got = udp.try_io(tokio::io::Interest::READABLE, || {
                crate::dataplane::stamped::recv(udp.as_fd(), &mut buf)
            });
            match got {
                Ok(d) => {
                    take_datagram(&shared, &mut queue, &buf, d).await;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::debug!(error = %e, "SIP UDP receive error");
                    break;
                }
            }
        }
    }
}

/// Now on the clock the kernel stamps datagrams with (ns since the Unix epoch).
fn unix_now_ns() -> u64 {
    u64::try_from(time::unix_now().as_nanos()).unwrap_or(u64::MAX)
}

/// One datagram read: too large ones are answered or dropped, keep-alives counted, anything
/// else queued by priority.
async fn take_datagram<B: MediaBackend + 'static>(
    shared: &Arc<SipShared<B>>,
    queue: &mut InputQueue<(Vec<u8>, SocketAddr)>,
    buf: &[u8],
    d: crate::dataplane::stamped::Stamped,
) {
    let Some(data) = buf.get(..d.len) else {
        return;
    };
    if d.len > shared.cfg.max_message {
        bump(&shared.stats.too_large);
        if let Some(r) = transport_reject(data, ParseError::TooLarge) {
            bump(&shared.stats.transport_rejects);
            send_udp(shared, d.peer, &r).await;
        }
        return;
    }
    if is_keepalive(data) {
        bump(&shared.stats.keepalives);
        return;
    }
    let queued = Queued {
        priority: priority(data),
        queued_ns: d.queued_unix_ns.unwrap_or_else(unix_now_ns),
        item: (data.to_vec(), d.peer),
    };
    if queue.push(queued) != Overflow::None {
        bump(&shared.stats.input_dropped);
    }
}

/// Whether the bytes hold nothing but CR/LF (a keep-alive).
pub(super) fn is_keepalive(data: &[u8]) -> bool {
    !data.is_empty() && data.iter().all(|&b| b == b'\r' || b == b'\n')
}

/// The error response for a request the transport cannot hand to the proxy (too large or
/// unframable), if the bytes look like a request with at least one Via.
pub(super) fn transport_reject(data: &[u8], e: ParseError) -> Option<Vec<u8>> {
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    let first = data.get(start..start + 4)?;
    if first.eq_ignore_ascii_case(b"SIP/") {
        return None; // never answer a response
    }
    let ctx = ReplyContext::salvage(data);
    if ctx.vias.is_empty() {
        return None;
    }
    Some(build_response(
        &ctx,
        e.status(),
        e.reason_phrase(),
        None,
        &[],
    ))
}
