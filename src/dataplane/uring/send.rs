//! Sending forwarded datagrams straight out of their receive buffers: each buffer has its
//! own send state (iovec, destination), which must stay untouched until the send's
//! completion arrives. A datagram sent by itself goes as a `Send` naming its destination
//! (a `sendto`), which costs the kernel less than a `SendMsg`: no msghdr to copy in, no
//! iovec to import. Consecutive datagrams of a batch for one socket and destination go as
//! one UDP GSO send ([`gso`]) from a pool of GSO states; a refused GSO send is redone one
//! datagram at a time. Every buffer goes back to the buffer ring when its send completes or
//! cannot be made.

use io_uring::{opcode, squeue, types};

use crate::dataplane::cmsg;
use crate::dataplane::forward::Forward;
use crate::dataplane::gso;
use crate::dataplane::shared::{bump, WorkerCounters};
use crate::dataplane::slot::{Slot, SlotIdx};
use crate::dataplane::sockaddr;

use super::bufring::{BufRing, NBUFS};
use super::ring::Ring;
use super::token;

/// GSO sends in flight per worker; when all are taken, datagrams go one by one.
const GSO_POOL: usize = 256;

/// Per-buffer send state: must stay untouched until the send's completion arrives.
struct SendState {
    iov: libc::iovec,
    name: libc::sockaddr_storage,
    /// The length of `name`; 0 when the socket is connected and the send names no address.
    namelen: libc::socklen_t,
    /// The relay socket it leaves through (kept for a GSO send that must be redone singly).
    out: OutSocket,
}

/// A relay socket as a send names it, with the owner it had when the datagram was received.
#[derive(Clone, Copy)]
struct OutSocket {
    slot: SlotIdx,
    generation: u32,
    fd: libc::c_int,
    fixed: bool,
}

impl OutSocket {
    #[inline]
    fn of(fwd: &Forward) -> OutSocket {
        OutSocket {
            slot: fwd.slot,
            generation: fwd.generation,
            fd: fwd.fd,
            fixed: fwd.fixed,
        }
    }

    /// A `Send` (`sendto(2)`) of `iov` to `name` (none when `namelen` is 0: a connected
    /// socket) through this socket: its fixed file, or its descriptor. A single datagram
    /// needs no msghdr, and the kernel skips copying one in and importing its iovec.
    #[inline]
    fn send_to(
        &self,
        iov: &libc::iovec,
        name: *const libc::sockaddr,
        namelen: libc::socklen_t,
    ) -> squeue::Entry {
        let buf = iov.iov_base as *const u8;
        let len = iov.iov_len as u32;
        let name = if namelen == 0 { std::ptr::null() } else { name };
        if self.fixed {
            opcode::Send::new(types::Fixed(self.slot.raw()), buf, len)
        } else {
            opcode::Send::new(types::Fd(self.fd), buf, len)
        }
        .dest_addr(name)
        .dest_addr_len(namelen)
        .build()
    }

    /// A `SendMsg` of `hdr` through this socket: its fixed file, or its descriptor.
    #[inline]
    fn send_msg(&self, hdr: &libc::msghdr) -> squeue::Entry {
        if self.fixed {
            opcode::SendMsg::new(types::Fixed(self.slot.raw()), hdr).build()
        } else {
            opcode::SendMsg::new(types::Fd(self.fd), hdr).build()
        }
    }
}

/// One GSO send in flight: its own msghdr, the segments' iovecs (each pointing into its
/// receive buffer, as single sends do) and the buffers it holds.
struct GsoSend {
    hdr: libc::msghdr,
    control: cmsg::ControlArea<{ cmsg::UDP_SEGMENT_SPACE }>,
    iovs: [libc::iovec; gso::MAX_SEGMENTS],
    group: gso::Group,
}

/// What a send needs from its worker: the ring to submit on, the buffer ring to give
/// buffers back to, and the counters.
pub struct SendCtx<'a> {
    pub ring: &'a mut Ring,
    pub bufs: &'a mut BufRing,
    pub counters: &'a WorkerCounters,
}

/// A worker's send states: one per receive buffer, and the pool of GSO sends.
pub struct Sender {
    sends: Vec<SendState>,
    gso_sends: Vec<GsoSend>,
    gso_free: Vec<u16>,
    gather: gso::Gatherer,
}

impl Sender {
    /// `gso`: gather datagrams into GSO sends (asked for, and the kernel has it).
    pub fn new(gso: bool) -> Sender {
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let sends = (0..NBUFS)
            .map(|_| SendState {
                iov: zero_iov,
                // SAFETY: all-zero is a valid value for this plain C struct.
                name: unsafe { std::mem::zeroed() },
                namelen: 0,
                out: OutSocket {
                    slot: SlotIdx::NONE,
                    generation: 0,
                    fd: -1,
                    fixed: false,
                },
            })
            .collect();
        let gso_sends = (0..GSO_POOL)
            .map(|_| GsoSend {
                // SAFETY: as above.
                hdr: unsafe { std::mem::zeroed() },
                control: cmsg::ControlArea::zeroed(),
                iovs: [zero_iov; gso::MAX_SEGMENTS],
                group: gso::Group::default(),
            })
            .collect();
        Sender {
            sends,
            gso_sends,
            gso_free: (0..GSO_POOL as u16).rev().collect(),
            gather: gso::Gatherer::new(gso),
        }
    }

