//! The I/O side of relay sets (tokio): one task per remote relay carrying its ng requests,
//! and the health task pinging every relay of the set.
//!
//! - **Links**: a task per remote relay owns its socket (UDP connected to the relay, or one
//!   TCP stream, reconnected when a request finds it closed) and a
//!   [`NgExchange`](crate::control::client::NgExchange) — the sans-IO ng client `rtpanchor
//!   ctl` and the benchmarks drive through [`crate::client::ng`]. Requests are pipelined;
//!   over UDP each is sent again under the same cookie until its attempts are used, so the
//!   relay answers a retransmission from its reply cache. Cookies start with a prefix unique
//!   to this process and link.
//! - **Health**: every `ping_every_ns` each remote relay gets a `ping`; a `pong` (or any
//!   reply) marks it alive, a ping without a reply within `ping_timeout_ns` marks it down.
//!   Replies are read before deadlines are judged, so a stall of this process does not
//!   fail relays that answered meanwhile. Down and up are logged with the calls left on it.
//!
//! Nothing here blocks the SIP tasks: they hand a [`Job`] over a channel and go on.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::client::ng::unique_prefix;
use crate::control::bencode::Owned;
use crate::control::client::{stream_message, Due, NgExchange, RetryPolicy, Token};
use crate::relayset::{HealthEvent, Outcome, RelayId, RelaySet, RelayTarget};
use crate::relayset::{NgTransport, RelaySnapshot};
use crate::time::{self, Nanos, NANOS_PER_MS};

/// Media requests: Kamailio's module sends up to 5 times, 1 s apart, and stalls for that
/// long; here an offer moves to another relay instead, so a short schedule is better.
pub const MEDIA_POLICY: RetryPolicy = RetryPolicy::millis(250, 3);

/// Requests queued per link before new ones are given up at once.
const LINK_QUEUE: usize = 4096;

/// Largest reply read.
const MAX_REPLY: usize = 65_536;

/// One request for a link.
pub struct LinkRequest {
    pub request: Owned,
    pub policy: RetryPolicy,
    pub reply: oneshot::Sender<Outcome>,
}

/// The links of a set, by relay.
#[derive(Clone, Default)]
pub struct Links {
    links: HashMap<RelayId, mpsc::Sender<LinkRequest>>,
}

impl Links {
    /// Starts a task per remote relay of `set` (needs a tokio runtime).
    pub fn start(set: &RelaySet) -> Links {
        let mut links = HashMap::new();
        for id in set.ids() {
            if let Some(RelayTarget::Ng { addr, transport }) = set.target(id).cloned() {
                let (tx, rx) = mpsc::channel(LINK_QUEUE);
                let prefix = format!("{}.r{}", unique_prefix(), id.0);
                match transport {
                    NgTransport::Udp => tokio::spawn(udp_link(addr, prefix, rx)),
                    NgTransport::Tcp => tokio::spawn(tcp_link(addr, prefix, rx)),
                };
                links.insert(id, tx);
            }
        }
        Links { links }
    }

    /// Sends `request` to `relay` and waits for the outcome.
    pub async fn request(&self, relay: RelayId, request: Owned, policy: RetryPolicy) -> Outcome {
        let Some(link) = self.links.get(&relay) else {
            return Outcome::GaveUp;
        };
        let (tx, rx) = oneshot::channel();
        let req = LinkRequest {
            request,
            policy,
            reply: tx,
        };
        if link.try_send(req).is_err() {
            return Outcome::GaveUp;
        }
        rx.await.unwrap_or(Outcome::GaveUp)
    }
}

fn unreadable() -> Owned {
    Owned::dict()
        .with("result", "error")
        .with("error-reason", "unreadable ng reply")
}

struct Waiter {
    reply: oneshot::Sender<Outcome>,
    sent: Nanos,
}

