//! Presence and instant messaging for the domains the proxy serves, sans-IO: a presence
//! agent (RFC 6665 subscriptions, RFC 3856 `presence`, RFC 3857/3858 `presence.winfo`), an
//! Event State Compositor (RFC 3903 PUBLISH, RFC 3863 PIDF bodies composed per presentity)
//! and store-and-forward MESSAGE (RFC 3428) for users with no binding.
//!
//! The proxy hands a request over at its interception point as an [`Offer`] (the message
//! plus what routing knows: the target AoR, whether the watcher is local, how many bindings
//! the target has, where the sender is reached); [`Services::on_request`] either answers it
//! ([`Handling::Answer`], with the requests that follow the answer: NOTIFYs) or lets it be
//! routed as before ([`Handling::Pass`]). Requests we originate ([`OutRequest`]) are sent
//! by the proxy through client transactions of their own (retransmissions, Timer F); it
//! reports their final status back through [`Services::on_result`] (a 481 or a timeout
//! ends a subscription, RFC 6665 §4.2.2; a failed delivery puts a message back).
//! Registration changes come in through [`Services::on_bindings`]; time through
//! [`Services::handle_timeout`] at [`Services::poll_timeout`].
//!
//! Policy (configurable in [`PresenceConfig`]):
//! - `presence` and `presence.winfo` to a user of our domains are served here, registered
//!   or not; other event packages are routed to the user's devices as before, or get 489
//!   with `Allow-Events` when the user has none;
//! - watchers whose From is in our domains are active at once; others follow
//!   [`WatcherPolicy`] (refused with 403 by default); `presence.winfo` is for the
//!   presentity itself only;
//! - a presentity that never published is `open` while it has a binding and `closed`
//!   otherwise; publications replace that, one tuple set per publisher;
//! - state changes NOTIFY every active watcher, at most once per `notify_interval_ns` per
//!   presentity (later changes are merged into one NOTIFY at the end of the interval),
//!   and never while the previous NOTIFY of that subscription is unanswered (RFC 6665
//!   §4.2.2: the newer state goes out when it is answered).
//!
//! Every table is bounded (subscriptions in total and per presentity, publications in total
//! and per AoR, stored messages per user and in total) and every entry ends by a timer.
//!
//! Several SIP fronts sharing a store (`store::share`) share presence: the other fronts'
//! publications and watcher lists come in through [`Services::apply_remote_record`]
//! (`remote.rs`) and are composed with ours; a registration at another front comes in
//! through [`Services::on_bindings`] like one here.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod im;
mod persist;
mod pidf;
mod publish;
mod remote;
mod subscribe;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::sip::hash::fnv;
use crate::sip::parse::{HeaderName, Message};
use crate::sip::transport::Transport;

pub use self::im::{MessageStoreConfig, StoredMessage};
pub use self::persist::{
    shared_record, PersistRecord, RestoreCounts, SharedRecord, RECORD_VERSION,
};
pub use self::remote::{RemoteError, RemoteRecord};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The event packages served here.
pub const ALLOW_EVENTS: &str = "presence, presence.winfo";

/// What to do with a watcher whose From is not in one of our domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatcherPolicy {
    /// Active like a local watcher.
    Allow,
    /// Accepted but held `pending`: it gets NOTIFYs without state until it expires.
    Pending,
    /// Refused with 403.
    Refuse,
}

impl std::str::FromStr for WatcherPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(WatcherPolicy::Allow),
            "pending" => Ok(WatcherPolicy::Pending),
            "refuse" => Ok(WatcherPolicy::Refuse),
            _ => Err(format!("{s:?}: expected allow, pending or refuse")),
        }
    }
}

/// Limits and timers. Build with [`PresenceConfig::new`] and override fields.
#[derive(Clone, Debug)]
pub struct PresenceConfig {
    /// Our listen address: the Via sent-by and Contact of what we send.
    pub local: SocketAddr,
    /// Our TLS listen address (`--listen-sips`): the same for what goes over TLS.
    pub local_tls: Option<SocketAddr>,
    /// Subscription and publication lifetimes (seconds): shorter non-zero ones get 423.
    pub min_expires: u32,
    pub default_expires: u32,
    pub max_expires: u32,
    pub max_subscriptions: usize,
    pub max_watchers_per_presentity: usize,
    pub max_publications: usize,
    pub max_publications_per_aor: usize,
    /// Largest PIDF body accepted in a PUBLISH.
    pub max_pidf: usize,
    /// Least time between two state NOTIFYs of one presentity.
    pub notify_interval_ns: u64,
    pub foreign_watchers: WatcherPolicy,
    pub messages: MessageStoreConfig,
    /// Mixed into the branches, entity tags and Call-IDs we mint.
    pub secret: u64,
}

