//! Stateless nonces and nonce-count replay protection.
//!
//! A nonce is `T || MAC` in hex: `T` the time it was minted (the caller's clock, 8 bytes)
//! and `MAC` the first 16 bytes of HMAC-SHA-256 over `T`, the client's IP address and the
//! realm, keyed with a per-process secret. Checking one needs no state: a nonce whose MAC
//! does not verify (forged, from another source, for another realm, or minted before a
//! restart) is unknown; one whose MAC verifies but is older than the lifetime is stale, and
//! the client is challenged again with `stale=true` (RFC 7616 §3.3) so it retries without
//! asking its user for the password.
//!
//! Replay: [`NonceCounts`] remembers, per nonce in use, the highest `nc` accepted; a
//! request must carry a higher one (RFC 7616 §3.4: the count is for detecting replays).
//! The table holds at most `cap` nonces and forgets each when it expires; when it is full
//! of live nonces a new one is refused as stale, so memory is bounded whatever clients do.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::digest::hex;

/// Bytes of the MAC kept in a nonce: 128 bits, beyond guessing.
const MAC_LEN: usize = 16;
/// Hex characters in a nonce: the 8-byte time and the MAC.
pub const NONCE_HEX_LEN: usize = 2 * (8 + MAC_LEN);

/// What a nonce turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceState {
    /// Ours, for this source and realm, within its lifetime; minted at the given time.
    Fresh { minted_ns: u64 },
    /// Ours but expired: challenge again with `stale=true`.
    Stale,
    /// Not ours (or not for this source or realm).
    Unknown,
}

/// The nonce secret and lifetime.
#[derive(Clone)]
pub struct NonceKey {
    secret: [u8; 32],
    lifetime_ns: u64,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey")
            .field("lifetime_ns", &self.lifetime_ns)
            .finish_non_exhaustive()
    }
}

impl NonceKey {
    pub fn new(secret: [u8; 32], lifetime_ns: u64) -> Self {
        NonceKey {
            secret,
            lifetime_ns,
        }
    }

    pub fn lifetime_ns(&self) -> u64 {
        self.lifetime_ns
    }

    fn mac(&self, minted_ns: u64, source: IpAddr, realm: &str) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        // HMAC takes a key of any length; this cannot fail.
        let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret) else {
            return out;
        };
        m.update(&minted_ns.to_be_bytes());
        match source {
            IpAddr::V4(a) => m.update(&a.octets()),
            IpAddr::V6(a) => m.update(&a.octets()),
        }
        m.update(realm.as_bytes());
        let full = m.finalize().into_bytes();
        for (o, b) in out.iter_mut().zip(full.iter()) {
            *o = *b;
        }
        out
    }

    /// A new nonce for `source` in `realm`.
    pub fn mint(&self, now_ns: u64, source: IpAddr, realm: &str) -> String {
        let mut s = hex(&now_ns.to_be_bytes());
        s.push_str(&hex(&self.mac(now_ns, source, realm)));
        s
    }

    /// Checks a nonce a client sent back.
    pub fn check(&self, nonce: &str, now_ns: u64, source: IpAddr, realm: &str) -> NonceState {
        let Some(bytes) = unhex::<{ 8 + MAC_LEN }>(nonce) else {
            return NonceState::Unknown;
        };
        let (t, mac) = bytes.split_at(8);
        let Ok(t) = <[u8; 8]>::try_from(t) else {
            return NonceState::Unknown;
        };
        let minted_ns = u64::from_be_bytes(t);
        let want = self.mac(minted_ns, source, realm);
        let diff = want.iter().zip(mac).fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 || minted_ns > now_ns {
            return NonceState::Unknown;
        }
        if now_ns - minted_ns > self.lifetime_ns {
            NonceState::Stale
        } else {
            NonceState::Fresh { minted_ns }
        }
    }
}

