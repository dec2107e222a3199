//! Store-and-forward MESSAGE (RFC 3428): a MESSAGE to a user of ours with no binding is
//! kept (202 Accepted) and sent to each of the user's devices when it next registers, with
//! its original From, To, Date and body. A device's 2xx delivers it; when every device
//! failed it goes back to the store, at most `max_attempts` times. Stored messages expire
//! (3 days by default); the store is bounded per user and in total (beyond: 480).
//!
//! Size: a MESSAGE larger than `udp_limit` bytes (1,300, RFC 3428 §8's bound for a path
//! that may include UDP) gets 513 unless a device of the target is reached over TCP.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;

use super::{Answer, Device, Due, Handling, Offer, Services, NANOS_PER_SEC};
use crate::sip::parse::HeaderName;
use crate::sip::transport::Transport;

/// A stored message's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(pub u64);

/// Limits of the message store.
#[derive(Clone, Debug)]
pub struct MessageStoreConfig {
    pub max_per_user: usize,
    pub max_total: usize,
    pub ttl_ns: u64,
    /// Largest MESSAGE (as received) sent or stored for delivery over UDP.
    pub udp_limit: usize,
    pub max_attempts: u8,
}

impl Default for MessageStoreConfig {
    fn default() -> Self {
        MessageStoreConfig {
            max_per_user: 100,
            max_total: 10_000,
            ttl_ns: 3 * 24 * 3600 * NANOS_PER_SEC,
            udp_limit: 1300,
            max_attempts: 3,
        }
    }
}

/// A message kept for an offline user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: MsgId,
    pub aor: String,
    /// The original From and To header values.
    pub from: String,
    pub to: String,
    pub content_type: Option<String>,
    pub date: Option<String>,
    pub body: Vec<u8>,
    pub expires_at: u64,
    pub(super) attempts: u8,
}

/// A message being delivered: how many devices have not answered yet.
#[derive(Debug)]
struct Flight {
    msg: StoredMessage,
    pending: usize,
    delivered: bool,
}

/// The bounded store.
#[derive(Debug)]
pub(super) struct Store {
    cfg: MessageStoreConfig,
    users: HashMap<String, VecDeque<StoredMessage>>,
    total: usize,
    flights: HashMap<MsgId, Flight>,
    next: u64,
    /// Users whose stored messages changed since the last [`Store::take_dirty`]; kept only
    /// while persistence is on.
    dirty: Option<BTreeSet<String>>,
}

impl Store {
    pub(super) fn new(cfg: MessageStoreConfig) -> Self {
        Store {
            cfg,
            users: HashMap::new(),
            total: 0,
            flights: HashMap::new(),
            next: 1,
            dirty: None,
        }
    }

    /// Starts recording which users' messages change.
    pub(super) fn track(&mut self) {
        self.dirty.get_or_insert_with(BTreeSet::new);
    }

    /// Marks every user with messages (stored or being delivered) changed.
    pub(super) fn touch_all(&mut self) {
        let users: BTreeSet<String> = self
            .users
            .keys()
            .cloned()
            .chain(self.flights.values().map(|f| f.msg.aor.clone()))
            .collect();
        for u in users {
            self.touch(&u);
        }
    }

    /// Marks a user's messages changed (when tracking).
    pub(super) fn touch_user(&mut self, aor: &str) {
        self.touch(aor);
    }

    fn touch(&mut self, aor: &str) {
        if let Some(d) = self.dirty.as_mut() {
            if !d.contains(aor) {
                d.insert(aor.to_owned());
            }
        }
    }

    /// The users whose messages changed since the last call.
    pub(super) fn take_dirty(&mut self) -> BTreeSet<String> {
        self.dirty.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// What must survive a restart for `aor`: its stored messages and those being
    /// delivered that no device has taken yet (delivery is at least once).
    pub(super) fn kept_for(&self, aor: &str) -> Vec<StoredMessage> {
        let mut out: Vec<StoredMessage> = self
            .flights
            .values()
            .filter(|f| !f.delivered && f.msg.aor == aor)
            .map(|f| f.msg.clone())
            .collect();
        out.sort_by_key(|m| m.id);
        if let Some(q) = self.users.get(aor) {
            out.extend(q.iter().cloned());
        }
        out
    }

    /// Puts back a message loaded at start (a fresh id); `false` when a cap is reached.
    pub(super) fn restore(&mut self, mut msg: StoredMessage) -> bool {
        msg.id = MsgId(0);
        self.put(msg, false).is_some()
    }

    /// The users with stored messages.
    pub(super) fn users(&self) -> impl Iterator<Item = String> + '_ {
        self.users.keys().cloned()
    }

    pub(super) fn len(&self) -> usize {
        self.total
    }