impl PresenceConfig {
    pub fn new(local: SocketAddr) -> Self {
        PresenceConfig {
            local,
            local_tls: None,
            min_expires: 60,
            default_expires: 3600,
            max_expires: 3600,
            max_subscriptions: 100_000,
            max_watchers_per_presentity: 64,
            max_publications: 50_000,
            max_publications_per_aor: 8,
            max_pidf: 8 * 1024,
            notify_interval_ns: 200_000_000,
            foreign_watchers: WatcherPolicy::Refuse,
            messages: MessageStoreConfig::default(),
            secret: 0x9e5e_4ce5_eed0_0001,
        }
    }
}

/// Where a peer is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    pub to: SocketAddr,
    pub transport: Transport,
}

/// One registered device of a user: its contact URI and where it is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub uri: String,
    pub reach: Reach,
    /// A Route to put on top: the front holding the device's connection (another SIP front
    /// sharing the location service), reached at `reach`.
    pub route: Option<String>,
}

/// A request handed over by the proxy, with what routing knows about it.
pub struct Offer<'a, 'm> {
    pub msg: &'a Message<'m>,
    /// The canonical AoR the Request-URI names in one of our domains (numbers normalised).
    pub target: Option<String>,
    /// The Request-URI names the server itself (one of our domains, no user part).
    pub to_server: bool,
    /// The From URI's canonical AoR, and whether it is in one of our domains.
    pub from_aor: Option<String>,
    pub from_local: bool,
    /// The target's active bindings, as the proxy would reach them.
    pub devices: Vec<Device>,
    /// Where the sender is reached (its NOTIFYs go there).
    pub reach: Reach,
    /// The To tag of our answer (the proxy's tag for the server transaction).
    pub local_tag: String,
}

/// A final response to send through the request's server transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn new(status: u16, reason: &'static str) -> Self {
        Answer {
            status,
            reason,
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request we originate (NOTIFY, a stored MESSAGE), complete with our Via.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRequest {
    pub reach: Reach,
    /// The branch of our Via: its responses come back with it ([`Services::on_result`]).
    pub branch: String,
    pub method: &'static str,
    pub bytes: Vec<u8>,
}

/// What the services do with a request.
#[derive(Debug)]
pub enum Handling {
    /// Not ours: route it as usual.
    Pass,
    /// Answer it with this, then send these.
    Answer(Answer, Vec<OutRequest>),
    /// Another front sharing the store holds what it is about (a PUBLISH whose
    /// `SIP-If-Match` names an entity tag that front issued): forward it to that front, by
    /// its SIP URI.
    ToFront(String),
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PresenceStats {
    pub subscriptions: usize,
    pub publications: usize,
    pub stored_messages: usize,
    pub notifies_sent: u64,
    pub notifies_failed: u64,
    pub messages_stored: u64,
    pub messages_delivered: u64,
    pub messages_expired: u64,
    pub refused_full: u64,
}

/// A subscription's id (the key of the subscription table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubId(u64);

/// What a deadline is for; checked against the live entry when it fires (stale ones are
/// skipped), so entries never need to be removed from the timer set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    SubExpires(SubId),
    PubExpires(String),
    /// Another front's publications of this AoR may have expired.
    RemoteExpires(String),
    Notify(String),
    MessagesExpire(String),
}

/// An entry whose persistence record changed (`persist.rs`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PersistKey {
    Presentity(String),
    Subscription(SubId),
    /// The presentity's watchers, for the other fronts' watcher info (when sharing).
    Watchers(String),
}

/// What an outstanding request of ours is for.
#[derive(Clone, Debug)]
enum Outstanding {
    Notify(SubId),
    Message(im::MsgId),
}