/// `N` bytes from exactly `2N` hex characters.
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = char::from(*b.get(2 * i)?).to_digit(16)?;
        let lo = char::from(*b.get(2 * i + 1)?).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Whether a nonce count may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountCheck {
    Accepted,
    /// Not above the highest count already accepted with this nonce: a replay.
    Replayed,
    /// A nonce the table had to forget to make room (or minted no later than one it
    /// forgot): its counts are unknown, so the client is to get a fresh challenge
    /// (`stale=true`) rather than be trusted.
    Forgotten,
}

/// The highest nonce count accepted per nonce in use (see the module docs).
///
/// Bounded without ever refusing a new nonce: when the table is full, the entry inserted
/// first is forgotten and `floor_ns` rises to its mint time. A nonce minted no later than
/// the floor that is not in the table may have been forgotten, so it is not trusted
/// ([`CountCheck::Forgotten`]); a nonce minted after the floor and not in the table is in
/// its first use. Each call does O(1) amortised work (the queue is popped at most once per
/// insertion), so a sustained rate of new nonces above `cap / lifetime` only shortens how
/// long a nonce may be reused, instead of turning every new caller away.
#[derive(Debug)]
pub struct NonceCounts {
    /// Nonce → (minted at, highest count accepted; 0 means used once without qop).
    seen: HashMap<String, (u64, u32)>,
    /// The nonces of `seen` in the order they were inserted, each with its mint time.
    order: VecDeque<(String, u64)>,
    /// Nonces minted at or before this that are not in `seen` may have been forgotten
    /// (`None` until the table first had to forget one).
    floor_ns: Option<u64>,
    cap: usize,
}

