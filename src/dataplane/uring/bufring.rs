//! The provided buffer ring: the receive buffers the kernel picks from for every multishot
//! receive of a ring, given back one by one as their datagrams are sent or dropped.
//!
//! The ring's entries live in an anonymous page-aligned mapping (as the kernel requires),
//! one `io_uring_buf` each (address, length, id); the tail the kernel reads is a `u16` that
//! overlaps entry 0's reserved field, kept locally, wrapping, and published with a release
//! store once per turn.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types;

/// Provided buffers per worker (power of two, at most 32768). 4096 x 2 KiB = 8 MiB holds a
/// full turn of packets even when every send goes asynchronous.
pub const NBUFS: u16 = 4096;
/// Per buffer: 16-byte recvmsg_out header + 28-byte name area + payload (~2000 bytes).
pub const BUF_SIZE: usize = 2048;
/// The buffer group the receives draw from.
pub const BGID: u16 = 7;

pub struct BufRing {
    /// mmap'ed ring entries (page aligned, as the kernel requires).
    ring: *mut types::BufRingEntry,
    ring_len: usize,
    /// The buffers themselves.
    data: Vec<u8>,
    tail: u16,
}

impl BufRing {
    pub fn new() -> io::Result<BufRing> {
        let ring_len = usize::from(NBUFS) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping with no address hint; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: ptr.cast(),
            ring_len,
            data: vec![0u8; usize::from(NBUFS) * BUF_SIZE],
            tail: 0,
        };
        for bid in 0..NBUFS {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Where buffer `bid` (< [`NBUFS`]) starts.
    #[inline]
    pub fn buf_ptr(&mut self, bid: u16) -> *mut u8 {
        // SAFETY: bid < NBUFS, so the offset stays inside `data`.
        unsafe { self.data.as_mut_ptr().add(usize::from(bid) * BUF_SIZE) }
    }

    /// The ring entries' address, to register with the ring.
    pub fn entries_addr(&self) -> u64 {
        self.ring as u64
    }

    /// Gives buffer `bid` back to the kernel once its datagram is done with (visible after
    /// `publish`). Ids the kernel cannot have given out are ignored.
    #[inline]
    pub fn recycle(&mut self, bid: u16) {
        if bid < NBUFS {
            self.push(bid);
        }
    }

    /// Queues buffer `bid` for the kernel (visible after `publish`).
    #[inline]
    fn push(&mut self, bid: u16) {
        let addr = self.buf_ptr(bid) as u64;
        let i = usize::from(self.tail & (NBUFS - 1));
        // SAFETY: i < NBUFS entries of the mapping; the kernel reads only entries between its
        // head and our published tail, and this one is past the published tail.
        let e = unsafe { &mut *self.ring.add(i) };
        e.set_addr(addr);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back since the last call visible to the kernel (once per
    /// turn, not per buffer).
    #[inline]
    pub fn publish(&self) {
        // SAFETY: `ring` is the base of the mapped ring; the tail field lives in entry 0's
        // reserved bytes and is only written by us (the kernel reads it), atomically.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the ring (and with it the
        // registration) is dropped before this, see the field order of `UringWorker`.
        unsafe { libc::munmap(self.ring.cast(), self.ring_len) };
    }
}
