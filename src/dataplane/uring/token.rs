//! What an operation's `user_data` carries, so its completion can be told apart: the kind
//! of operation in the top byte, then what it concerns. An operation on a slot carries the
//! slot's index and its generation (24 bits, so a completion for a previous owner of a
//! reused slot is recognised); a send carries its buffer id, a GSO send its place in the
//! worker's pool, a read of another ring's eventfd which of the worker's watches it is.

use crate::dataplane::slot::SlotIdx;

const KIND_SHIFT: u32 = 56;
/// The generation bits a token keeps.
pub const GENERATION_MASK: u32 = 0x00ff_ffff;

/// A multishot receive on a slot's socket.
pub const KIND_RECV: u64 = 1;
/// A single send, out of the receive buffer it names.
pub const KIND_SEND: u64 = 2;
/// The read of the worker's wake-up eventfd.
pub const KIND_WAKE: u64 = 3;
/// A cancellation (its own completion carries nothing to act on).
pub const KIND_CANCEL: u64 = 4;
/// Stall watchdog query (SIOCINQ through `IORING_OP_URING_CMD`) for a fixed-file slot.
pub const KIND_WATCH: u64 = 5;
/// A UDP GSO send of several datagrams (index into the worker's GSO pool).
pub const KIND_GSO: u64 = 6;
/// A read of another ring's work eventfd, held by the ring the thread sleeps on (low bits:
/// which of its watches).
pub const KIND_PEER: u64 = 7;
/// The stall watchdog's cancellation of a slot's receive (the slot and its generation).
pub const KIND_STALL_CANCEL: u64 = 8;
/// A connect of a slot's socket to its locked source (index into the worker's pool).
pub const KIND_CONNECT: u64 = 9;
/// A disconnect (`AF_UNSPEC`) of a slot's socket (the slot and its generation).
pub const KIND_DISCONNECT: u64 = 10;

/// The token of an operation of `kind` that concerns nothing further (wake-up, cancel).
#[inline]
pub const fn bare(kind: u64) -> u64 {
    kind << KIND_SHIFT
}

/// The token of an operation of `kind` on slot `idx` of generation `generation`.
#[inline]
pub fn slot(kind: u64, idx: SlotIdx, generation: u32) -> u64 {
    bare(kind) | (u64::from(generation & GENERATION_MASK) << 32) | u64::from(idx.raw())
}

/// The token of slot `idx`'s multishot receive.
#[inline]
pub fn recv(idx: SlotIdx, generation: u32) -> u64 {
    slot(KIND_RECV, idx, generation)
}

/// The token of an operation of `kind` on item `n` (a buffer id, a pool or watch index).
#[inline]
pub fn item(kind: u64, n: u16) -> u64 {
    bare(kind) | u64::from(n)
}

/// The kind of operation a token names.
#[inline]
pub fn kind(token: u64) -> u64 {
    token >> KIND_SHIFT
}

/// The item an [`item`] token names.
#[inline]
pub fn item_of(token: u64) -> u16 {
    (token & 0xffff) as u16
}

/// The slot and generation a [`slot`] token names.
#[inline]
pub fn slot_of(token: u64) -> (SlotIdx, u32) {
    let idx = SlotIdx::new((token & 0xffff_ffff) as u32);
    let generation = ((token >> 32) as u32) & GENERATION_MASK;
    (idx, generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_give_back_what_they_carry() {
        let t = recv(SlotIdx::new(70_000), 0x0123_4567);
        assert_eq!(kind(t), KIND_RECV);
        assert_eq!(slot_of(t), (SlotIdx::new(70_000), 0x0023_4567));
        let t = item(KIND_GSO, 255);
        assert_eq!((kind(t), item_of(t)), (KIND_GSO, 255));
        assert_eq!(kind(bare(KIND_WAKE)), KIND_WAKE);
    }
}