/// The presence agent, compositor and message store. See the module docs.
pub struct Services {
    cfg: PresenceConfig,
    subs: HashMap<SubId, subscribe::Subscription>,
    dialogs: HashMap<String, SubId>,
    presentities: HashMap<String, publish::Presentity>,
    /// Entity tag → AoR of its publication.
    etags: HashMap<String, String>,
    publications: usize,
    /// Publications and watchers held by other fronts (see `remote.rs`), in total.
    remote_publications: usize,
    remote_watchers: usize,
    store: im::Store,
    outstanding: HashMap<String, Outstanding>,
    timers: BTreeSet<(u64, Due)>,
    next_id: u64,
    stats: PresenceStats,
    /// Entries changed since the last [`Services::take_persist`]; `None`: not persisting.
    dirty: Option<BTreeSet<PersistKey>>,
    /// Shared with other fronts: watcher lists are written for them too (`remote.rs`).
    sharing: bool,
}

impl Services {
    pub fn new(cfg: PresenceConfig) -> Self {
        let store = im::Store::new(cfg.messages.clone());
        Services {
            cfg,
            subs: HashMap::new(),
            dialogs: HashMap::new(),
            presentities: HashMap::new(),
            etags: HashMap::new(),
            publications: 0,
            remote_publications: 0,
            remote_watchers: 0,
            store,
            outstanding: HashMap::new(),
            timers: BTreeSet::new(),
            next_id: 1,
            stats: PresenceStats::default(),
            dirty: None,
            sharing: false,
        }
    }

    pub fn config(&self) -> &PresenceConfig {
        &self.cfg
    }

    pub fn stats(&self) -> PresenceStats {
        let mut s = self.stats;
        s.subscriptions = self.subs.len();
        s.publications = self.publications;
        s.stored_messages = self.store.len();
        s
    }

    /// The messages stored for `aor`, oldest first.
    pub fn stored_for(&self, aor: &str) -> Vec<StoredMessage> {
        self.store.stored_for(aor)
    }

    /// A request handed over at the proxy's interception point.
    pub fn on_request(&mut self, o: &Offer<'_, '_>, now: u64) -> Handling {
        match o.msg.method().unwrap_or("") {
            "SUBSCRIBE" => self.on_subscribe(o, now),
            "PUBLISH" => self.on_publish(o, now),
            "MESSAGE" => self.on_message(o, now),
            _ => Handling::Pass,
        }
    }

    /// The final status of a request we sent (408 for a timeout).
    pub fn on_result(&mut self, branch: &str, status: u16, now: u64) -> Vec<OutRequest> {
        let Some(what) = self.outstanding.remove(branch) else {
            return Vec::new();
        };
        match what {
            Outstanding::Notify(id) => self.notify_result(id, status, now),
            Outstanding::Message(id) => {
                if (200..300).contains(&status) {
                    self.stats.messages_delivered += u64::from(self.store.delivered(id));
                } else {
                    self.store.failed(id, now);
                }
                Vec::new()
            }
        }
    }

    /// The bindings of `aor` changed (a REGISTER was accepted); `devices` is what it has
    /// now. Stored messages go to the devices; registration-derived state is NOTIFYed.
    pub fn on_bindings(&mut self, aor: &str, devices: &[Device], now: u64) -> Vec<OutRequest> {
        let mut out = self.set_registered(aor, !devices.is_empty(), now);
        if !devices.is_empty() {
            for (msg, dev) in self.store.take_for(aor, devices) {
                let branch = self.mint("m");
                let call_id = format!("{}@{}", self.mint("c"), self.cfg.local.ip());
                let bytes = self.delivery(&msg, &dev, &branch, &call_id);
                self.outstanding
                    .insert(branch.clone(), Outstanding::Message(msg.id));
                out.push(OutRequest {
                    reach: dev.reach,
                    branch,
                    method: "MESSAGE",
                    bytes,
                });
            }
        }
        out
    }

