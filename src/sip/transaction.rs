//! RFC 3261 §17 transactions, as the proxy core uses them: state, matching keys and timers.
//!
//! - Server transactions (§17.2): INVITE (Proceeding → Completed → Confirmed, plus the
//!   RFC 6026 Accepted state after a 2xx so INVITE retransmissions are absorbed and further
//!   2xx forwarded) and non-INVITE (Trying → Proceeding → Completed). Matched by the top
//!   Via branch + sent-by + method (ACK → INVITE) (§17.2.3), or, for a branch without the
//!   `z9hG4bK` cookie, by Call-ID, From tag, CSeq number, top Via and method (RFC 2543).
//! - Client transactions (§17.1): INVITE (Calling → Proceeding → Completed) and non-INVITE
//!   (Trying → Proceeding → Completed), matched by our branch + CSeq method (§17.1.3).
//! - Timers: A/E/G retransmit (T1 doubling, E and G capped at T2; none on TCP), B/F/H
//!   time out after 64·T1, D (32 s UDP), I/K (T4 UDP), J (64·T1 UDP), L (64·T1, RFC 6026),
//!   and the proxy's Timer C (§16.6 item 11, > 3 min). Every transaction ends by a timer.
//!
//! Transactions are named by [`ServerId`] and [`ClientId`], handed out by [`TxIds`].
//!
//! Timers live in one min-heap of `(deadline, target, slot)`; a transaction keeps the
//! deadline it expects per slot, so a popped entry whose deadline no longer matches is
//! stale and ignored (cancellation without searching the heap).
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use super::header::Via;
use super::parse::{Message, ParseError};
use super::transport::Transport;

/// RTT estimate (RFC 3261 §17.1.1.1).
pub const T1_NS: u64 = 500_000_000;
/// Longest retransmit interval for non-INVITE requests and INVITE responses.
pub const T2_NS: u64 = 4_000_000_000;
/// Longest time a message stays in the network.
pub const T4_NS: u64 = 5_000_000_000;
/// Proxy INVITE timer (§16.6 item 11: more than 3 minutes).
pub const TIMER_C_NS: u64 = 181_000_000_000;

/// Timer values; the defaults are the RFC's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    pub t1: u64,
    pub t2: u64,
    pub t4: u64,
    pub timer_c: u64,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: T1_NS,
            t2: T2_NS,
            t4: T4_NS,
            timer_c: TIMER_C_NS,
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J, L.
    pub fn t64(&self) -> u64 {
        self.t1.saturating_mul(64)
    }

    /// Timer D: at least 32 s on unreliable transports, 0 on reliable ones.
    pub fn timer_d(&self, reliable: bool) -> u64 {
        if reliable {
            0
        } else {
            self.t64().max(32_000_000_000)
        }
    }

    /// Timers I and K: T4 on unreliable transports, 0 on reliable ones.
    pub fn timer_ik(&self, reliable: bool) -> u64 {
        if reliable {
            0
        } else {
            self.t4
        }
    }

    /// Timer J: 64·T1 on unreliable transports, 0 on reliable ones.
    pub fn timer_j(&self, reliable: bool) -> u64 {
        if reliable {
            0
        } else {
            self.t64()
        }
    }

    /// Next retransmit interval: Timer A doubles without a cap (it is bounded by Timer B);
    /// Timers E and G double up to T2.
    pub fn next_interval(&self, current: u64, capped: bool) -> u64 {
        let n = current.saturating_mul(2);
        if capped {
            n.min(self.t2)
        } else {
            n
        }
    }
}

/// Declares a transaction id: a `u64` newtype that only [`TxIds`] hands out, so a server
/// transaction's id cannot be used where a client's is meant, nor a count or a port.
macro_rules! tx_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);
    };
}

tx_id!(
    /// A server transaction of the proxy (§17.2).
    ServerId
);
tx_id!(
    /// A client transaction of the proxy (§17.1): one branch, or a CANCEL we sent.
    ClientId
);

/// Hands out transaction ids, one increasing sequence for both kinds (never reused while
/// the proxy lives).
#[derive(Debug)]
pub struct TxIds {
    next: u64,
}

impl Default for TxIds {
    fn default() -> Self {
        TxIds { next: 1 }
    }
}

impl TxIds {
    fn next(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    pub fn server(&mut self) -> ServerId {
        ServerId(self.next())
    }

    pub fn client(&mut self) -> ClientId {
        ClientId(self.next())
    }
}

/// Which of a transaction's timers an entry refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// A, E (client) or G (server).
    Retransmit,
    /// B, F (client) or H (server); also the give-up deadline after Timer C's CANCEL.
    Timeout,
    /// Timer C (client INVITE through a proxy).
    TimerC,
    /// D, K (client) or I, J, L (server): the transaction ends.
    End,
}

/// What a timer entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Server(ServerId),
    Client(ClientId),
}

/// A due timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerRef {
    pub target: Target,
    pub slot: Slot,
}

/// Min-heap of timer entries (see the module docs for cancellation).
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u64, TimerRef)>>,
}