    pub(super) fn stored_for(&self, aor: &str) -> Vec<StoredMessage> {
        self.users
            .get(aor)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Keeps a message; `None` when the user's or the total cap is reached.
    fn put(&mut self, mut msg: StoredMessage, front: bool) -> Option<(MsgId, u64)> {
        let q = self.users.entry(msg.aor.clone()).or_default();
        if q.len() >= self.cfg.max_per_user || self.total >= self.cfg.max_total {
            if q.is_empty() {
                self.users.remove(&msg.aor);
            }
            return None;
        }
        if msg.id.0 == 0 {
            msg.id = MsgId(self.next);
            self.next += 1;
        }
        let r = (msg.id, msg.expires_at);
        let aor = msg.aor.clone();
        if front {
            q.push_front(msg);
        } else {
            q.push_back(msg);
        }
        self.total += 1;
        self.touch(&aor);
        Some(r)
    }

    /// Every message of `aor`, paired with each device it goes to.
    pub(super) fn take_for(
        &mut self,
        aor: &str,
        devices: &[Device],
    ) -> Vec<(StoredMessage, Device)> {
        let Some(q) = self.users.remove(aor) else {
            return Vec::new();
        };
        self.total -= q.len();
        self.touch(aor);
        let mut out = Vec::new();
        for msg in q {
            for d in devices {
                out.push((msg.clone(), d.clone()));
            }
            self.flights.insert(
                msg.id,
                Flight {
                    msg,
                    pending: devices.len(),
                    delivered: false,
                },
            );
        }
        out
    }

    /// A device answered 2xx: true the first time for this message.
    pub(super) fn delivered(&mut self, id: MsgId) -> bool {
        let Some(f) = self.flights.get_mut(&id) else {
            return false;
        };
        let first = !f.delivered;
        f.delivered = true;
        f.pending = f.pending.saturating_sub(1);
        let aor = f.msg.aor.clone();
        if f.pending == 0 {
            self.flights.remove(&id);
        }
        if first {
            self.touch(&aor);
        }
        first
    }

    /// A device failed; when none is left and none took it, it goes back to the store.
    pub(super) fn failed(&mut self, id: MsgId, now: u64) {
        let Some(f) = self.flights.get_mut(&id) else {
            return;
        };
        f.pending = f.pending.saturating_sub(1);
        if f.pending > 0 {
            return;
        }
        let Some(f) = self.flights.remove(&id) else {
            return;
        };
        let mut msg = f.msg;
        self.touch(&msg.aor);
        msg.attempts = msg.attempts.saturating_add(1);
        if !f.delivered && msg.attempts < self.cfg.max_attempts && msg.expires_at > now {
            let _ = self.put(msg, true);
        }
    }

    /// Drops the expired messages of `aor`; how many.
    pub(super) fn expire_user(&mut self, aor: &str, now: u64) -> usize {
        let Some(q) = self.users.get_mut(aor) else {
            return 0;
        };
        let before = q.len();
        q.retain(|m| m.expires_at > now);
        let gone = before - q.len();
        if q.is_empty() {
            self.users.remove(aor);
        }
        self.total -= gone;
        if gone > 0 {
            self.touch(aor);
        }
        gone
    }
}

impl Services {
    pub(super) fn on_message(&mut self, o: &Offer<'_, '_>, now: u64) -> Handling {
        let msg = o.msg;
        let Some(target) = o.target.clone() else {
            return Handling::Pass;
        };
        if msg.to_tag().is_some() {
            return Handling::Pass;
        }
        let answer = |a: Answer| Handling::Answer(a, Vec::new());
        let cfg = &self.cfg.messages;
        // A device held by another front is reached through it over TCP when the request is
        // large (the proxy's front-to-front hop, RFC 3261 §18.1.1).
        let tcp = o
            .devices
            .iter()
            .any(|d| d.reach.transport == Transport::Tcp || d.route.is_some());
        if msg.as_bytes().len() > cfg.udp_limit && !tcp {
            return answer(Answer::new(513, "Message Too Large"));
        }
        if !o.devices.is_empty() {
            return Handling::Pass;
        }
        let header = |k: HeaderName| msg.header(k).map(|h| h.value.to_owned());
        let stored = StoredMessage {
            id: MsgId(0),
            aor: target.clone(),
            from: header(HeaderName::From).unwrap_or_default(),
            to: header(HeaderName::To).unwrap_or_default(),
            content_type: header(HeaderName::ContentType),
            date: header(HeaderName::Date),
            body: msg.body().to_vec(),
            expires_at: now.saturating_add(cfg.ttl_ns),
            attempts: 0,
        };
        match self.store.put(stored, false) {
            Some((_, at)) => {
                self.stats.messages_stored += 1;
                self.arm(at, Due::MessagesExpire(target));
                answer(Answer::new(202, "Accepted"))
            }
            None => {
                self.stats.refused_full += 1;
                answer(Answer::new(
                    480,
                    "Temporarily Unavailable - Message Store Full",
                ))
            }
        }
    }

    /// A stored message as a MESSAGE to one device.
    pub(super) fn delivery(
        &self,
        m: &StoredMessage,
        dev: &Device,
        branch: &str,
        call_id: &str,
    ) -> Vec<u8> {
        let mut s = self.request_head("MESSAGE", &dev.uri, dev.reach, branch);
        if let Some(r) = &dev.route {
            let _ = write!(s, "Route: {r}\r\n");
        }
        let _ = write!(
            s,
            "From: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n",
            m.from, m.to
        );
        if let Some(d) = &m.date {
            let _ = write!(s, "Date: {d}\r\n");
        }
        if let Some(t) = &m.content_type {
            let _ = write!(s, "Content-Type: {t}\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", m.body.len());
        let mut bytes = s.into_bytes();
        bytes.extend_from_slice(&m.body);
        bytes
    }
}