    /// Earliest deadline at which [`Services::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Fires what is due: subscription and publication expiry, rate-limited NOTIFYs,
    /// stored-message expiry.
    pub fn handle_timeout(&mut self, now: u64) -> Vec<OutRequest> {
        let mut out = Vec::new();
        // Bounded: each entry is popped once; what is re-armed lies in the future.
        let mut budget = self.timers.len() + 16;
        while budget > 0 {
            budget -= 1;
            let Some(first) = self.timers.first().cloned() else {
                break;
            };
            if first.0 > now {
                break;
            }
            self.timers.remove(&first);
            match first.1 {
                Due::SubExpires(id) => out.extend(self.sub_expired(id, first.0, now)),
                Due::PubExpires(etag) => out.extend(self.pub_expired(&etag, first.0, now)),
                Due::RemoteExpires(aor) => out.extend(self.remote_expired(&aor, now)),
                Due::Notify(aor) => out.extend(self.notify_due(&aor, now)),
                Due::MessagesExpire(aor) => {
                    self.stats.messages_expired += self.store.expire_user(&aor, now) as u64;
                }
            }
        }
        out
    }

    /// Registration-derived state of watched presentities whose last binding expired;
    /// `registered` says whether an AoR has a binding now. Call periodically.
    pub fn check_registrations(
        &mut self,
        now: u64,
        registered: &dyn Fn(&str) -> bool,
    ) -> Vec<OutRequest> {
        let mut out = Vec::new();
        let watched: Vec<String> = self
            .presentities
            .iter()
            .filter(|(_, p)| p.registered && !p.watchers.is_empty())
            .map(|(a, _)| a.clone())
            .collect();
        for aor in watched {
            if !registered(&aor) {
                out.extend(self.set_registered(&aor, false, now));
            }
        }
        out
    }

    /// A fresh token: branch parts, entity tags, Call-IDs.
    fn mint(&mut self, kind: &str) -> String {
        let n = self.next_id;
        self.next_id += 1;
        let h = fnv(self.cfg.secret, &[kind.as_bytes(), &n.to_be_bytes()]);
        match kind {
            "b" | "m" => format!("z9hG4bKps{kind}{n:x}.{:08x}", h as u32),
            _ => format!("{kind}{n:x}{:012x}", h & 0xffff_ffff_ffff),
        }
    }

    fn arm(&mut self, at: u64, due: Due) {
        self.timers.insert((at, due));
    }

    /// A lifetime from a request's Expires: `Err` with the 423 answer when too short.
    fn lifetime(&self, msg: &Message<'_>) -> Result<u32, Answer> {
        let asked = match msg.expires() {
            Ok(Some(e)) => e,
            Ok(None) => self.cfg.default_expires,
            Err(_) => return Err(Answer::new(400, "Bad Request - Malformed Expires")),
        };
        if asked != 0 && asked < self.cfg.min_expires {
            return Err(Answer::new(423, "Interval Too Brief")
                .with("Min-Expires", self.cfg.min_expires.to_string()));
        }
        Ok(asked.min(self.cfg.max_expires))
    }

    /// A request line and our Via; the caller appends the rest of the headers.
    fn request_head(&self, method: &str, ruri: &str, reach: Reach, branch: &str) -> String {
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n",
            reach.transport.via_name(),
            self.local_for(reach.transport)
        );
        s
    }

    /// Our Contact (a URI naming the server; in-dialog requests come back to it).
    fn contact(&self, transport: Transport) -> String {
        let local = self.local_for(transport);
        match transport {
            Transport::Udp => format!("<sip:{local}>"),
            Transport::Tcp => format!("<sip:{local};transport=tcp>"),
            Transport::Tls => format!("<sip:{local};transport=tls>"),
        }
    }

    /// The address we are reached at over `transport`.
    fn local_for(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Tls => self.cfg.local_tls.unwrap_or(self.cfg.local),
            Transport::Udp | Transport::Tcp => self.cfg.local,
        }
    }
}

/// The Event header's package (`presence;id=1` → `presence`), lower-cased, and its `id`.
fn event_of(msg: &Message<'_>) -> Option<(String, Option<String>)> {
    let h = msg.header(HeaderName::Event)?;
    let mut parts = h.value.split(';');
    let package = parts.next()?.trim().to_ascii_lowercase();
    if package.is_empty() {
        return None;
    }
    let id = parts.find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("id")
            .then(|| v.trim().to_owned())
    });
    Some((package, id))
}

fn secs(ns: u64) -> u64 {
    ns / NANOS_PER_SEC
}