impl Timers {
    pub fn push(&mut self, deadline: u64, target: Target, slot: Slot) {
        self.heap
            .push(Reverse((deadline, TimerRef { target, slot })));
    }

    /// The earliest entry (possibly stale: waking early is harmless).
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((d, _))| *d)
    }

    /// Pops one entry due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, TimerRef)> {
        match self.heap.peek() {
            Some(Reverse((d, _))) if *d <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Per-transaction deadlines, one per slot, plus the current retransmit interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadlines {
    pub retransmit: Option<u64>,
    pub interval: u64,
    pub timeout: Option<u64>,
    pub timer_c: Option<u64>,
    pub end: Option<u64>,
}

impl Deadlines {
    pub fn get(&self, slot: Slot) -> Option<u64> {
        match slot {
            Slot::Retransmit => self.retransmit,
            Slot::Timeout => self.timeout,
            Slot::TimerC => self.timer_c,
            Slot::End => self.end,
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> &mut Option<u64> {
        match slot {
            Slot::Retransmit => &mut self.retransmit,
            Slot::Timeout => &mut self.timeout,
            Slot::TimerC => &mut self.timer_c,
            Slot::End => &mut self.end,
        }
    }

    /// Arms `slot` at `deadline` and records it in the heap.
    pub fn arm(&mut self, slot: Slot, deadline: u64, timers: &mut Timers, target: Target) {
        *self.slot_mut(slot) = Some(deadline);
        timers.push(deadline, target, slot);
    }

    pub fn disarm(&mut self, slot: Slot) {
        *self.slot_mut(slot) = None;
    }

    /// Whether a popped entry is the live one for this slot; if so the slot is cleared.
    pub fn take_if_current(&mut self, slot: Slot, deadline: u64) -> bool {
        let s = self.slot_mut(slot);
        if *s == Some(deadline) {
            *s = None;
            true
        } else {
            false
        }
    }
}

/// Server transaction states (§17.2.1, §17.2.2, RFC 6026 Accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE, nothing sent yet.
    Trying,
    /// A provisional response was sent (INVITE: at once, 100 Trying).
    Proceeding,
    /// A final non-2xx (INVITE) or any final (non-INVITE) was sent.
    Completed,
    /// INVITE: the ACK arrived (Timer I running).
    Confirmed,
    /// INVITE: a 2xx was forwarded (Timer L running).
    Accepted,
}

/// Client transaction states (§17.1.1, §17.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE "Calling" or non-INVITE "Trying".
    Calling,
    Proceeding,
    Completed,
}

/// The key a request is matched to its server transaction with (§17.2.3). ACK maps to
/// INVITE, so the ACK of a non-2xx final finds the INVITE's transaction; CANCEL keeps its
/// own method and is matched to the INVITE by [`server_key_for_method`].
pub fn server_key(msg: &Message<'_>) -> Result<String, ParseError> {
    let method = msg.method().ok_or(ParseError::BadRequestLine)?;
    let method = if method == "ACK" { "INVITE" } else { method };
    server_key_for_method(msg, method)
}

/// [`server_key`] with the method given (e.g. "INVITE" to find the transaction a CANCEL
/// cancels).
pub fn server_key_for_method(msg: &Message<'_>, method: &str) -> Result<String, ParseError> {
    let via = msg.top_via()?;
    Ok(if via.has_rfc3261_branch() {
        let branch = via.branch.unwrap_or("");
        format!("{branch}|{}|{method}", sent_by(&via))
    } else {
        // RFC 2543 matching: the To tag is left out so the ACK (which carries our tag)
        // finds the INVITE's transaction.
        let cseq = msg.cseq()?;
        format!(
            "2543|{}|{}|{}|{}|{method}",
            msg.call_id()?,
            msg.from_tag().unwrap_or(""),
            cseq.seq,
            via.raw.to_ascii_lowercase()
        )
    })
}

/// `host:port` of a Via, lower-cased, default port 5060.
pub fn sent_by(via: &Via<'_>) -> String {
    format!(
        "{}:{}",
        via.host.to_string().to_ascii_lowercase(),
        via.port.unwrap_or(5060)
    )
}

/// The key a response is matched to its client transaction with (§17.1.3).
pub fn client_key(branch: &str, method: &str) -> String {
    format!("{branch}|{method}")
}

/// The owned parts of a request needed to answer it later (§8.2.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedReply {
    pub vias: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
}

impl OwnedReply {
    pub fn as_ctx(&self) -> super::message::ReplyContext<'_> {
        super::message::ReplyContext {
            vias: self.vias.iter().map(String::as_str).collect(),
            from: self.from.as_deref(),
            to: self.to.as_deref(),
            call_id: self.call_id.as_deref(),
            cseq: self.cseq.as_deref(),
        }
    }
}