impl NonceCounts {
    pub fn new(cap: usize) -> Self {
        NonceCounts {
            seen: HashMap::new(),
            order: VecDeque::new(),
            floor_ns: None,
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records `nc` for a nonce minted at `minted_ns` (checked fresh by the caller).
    /// `None` is a client without qop: its nonce may be used once.
    pub fn use_count(
        &mut self,
        nonce: &str,
        minted_ns: u64,
        nc: Option<u32>,
        now_ns: u64,
        lifetime_ns: u64,
    ) -> CountCheck {
        let nc = nc.unwrap_or(0);
        if let Some((_, last)) = self.seen.get_mut(nonce) {
            if nc == 0 || nc <= *last {
                return CountCheck::Replayed;
            }
            *last = nc;
            return CountCheck::Accepted;
        }
        if self.floor_ns.is_some_and(|f| minted_ns <= f) {
            return CountCheck::Forgotten;
        }
        self.sweep(now_ns, lifetime_ns);
        while self.seen.len() >= self.cap {
            if !self.forget_oldest() {
                break;
            }
        }
        self.seen.insert(nonce.to_owned(), (minted_ns, nc));
        self.order.push_back((nonce.to_owned(), minted_ns));
        CountCheck::Accepted
    }

    /// Forgets the entry inserted first; false when there is none.
    fn forget_oldest(&mut self) -> bool {
        let Some((n, minted)) = self.order.pop_front() else {
            return false;
        };
        self.seen.remove(&n);
        self.floor_ns = Some(self.floor_ns.map_or(minted, |f| f.max(minted)));
        true
    }

    /// Forgets nonces past their lifetime from the front of the queue (they are refused
    /// as stale before the table is consulted, so forgetting them opens no replay). Stops
    /// at the first live one: entries are roughly in mint order, and a live one ahead only
    /// delays the others until the table needs the room.
    pub fn sweep(&mut self, now_ns: u64, lifetime_ns: u64) {
        while let Some((_, minted)) = self.order.front() {
            if now_ns.saturating_sub(*minted) <= lifetime_ns {
                break;
            }
            if let Some((n, _)) = self.order.pop_front() {
                self.seen.remove(&n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn key() -> NonceKey {
        NonceKey::new([7; 32], 300 * S)
    }

    #[test]
    fn nonce_is_bound_to_time_source_and_realm() {
        let k = key();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let n = k.mint(10 * S, a, "r");
        assert_eq!(n.len(), NONCE_HEX_LEN);
        assert_eq!(
            k.check(&n, 11 * S, a, "r"),
            NonceState::Fresh { minted_ns: 10 * S }
        );
        assert_eq!(k.check(&n, 11 * S, b, "r"), NonceState::Unknown);
        assert_eq!(k.check(&n, 11 * S, a, "other"), NonceState::Unknown);
        assert_eq!(k.check(&n, 311 * S, a, "r"), NonceState::Stale);
        // From the future (forged time with a MAC that cannot match anyway).
        assert_eq!(k.check(&n, 9 * S, a, "r"), NonceState::Unknown);
        // Another secret: unknown.
        let k2 = NonceKey::new([8; 32], 300 * S);
        assert_eq!(k2.check(&n, 11 * S, a, "r"), NonceState::Unknown);
        // One flipped character: unknown.
        let mut bad = n.clone().into_bytes();
        bad[40] = if bad[40] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(k.check(&bad, 11 * S, a, "r"), NonceState::Unknown);
        for junk in ["", "zz", "é", &n[..47]] {
            assert_eq!(k.check(junk, 11 * S, a, "r"), NonceState::Unknown);
        }
    }

    #[test]
    fn counts_must_grow_and_table_is_bounded() {
        let mut t = NonceCounts::new(2);
        let l = 300 * S;
        assert_eq!(t.use_count("a", 0, Some(1), S, l), CountCheck::Accepted);
        assert_eq!(t.use_count("a", 0, Some(1), S, l), CountCheck::Replayed);
        assert_eq!(t.use_count("a", 0, Some(3), S, l), CountCheck::Accepted);
        assert_eq!(t.use_count("a", 0, Some(2), S, l), CountCheck::Replayed);
        assert_eq!(t.use_count("b", S, None, S, l), CountCheck::Accepted);
        assert_eq!(t.use_count("b", S, None, S, l), CountCheck::Replayed);
        // Full of live nonces: a new one is still accepted; the first one is forgotten.
        assert_eq!(
            t.use_count("c", 2 * S, Some(1), 2 * S, l),
            CountCheck::Accepted
        );
        assert_eq!(t.len(), 2);
        // The forgotten nonce is not trusted again (no replay through eviction).
        assert_eq!(
            t.use_count("a", 0, Some(9), 3 * S, l),
            CountCheck::Forgotten
        );
        // Neither is an unseen one minted no later than it.
        assert_eq!(
            t.use_count("z", 0, Some(1), 3 * S, l),
            CountCheck::Forgotten
        );
        // The kept ones still count.
        assert_eq!(
            t.use_count("c", 2 * S, Some(1), 3 * S, l),
            CountCheck::Replayed
        );
        assert_eq!(
            t.use_count("c", 2 * S, Some(2), 3 * S, l),
            CountCheck::Accepted
        );
        // Once they expire, they leave the table by themselves.
        assert_eq!(
            t.use_count("d", 301 * S, Some(1), 303 * S, l),
            CountCheck::Accepted
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_sustained_rate_of_new_nonces_is_never_refused() {
        // Ten times the table's size in new nonces, one per millisecond, all within the
        // lifetime: every first use is accepted, memory stays at the cap, and every
        // nonce's replay is still refused or untrusted.
        let cap = 1_000;
        let mut t = NonceCounts::new(cap);
        let l = 300 * S;
        let ms = 1_000_000;
        for i in 0..10 * cap as u64 {
            let n = format!("n{i}");
            assert_eq!(
                t.use_count(&n, i * ms, Some(1), i * ms, l),
                CountCheck::Accepted
            );
            assert!(t.len() <= cap);
        }
        let now = 10 * cap as u64 * ms;
        for i in 0..10 * cap as u64 {
            let n = format!("n{i}");
            assert_ne!(
                t.use_count(&n, i * ms, Some(1), now, l),
                CountCheck::Accepted
            );
        }
    }
}