    /// Fills buffer `bid`'s send state for `payload` (which lies in that buffer) going where
    /// `fwd` says, and adds it to the group being gathered. Returns a group ready to send.
    #[inline]
    pub fn stage(&mut self, bid: u16, payload: &[u8], fwd: &Forward) -> Option<gso::Group> {
        let st = &mut self.sends[usize::from(bid)];
        st.iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        // A socket connected to `dst` is sent to naming no address: that skips the route
        // lookup.
        st.namelen = if fwd.connected {
            0
        } else {
            sockaddr::write(fwd.dst, &mut st.name)
        };
        st.out = OutSocket::of(fwd);
        let route = gso::Route {
            slot: fwd.slot.raw(),
            dst: fwd.dst,
        };
        self.gather.push(route, payload.len(), bid)
    }

    /// Sends the group still being gathered, at the end of a turn.
    pub fn flush(&mut self, cx: &mut SendCtx<'_>) {
        if let Some(g) = self.gather.take() {
            self.send_group(g, cx);
        }
    }

    /// Sends a gathered group: one datagram as a plain send, several as one GSO send (or
    /// one by one when every GSO state is in flight).
    pub fn send_group(&mut self, g: gso::Group, cx: &mut SendCtx<'_>) {
        let ids = g.ids();
        let (&first, more) = match ids.split_first() {
            Some(x) => x,
            None => return,
        };
        if more.is_empty() {
            self.send_single(first, cx);
            return;
        }
        let Some(k) = self.gso_free.pop() else {
            for &bid in ids {
                self.send_single(bid, cx);
            }
            return;
        };
        let head = &mut self.sends[usize::from(first)];
        // The head's name, or none when its socket is connected (see `stage`).
        let namelen = head.namelen;
        let name: *mut libc::c_void = if namelen == 0 {
            std::ptr::null_mut()
        } else {
            (&mut head.name as *mut libc::sockaddr_storage).cast()
        };
        let out = head.out;
        let gs = &mut self.gso_sends[usize::from(k)];
        for (iov, &bid) in gs.iovs.iter_mut().zip(ids) {
            *iov = self.sends[usize::from(bid)].iov;
        }
        cmsg::write_udp_segment(&mut gs.control.0, g.seg_len);
        gs.hdr.msg_name = name;
        gs.hdr.msg_namelen = namelen;
        gs.hdr.msg_iov = gs.iovs.as_mut_ptr();
        gs.hdr.msg_iovlen = ids.len() as _;
        gs.hdr.msg_control = gs.control.0.as_mut_ptr().cast();
        gs.hdr.msg_controllen = cmsg::UDP_SEGMENT_SPACE as _;
        gs.group = g;
        let e = out
            .send_msg(&gs.hdr)
            .user_data(token::item(token::KIND_GSO, k));
        if !cx.ring.push_sqe(e) {
            bump(&cx.counters.drop_overload, u64::from(g.count));
            for &bid in g.ids() {
                cx.bufs.recycle(bid);
            }
            self.gso_free.push(k);
        }
    }

    /// Sends the datagram in buffer `bid` by itself (its state was filled on receipt).
    fn send_single(&mut self, bid: u16, cx: &mut SendCtx<'_>) {
        let st = &self.sends[usize::from(bid)];
        let e = st
            .out
            .send_to(
                &st.iov,
                (&st.name as *const libc::sockaddr_storage).cast(),
                st.namelen,
            )
            .user_data(token::item(token::KIND_SEND, bid));
        if !cx.ring.push_sqe(e) {
            bump(&cx.counters.drop_overload, 1);
            cx.bufs.recycle(bid);
        }
    }

    /// A single send of buffer `bid` finished with `res` (bytes sent, or -errno).
    #[inline]
    pub fn on_sent(&mut self, bid: u16, res: i32, cx: &mut SendCtx<'_>) {
        if res < 0 {
            bump(&cx.counters.drop_send_failed, 1);
        } else {
            bump(&cx.counters.tx_packets, 1);
            bump(&cx.counters.tx_bytes, res as u64);
        }
        cx.bufs.recycle(bid);
    }

    /// GSO send `k` finished. On success every segment left; on failure (a path that cannot
    /// take the segment size, say) each datagram is sent again by itself, if its socket
    /// still belongs to the same stream.
    pub fn on_gso_sent(&mut self, k: u16, res: i32, slots: &[Slot], cx: &mut SendCtx<'_>) {
        let Some(gs) = self.gso_sends.get(usize::from(k)) else {
            return;
        };
        let g = gs.group;
        self.gso_free.push(k);
        let c = cx.counters;
        if res >= 0 {
            bump(&c.tx_packets, u64::from(g.count));
            bump(&c.tx_bytes, res as u64);
            bump(&c.gso_sends, 1);
            bump(&c.gso_segments, u64::from(g.count));
            for &bid in g.ids() {
                cx.bufs.recycle(bid);
            }
            return;
        }
        bump(&c.gso_failed, 1);
        let out = g.ids().first().map(|&b| self.sends[usize::from(b)].out);
        let current = out.is_some_and(|o| {
            slots
                .get(o.slot.index())
                .is_some_and(|s| s.generation == o.generation && s.is_live())
        });
        for &bid in g.ids() {
            if current {
                self.send_single(bid, cx);
            } else {
                bump(&c.drop_stale, 1);
                cx.bufs.recycle(bid);
            }
        }
    }
}