/// A server transaction and, for forwarded requests, its response context (§16.7).
#[derive(Debug)]
pub struct ServerTx {
    pub key: String,
    pub invite: bool,
    pub method: String,
    pub state: ServerState,
    /// Where responses go (the request's source, RFC 3581) and how.
    pub reply_to: SocketAddr,
    pub reliable: bool,
    pub transport: Transport,
    pub reply: OwnedReply,
    /// The To tag of responses this element generates.
    pub to_tag: String,
    /// The last response sent, resent on a request retransmission or Timer G.
    pub last_response: Option<Vec<u8>>,
    pub last_status: u16,
    pub timers: Deadlines,
    // Response context.
    pub call_id: String,
    pub from_tag: String,
    /// Client transactions of this request's branches.
    pub branches: Vec<ClientId>,
    /// Branches without a final response yet.
    pub pending: usize,
    /// Best final response so far (status, bytes ready to send upstream).
    pub best: Option<(u16, Vec<u8>)>,
    pub got_2xx: bool,
    pub cancelled: bool,
    pub request_had_sdp: bool,
    /// The media layer was asked to offer for this request.
    pub media_engaged: bool,
    /// A final response was sent: the transaction only absorbs retransmissions now (counted
    /// apart, so overload control judges the work in progress, not what lingers).
    pub finished: bool,
}

/// A client transaction.
#[derive(Debug)]
pub struct ClientTx {
    pub key: String,
    pub branch: String,
    pub method: String,
    pub invite: bool,
    pub state: ClientState,
    /// The server transaction whose response context this branch belongs to (`None` for
    /// CANCELs we generate: their responses are absorbed).
    pub server: Option<ServerId>,
    pub to: SocketAddr,
    pub transport: Transport,
    pub reliable: bool,
    /// The request as sent, for retransmissions and to build CANCEL/ACK.
    pub request: Vec<u8>,
    /// The ACK sent for a non-2xx final, resent when the final is retransmitted.
    pub ack: Option<Vec<u8>>,
    pub got_provisional: bool,
    /// A CANCEL is wanted but must wait for a provisional response (§9.1).
    pub cancel_pending: bool,
    pub cancel_sent: bool,
    /// A final response (or timeout) was accounted in the response context.
    pub final_done: bool,
    pub timers: Deadlines,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_durations() {
        let c = TimerConfig::default();
        assert_eq!(c.t64(), 32_000_000_000);
        assert_eq!(c.timer_d(false), 32_000_000_000);
        assert_eq!(c.timer_d(true), 0);
        assert_eq!(c.timer_ik(false), T4_NS);
        assert_eq!(c.timer_j(true), 0);
        // Timer A: 0.5, 1, 2, 4, 8, 16 s (uncapped); E/G: capped at T2.
        let mut i = c.t1;
        let mut seen = vec![i];
        for _ in 0..5 {
            i = c.next_interval(i, false);
            seen.push(i);
        }
        assert_eq!(seen.last(), Some(&16_000_000_000));
        assert_eq!(c.next_interval(T2_NS, true), T2_NS);
        assert_eq!(c.next_interval(2_000_000_000, true), T2_NS);
    }

    #[test]
    fn heap_orders_and_stale_entries_are_detected() {
        let mut t = Timers::default();
        let mut d = Deadlines::default();
        d.arm(Slot::Timeout, 50, &mut t, Target::Client(ClientId(1)));
        d.arm(Slot::Retransmit, 10, &mut t, Target::Client(ClientId(1)));
        // Re-arming the retransmit slot makes the first entry stale.
        d.arm(Slot::Retransmit, 20, &mut t, Target::Client(ClientId(1)));
        assert_eq!(t.next_deadline(), Some(10));
        assert!(t.pop_due(5).is_none());
        let (dl, r) = t.pop_due(30).unwrap();
        assert_eq!((dl, r.slot), (10, Slot::Retransmit));
        assert!(!d.take_if_current(r.slot, dl), "stale");
        let (dl, r) = t.pop_due(30).unwrap();
        assert!(d.take_if_current(r.slot, dl));
        assert_eq!(d.retransmit, None);
        assert!(t.pop_due(30).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn server_keys() {
        let inv = b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP H.example:5070;branch=z9hG4bKabc\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\n\r\n";
        let ack = b"ACK sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h.example:5070;branch=z9hG4bKabc\r\nCall-ID: c\r\nCSeq: 1 ACK\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\n\r\n";
        let cancel = b"CANCEL sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h.example:5070;branch=z9hG4bKabc\r\nCall-ID: c\r\nCSeq: 1 CANCEL\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\n\r\n";
        let k = |b: &[u8]| server_key(&Message::parse(b).unwrap()).unwrap();
        assert_eq!(k(inv), "z9hG4bKabc|h.example:5070|INVITE");
        assert_eq!(k(ack), k(inv));
        assert_ne!(k(cancel), k(inv));
        let m = Message::parse(cancel).unwrap();
        assert_eq!(server_key_for_method(&m, "INVITE").unwrap(), k(inv));
        // RFC 2543 branch: matched on the dialog and CSeq fields.
        let old = String::from_utf8_lossy(inv).replace("z9hG4bKabc", "abc");
        let old_ack = String::from_utf8_lossy(ack).replace("z9hG4bKabc", "abc");
        assert!(k(old.as_bytes()).starts_with("2543|c|1|1|"));
        assert_eq!(k(old.as_bytes()), k(old_ack.as_bytes()));
    }
}
