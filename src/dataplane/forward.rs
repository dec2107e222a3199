//! The forwarding decision for one datagram, the same for both engines: classify, track,
//! latch, pick the destination. It touches only the worker's own slots and single-writer
//! counters: no allocation, no locks, no logging (events go to a bounded lock-free queue).
//! What the in-kernel fast path must do first for a direction it holds is the worker core's
//! business ([`super::core::WorkerCore::receive`]), between [`admit`] and [`decide`].

use std::net::SocketAddr;
use std::os::fd::RawFd;

use crossbeam::queue::ArrayQueue;

use crate::rtp::demux::{classify, PacketKind};
use crate::rtp::packet::RtpPacket;
use crate::rtp::rtcp;
use crate::rtp::stats::RtpHeader;
use crate::session::backend::{LatchEventKind, MediaEvent};
use crate::session::latch::{LatchEvent, LatchVerdict};
use crate::time::Nanos;

use super::shared::{bump, WorkerCounters};
use super::slot::{Conn, DirtyList, Slot, SlotIdx, SlotKind};
use super::spares::Spares;

/// Worker-wide settings the packet path needs.
#[derive(Clone, Copy, Debug)]
pub struct PathConfig {
    /// Drop what is not valid RTP/RTCP instead of counting and forwarding it.
    pub strict: bool,
    /// Gather bursts for one destination into UDP GSO sends (asked for, and the kernel has it).
    pub gso: bool,
    /// Connect a socket to its endpoint's locked source while the latch holds it, so sends
    /// skip the per-send route lookup (io_uring engine without the in-kernel fast path).
    pub connect: bool,
    /// io_uring: microseconds a worker waking from sleep may wait to batch completions.
    pub batch_wait_us: u32,
}

/// Where to send a datagram: out of `slot`'s socket to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub slot: SlotIdx,
    pub fd: RawFd,
    /// io_uring: send through the fixed file at index `slot` rather than `fd`.
    pub fixed: bool,
    /// The out slot's generation now: a send redone later (a refused GSO send) checks that
    /// the socket still belongs to the same stream.
    pub generation: u32,
    pub dst: SocketAddr,
    /// The out socket is connected to `dst`: the send names no address.
    pub connected: bool,
}

fn event_kind(e: LatchEvent) -> (LatchEventKind, SocketAddr) {
    match e {
        LatchEvent::Learned(a) => (LatchEventKind::Learned, a),
        LatchEvent::Confirmed(a) => (LatchEventKind::Confirmed, a),
        LatchEvent::Relearned { new, .. } => (LatchEventKind::Relearned, new),
    }
}

/// What [`decide`] needs from its worker besides the slots.
pub struct PacketCtx<'a> {
    pub cfg: PathConfig,
    pub counters: &'a WorkerCounters,
    pub events: &'a ArrayQueue<MediaEvent>,
    pub dirty: &'a mut DirtyList,
    /// Records a direction's first packet takes instead of allocating.
    pub spares: &'a mut Spares,
}

/// Takes a received datagram's control area (`SO_RXQ_OVFL`: the socket's running drop count,
/// present once the kernel has dropped anything) and counts the new kernel drops for
/// `slots[idx]`. An empty area, the common case, costs one length check.
#[inline]
pub fn note_control(slots: &mut [Slot], idx: SlotIdx, control: &[u8], counters: &WorkerCounters) {
    if control.is_empty() {
        return;
    }
    if let (Some(n), Some(s)) = (super::cmsg::rxq_ovfl(control), slots.get_mut(idx.index())) {
        bump(&counters.drop_rcvbuf, u64::from(s.note_kernel_drops(n)));
    }
}

/// Counts a datagram of `len` bytes received on `slots[idx]` and returns the slot if it
/// takes the datagram: its socket is live and its stream not closed. Otherwise the datagram
/// is counted stale and goes no further.
#[inline]
pub fn admit<'s>(
    slots: &'s [Slot],
    idx: SlotIdx,
    len: usize,
    counters: &WorkerCounters,
) -> Option<&'s Slot> {
    bump(&counters.rx_packets, 1);
    bump(&counters.rx_bytes, len as u64);
    match slots.get(idx.index()) {
        Some(s)
            if s.is_live()
                && !s
                    .shared
                    .as_deref()
                    .is_some_and(|sh| sh.closed.load(std::sync::atomic::Ordering::Relaxed)) =>
        {
            Some(s)
        }
        _ => {
            bump(&counters.drop_stale, 1);
            None
        }
    }
}