/// Hands a matched reply to its waiter.
fn deliver(waiters: &mut HashMap<usize, Waiter>, ex: &mut NgExchange, message: &[u8]) {
    if let Some((Token(t), reply)) = ex.on_datagram(message) {
        if let Some(w) = waiters.remove(&t) {
            let rtt_ns = time::now_ns().saturating_sub(w.sent);
            let reply = reply.unwrap_or_else(|_| unreadable());
            let _ = w.reply.send(Outcome::Reply { reply, rtt_ns });
        }
    }
}

fn sleep_until(deadline: Option<Nanos>) -> Duration {
    match deadline {
        Some(d) => Duration::from_nanos(d.saturating_sub(time::now_ns())),
        None => Duration::from_secs(3600),
    }
}

async fn udp_link(addr: SocketAddr, prefix: String, mut rx: mpsc::Receiver<LinkRequest>) {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(relay = %addr, error = %e, "media relay link: no socket");
            return;
        }
    };
    if let Err(e) = sock.connect(addr).await {
        tracing::error!(relay = %addr, error = %e, "media relay link: cannot connect");
        return;
    }
    let mut ex = NgExchange::new(prefix, MEDIA_POLICY);
    let mut waiters: HashMap<usize, Waiter> = HashMap::new();
    let mut next = 0usize;
    let mut buf = vec![0u8; MAX_REPLY];
    loop {
        let wait = sleep_until(ex.next_deadline());
        // Replies first: after a stall of this process, answers waiting in the socket are
        // read before any deadline is judged, so a slow front does not fail its relays.
        tokio::select! {
            biased;
            r = sock.recv(&mut buf) => {
                if let Ok(n) = r {
                    if let Some(m) = buf.get(..n) {
                        deliver(&mut waiters, &mut ex, m);
                    }
                }
            }
            req = rx.recv() => {
                let Some(req) = req else { return };
                next = next.wrapping_add(1);
                ex.set_policy(req.policy);
                let dgram = ex.start(Token(next), &req.request, time::now_ns()).to_vec();
                // A send error (ICMP refusal of an earlier one) is left to retransmission.
                let _ = sock.send(&dgram).await;
                waiters.insert(next, Waiter { reply: req.reply, sent: time::now_ns() });
            }
            _ = tokio::time::sleep(wait) => {
                let now = time::now_ns();
                while let Some(due) = ex.poll_due(now) {
                    match due {
                        Due::Resend(d) => {
                            let _ = sock.try_send(d);
                        }
                        Due::GaveUp(Token(t)) => {
                            if let Some(w) = waiters.remove(&t) {
                                let _ = w.reply.send(Outcome::GaveUp);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How long a TCP connect may take.
const TCP_CONNECT: Duration = Duration::from_millis(500);

async fn tcp_link(addr: SocketAddr, prefix: String, mut rx: mpsc::Receiver<LinkRequest>) {
    let mut ex = NgExchange::new(prefix, MEDIA_POLICY);
    let mut waiters: HashMap<usize, Waiter> = HashMap::new();
    let mut next = 0usize;
    let mut stream: Option<TcpStream> = None;
    let mut inbox: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; MAX_REPLY];
    loop {
        let wait = sleep_until(ex.next_deadline());
        tokio::select! {
            biased;
            r = async {
                match stream.as_mut() {
                    Some(s) => s.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => {
                match r {
                    Ok(0) | Err(_) => stream = None,
                    Ok(n) => {
                        inbox.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                        loop {
                            match stream_message(&inbox) {
                                Ok(Some(m)) => {
                                    if let Some(msg) = inbox.get(m.clone()) {
                                        let msg = msg.to_vec();
                                        deliver(&mut waiters, &mut ex, &msg);
                                    }
                                    inbox.drain(..m.end.min(inbox.len()));
                                }
                                Ok(None) => break,
                                Err(_) => {
                                    stream = None;
                                    break;
                                }
                            }
                        }
                        if inbox.len() > MAX_REPLY * 16 {
                            stream = None;
                        }
                    }
                }
            }
            req = rx.recv() => {
                let Some(req) = req else { return };
                next = next.wrapping_add(1);
                // Sent once: a stream does not lose it; the whole schedule is its timeout.
                let policy = RetryPolicy { timeout_ns: req.policy.total_ns(), attempts: 1 };
                ex.set_policy(policy);
                let msg = ex.start(Token(next), &req.request, time::now_ns()).to_vec();
                waiters.insert(next, Waiter { reply: req.reply, sent: time::now_ns() });
                if stream.is_none() {
                    inbox.clear();
                    stream = match tokio::time::timeout(TCP_CONNECT, TcpStream::connect(addr)).await {
                        Ok(Ok(s)) => {
                            let _ = s.set_nodelay(true);
                            Some(s)
                        }
                        _ => None,
                    };
                }
                if let Some(s) = stream.as_mut() {
                    if s.write_all(&msg).await.is_err() {
                        stream = None;
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {
                let now = time::now_ns();
                while let Some(due) = ex.poll_due(now) {
                    if let Due::GaveUp(Token(t)) = due {
                        if let Some(w) = waiters.remove(&t) {
                            let _ = w.reply.send(Outcome::GaveUp);
                        }
                    }
                }
            }
        }
    }
}

/// Logs a relay going down or coming back.
pub fn log_event(set: &RelaySet, ev: &HealthEvent) {
    let snap = set.snapshot();
    let name = |id: RelayId| {
        snap.get(usize::from(id.0))
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    match ev {
        HealthEvent::Down { id, calls, named } => tracing::warn!(
            relay = %name(*id),
            calls,
            call_ids = ?named,
            "media relay not answering: new calls go to the others; its calls stay on it"
        ),
        HealthEvent::Up { id } => {
            tracing::info!(relay = %name(*id), "media relay answering again: it takes new calls")
        }
    }
}

/// Pings every remote relay of `set` forever (abort the task to stop it).
pub async fn health_loop(set: Arc<Mutex<RelaySet>>, links: Links) {
    let (every, ping_timeout, remote): (Nanos, Nanos, Vec<RelayId>) = {
        let s = lock(&set);
        let cfg = s.config();
        let remote = s
            .ids()
            .filter(|&id| matches!(s.target(id), Some(RelayTarget::Ng { .. })))
            .collect();
        (cfg.ping_every_ns, cfg.ping_timeout_ns, remote)
    };
    let every = Duration::from_nanos(every.max(10 * NANOS_PER_MS));
    let ping_policy = RetryPolicy {
        timeout_ns: ping_timeout.max(10 * NANOS_PER_MS),
        attempts: 1,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for &id in &remote {
            let set = set.clone();
            let links = links.clone();
            if let Some(c) = lock(&set).counters_mut(id) {
                c.pings += 1;
            }
            tokio::spawn(async move {
                let ping = Owned::dict().with("command", "ping");
                let outcome = links.request(id, ping, ping_policy).await;
                let mut s = lock(&set);
                let ev = match outcome {
                    Outcome::Reply { reply, rtt_ns } => {
                        if reply.get("result").and_then(Owned::as_str) == Some("pong") {
                            if let Some(c) = s.counters_mut(id) {
                                c.pongs += 1;
                            }
                        }
                        s.on_answer(id, time::now_ns(), rtt_ns)
                    }
                    Outcome::GaveUp => s.on_ping_missed(id),
                };
                if let Some(ev) = ev {
                    log_event(&s, &ev);
                }
            });
        }
    }
}

fn lock(set: &Mutex<RelaySet>) -> std::sync::MutexGuard<'_, RelaySet> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

/// The set's figures (for `statistics` and `/metrics`).
pub fn snapshot(set: &Mutex<RelaySet>) -> Vec<RelaySnapshot> {
    lock(set).snapshot()
}