/// Decides what happens to one datagram received on `slots[idx]` from `src` at `now`, once
/// [`admit`] took it.
#[inline]
pub fn decide(
    slots: &mut [Slot],
    idx: SlotIdx,
    src: SocketAddr,
    pkt: &[u8],
    now: Nanos,
    ctx: &mut PacketCtx<'_>,
) -> Option<Forward> {
    let counters = ctx.counters;
    let cfg = ctx.cfg;
    let events = ctx.events;
    let len = pkt.len() as u64;
    let slot = slots.get_mut(idx.index())?;
    let mut valid = true;
    // Tracked only once the latch accepts the source: a stranger's packets must not move
    // the stream's figures.
    let mut track = None;
    let class = classify(pkt);
    let is_rtcp = match (slot.kind, class) {
        (SlotKind::Rtp, PacketKind::Rtp) => {
            match RtpPacket::new_checked(pkt) {
                Ok(rtp) => track = Some(RtpHeader::of(&rtp)),
                Err(_) => {
                    bump(&counters.malformed_rtp, 1);
                    valid = false;
                }
            }
            false
        }
        (_, PacketKind::Rtcp) => {
            bump(&counters.rtcp_packets, 1);
            if let Some(sh) = slot.side_shared() {
                let r = &sh.rtcp.get_or_put(|| ctx.spares.rtcp()).report;
                let res = rtcp::for_each_report_block(pkt, |_, rb| {
                    r.on_block(rb);
                })
                .and_then(|_| {
                    rtcp::for_each_sender_info(pkt, |_, si| {
                        r.on_sender_report(si.ntp_middle32(), now);
                    })
                });
                if res.is_err() {
                    bump(&counters.malformed_rtcp, 1);
                    valid = false;
                }
            }
            true
        }
        (SlotKind::Rtcp, _) => {
            bump(&counters.malformed_rtcp, 1);
            valid = false;
            true
        }
        (SlotKind::Rtp, _) => {
            #[cfg(feature = "fault-injection")]
            super::fault::check(pkt);
            bump(&counters.non_rtp, 1);
            valid = false;
            false
        }
    };

    let sh = slot.counters_for_packet(ctx.spares);
    if let Some(sh) = sh {
        bump(&sh.packets, 1);
        bump(&sh.bytes, len);
        sh.last_packet_ns
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }
    if !valid && cfg.strict {
        bump(&counters.drop_strict, 1);
        if let Some(sh) = sh {
            bump(&sh.errors, 1);
        }
        return None;
    }

    match slot.latch.on_packet(src, now) {
        LatchVerdict::Reject => {
            bump(&counters.drop_source, 1);
            if let Some(sh) = slot.counters() {
                bump(&sh.errors, 1);
            }
            return None;
        }
        LatchVerdict::Accept(Some(e)) => {
            let (kind, addr) = event_kind(e);
            let ev = MediaEvent {
                stream: slot.stream,
                side: slot.side,
                rtcp: slot.kind == SlotKind::Rtcp,
                kind,
                addr,
            };
            if events.push(ev).is_err() {
                bump(&counters.events_lost, 1);
            }
        }
        LatchVerdict::Accept(None) => {}
    }
    if let (Some(header), Some(st)) = (track, slot.rtp.as_deref_mut()) {
        let hz = st
            .clock_rates
            .clock_rate_hz(header.payload_type)
            .unwrap_or(0);
        st.tracker.to_update(ctx.spares).on_rtp(header, now, hz);
        if !slot.dirty {
            slot.dirty = true;
            ctx.dirty.mark(idx);
        }
    }

    // RTCP goes to the peer's RTCP socket unless the peer multiplexes it onto RTP.
    let peer_rtp = slot.peer_rtp;
    let peer_rtcp = slot.peer_rtcp;
    let target = if is_rtcp {
        match slots.get(peer_rtp.index()) {
            Some(p) if p.rtcp_mux => peer_rtp,
            _ => peer_rtcp,
        }
    } else {
        peer_rtp
    };
    let out = match slots.get(target.index()) {
        Some(o) if o.is_live() => o,
        _ => {
            bump(&counters.drop_no_destination, 1);
            return None;
        }
    };
    match out.latch.destination() {
        Some(dst) if !dst.ip().is_unspecified() && dst.port() != 0 => Some(Forward {
            slot: target,
            fd: out.fd(),
            fixed: out.fixed,
            generation: out.generation,
            dst,
            connected: out.conn == Conn::On && out.latch.locked_peer() == Some(dst),
        }),
        _ => {
            bump(&counters.drop_no_destination, 1);
            if let Some(sh) = slots.get(idx.index()).and_then(|s| s.counters()) {
                bump(&sh.errors, 1);
            }
            None
        }
    }
}
