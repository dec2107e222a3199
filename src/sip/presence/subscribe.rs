//! Subscriptions (RFC 6665) to `presence` (RFC 3856) and `presence.winfo` (RFC 3857): the
//! SUBSCRIBE server side (create, refresh, fetch, un-subscribe), the NOTIFYs (their
//! `Subscription-State`, one outstanding per subscription, newer state sent when it is
//! answered) and the end of a subscription (expiry, 481, timeout).
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use super::{
    event_of, pidf, secs, Answer, Due, Handling, Offer, OutRequest, Outstanding, PersistKey, Reach,
    Services, SubId, WatcherPolicy, ALLOW_EVENTS, NANOS_PER_SEC,
};
use crate::sip::parse::HeaderName;

/// The packages served here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Package {
    Presence,
    Winfo,
}

impl Package {
    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "presence" => Some(Package::Presence),
            "presence.winfo" => Some(Package::Winfo),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Package::Presence => "presence",
            Package::Winfo => "presence.winfo",
        }
    }
}

/// Where a subscription stands (RFC 6665 §4.1.3 `Subscription-State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SubState {
    Active,
    Pending,
}

/// One subscription: the dialog we hold as notifier and what it watches.
#[derive(Clone, Debug)]
pub(super) struct Subscription {
    pub(super) package: Package,
    pub(super) event_id: Option<String>,
    pub(super) presentity: String,
    /// The watcher's AoR (for watcher info).
    pub(super) watcher: String,
    pub(super) state: SubState,
    pub(super) dialog_key: String,
    pub(super) call_id: String,
    /// The SUBSCRIBE's To (our side, without our tag) and From (theirs, with its tag).
    pub(super) local_uri: String,
    pub(super) local_tag: String,
    pub(super) remote: String,
    pub(super) remote_target: String,
    pub(super) route_set: Vec<String>,
    pub(super) reach: Reach,
    pub(super) local_cseq: u32,
    pub(super) remote_cseq: u32,
    pub(super) expires_at: u64,
    /// The branch of the unanswered NOTIFY, if any.
    pub(super) in_flight: Option<String>,
    /// State changed while a NOTIFY was unanswered: send the current one when it is.
    pub(super) dirty: bool,
    /// Ending: the next NOTIFY says `terminated` and the subscription is gone after it.
    pub(super) ending: Option<&'static str>,
    /// The `terminated` NOTIFY has been sent.
    pub(super) final_sent: bool,
    /// Watcher-info document version (RFC 3858 §4.4: one more per NOTIFY).
    pub(super) version: u32,
}

pub(super) fn dialog_key(call_id: &str, remote_tag: &str, local_tag: &str) -> String {
    format!("{call_id}\n{remote_tag}\n{local_tag}")
}

impl Services {
    pub(super) fn on_subscribe(&mut self, o: &Offer<'_, '_>, now: u64) -> Handling {
        let msg = o.msg;
        let event = event_of(msg);
        let package = event.as_ref().and_then(|(p, _)| Package::parse(p));
        if let Some(tag) = msg.to_tag() {
            // In a dialog: ours if it matches one of our subscriptions.
            let key = dialog_key(
                msg.call_id().unwrap_or(""),
                msg.from_tag().unwrap_or(""),
                tag,
            );
            if let Some(&id) = self.dialogs.get(&key) {
                return self.refresh(id, o, now);
            }
            if o.to_server && package.is_some() {
                return Handling::Answer(
                    Answer::new(481, "Subscription Does Not Exist"),
                    Vec::new(),
                );
            }
            return Handling::Pass;
        }
        let Some(target) = o.target.clone() else {
            return Handling::Pass;
        };
        let Some(package) = package else {
            if o.devices.is_empty() || event.is_none() {
                return bad_event();
            }
            // A package a device may serve (dialog, message-summary...): routed to it.
            return Handling::Pass;
        };
        let expires = match self.lifetime(msg) {
            Ok(e) => e,
            Err(a) => return Handling::Answer(a, Vec::new()),
        };
        let watcher = o.from_aor.clone().unwrap_or_default();
        let state = match package {
            Package::Winfo if watcher != target => {
                return Handling::Answer(
                    Answer::new(403, "Forbidden - Not Your Watchers"),
                    Vec::new(),
                )
            }
            Package::Winfo => SubState::Active,
            Package::Presence if o.from_local => SubState::Active,
            Package::Presence => match self.cfg.foreign_watchers {
                WatcherPolicy::Allow => SubState::Active,
                WatcherPolicy::Pending => SubState::Pending,
                WatcherPolicy::Refuse => {
                    return Handling::Answer(
                        Answer::new(403, "Forbidden - Watcher Not Authorized"),
                        Vec::new(),
                    )
                }
            },
        };
        let Some(contact) = contact_uri(msg) else {
            return Handling::Answer(
                Answer::new(400, "Bad Request - Missing Contact"),
                Vec::new(),
            );
        };
        let watchers = self
            .presentities
            .get(&target)
            .map_or(0, |p| p.watchers.len() + p.winfo.len());
        // A fetch (Expires: 0) lives until its NOTIFY is answered: it counts in the total.
        if self.subs.len() >= self.cfg.max_subscriptions
            || (expires > 0 && watchers >= self.cfg.max_watchers_per_presentity)
        {
            self.stats.refused_full += 1;
            return Handling::Answer(
                Answer::new(503, "Service Unavailable - Too Many Subscriptions")
                    .with("Retry-After", "60"),
                Vec::new(),
            );
        }
        let registered = !o.devices.is_empty();
        let id = SubId(self.next_id);
        self.next_id += 1;
        let to = msg
            .header(HeaderName::To)
            .map_or("", |h| h.value)
            .to_owned();
        let sub = Subscription {
            package,
            event_id: event.and_then(|(_, id)| id),
            presentity: target.clone(),
            watcher,
            state,
            dialog_key: dialog_key(
                msg.call_id().unwrap_or(""),
                msg.from_tag().unwrap_or(""),
                &o.local_tag,
            ),
            call_id: msg.call_id().unwrap_or("").to_owned(),
            local_uri: to,
            local_tag: o.local_tag.clone(),
            remote: msg
                .header(HeaderName::From)
                .map_or("", |h| h.value)
                .to_owned(),
            remote_target: contact,
            route_set: msg
                .route_set(HeaderName::RecordRoute)
                .unwrap_or_default()
                .iter()
                .map(|r| r.uri.as_str().to_owned())
                .collect(),
            reach: o.reach,
            local_cseq: 0,
            remote_cseq: msg.cseq().map_or(0, |c| c.seq),
            expires_at: now.saturating_add(u64::from(expires) * NANOS_PER_SEC),
            in_flight: None,
            dirty: false,
            ending: (expires == 0).then_some("timeout"),
            final_sent: false,
            version: 0,
        };
        let answer = ok(expires, self.contact(o.reach.transport));
        let p = self.presentity_mut(&target, now);
        if registered {
            p.registered = true;
        }
        if expires > 0 {
            match package {
                Package::Presence => p.watchers.push(id),
                Package::Winfo => p.winfo.push(id),
            }
            self.dialogs.insert(sub.dialog_key.clone(), id);
            self.arm(sub.expires_at, Due::SubExpires(id));
        }
        self.subs.insert(id, sub);
        let mut out = Vec::new();
        out.extend(self.send_notify(id, now));
        if package == Package::Presence && expires > 0 {
            // The presentity's owner watching its watchers learns of the new one.
            out.extend(self.winfo_changed(&target, now));
            self.watchers_changed(&target);
        }
        Handling::Answer(answer, out)
    }

    /// A SUBSCRIBE in one of our subscription dialogs: refresh or un-subscribe.
    fn refresh(&mut self, id: SubId, o: &Offer<'_, '_>, now: u64) -> Handling {
        let msg = o.msg;
        let expires = match self.lifetime(msg) {
            Ok(e) => e,
            Err(a) => return Handling::Answer(a, Vec::new()),
        };
        let seq = msg.cseq().map_or(0, |c| c.seq);
        let contact = self.contact(o.reach.transport);
        let Some(sub) = self.subs.get_mut(&id) else {
            return Handling::Answer(Answer::new(481, "Subscription Does Not Exist"), Vec::new());
        };
        if seq <= sub.remote_cseq {
            return Handling::Answer(
                Answer::new(500, "Server Internal Error - CSeq Out of Order"),
                Vec::new(),
            );
        }
        sub.remote_cseq = seq;
        sub.reach = o.reach;
        if let Some(c) = contact_uri(msg) {
            sub.remote_target = c;
        }
        let old = sub.expires_at;
        sub.expires_at = now.saturating_add(u64::from(expires) * NANOS_PER_SEC);
        let at = sub.expires_at;
        self.timers.remove(&(old, Due::SubExpires(id)));
        let Some(sub) = self.subs.get_mut(&id) else {
            return Handling::Answer(Answer::new(481, "Subscription Does Not Exist"), Vec::new());
        };
        // Its new expiry, for the other fronts' watcher info.
        let watched = (sub.package == Package::Presence).then(|| sub.presentity.clone());
        if expires == 0 {
            sub.ending = Some("timeout");
        } else {
            self.arm(at, Due::SubExpires(id));
        }
        if let Some(aor) = watched {
            self.watchers_changed(&aor);
        }
        let out = self.send_notify(id, now);
        Handling::Answer(ok(expires, contact), out)
    }

    /// Sends the subscription's current state now, or marks it to be sent when the
    /// unanswered NOTIFY is answered.
    pub(super) fn send_notify(&mut self, id: SubId, now: u64) -> Vec<OutRequest> {
        let Some(sub) = self.subs.get(&id) else {
            return Vec::new();
        };
        if sub.in_flight.is_some() {
            if let Some(s) = self.subs.get_mut(&id) {
                s.dirty = true;
            }
            return Vec::new();
        }
        let body = match (sub.package, sub.state) {
            (_, SubState::Pending) => None,
            (Package::Presence, SubState::Active) => {
                Some(("application/pidf+xml", self.document(&sub.presentity)))
            }
            (Package::Winfo, SubState::Active) => Some((
                "application/watcherinfo+xml",
                self.watcher_info(&sub.presentity, sub.version),
            )),
        };
        let branch = self.mint("b");
        let Some(sub) = self.subs.get_mut(&id) else {
            return Vec::new();
        };
        sub.local_cseq += 1;
        sub.version += 1;
        sub.dirty = false;
        sub.final_sent = sub.ending.is_some();
        sub.in_flight = Some(branch.clone());
        let state = match (sub.ending, sub.state) {
            (Some(reason), _) => format!("terminated;reason={reason}"),
            (None, SubState::Active) => format!(
                "active;expires={}",
                secs(sub.expires_at.saturating_sub(now))
            ),
            (None, SubState::Pending) => format!(
                "pending;expires={}",
                secs(sub.expires_at.saturating_sub(now))
            ),
        };
        let sub = sub.clone();
        let mut s = self.request_head("NOTIFY", &sub.remote_target, sub.reach, &branch);
        for r in &sub.route_set {
            let _ = write!(s, "Route: <{r}>\r\n");
        }
        let _ = write!(
            s,
            "From: {};tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} NOTIFY\r\nContact: {}\r\n",
            sub.local_uri,
            sub.local_tag,
            sub.remote,
            sub.call_id,
            sub.local_cseq,
            self.contact(sub.reach.transport)
        );
        match &sub.event_id {
            Some(eid) => {
                let _ = write!(s, "Event: {};id={eid}\r\n", sub.package.name());
            }
            None => {
                let _ = write!(s, "Event: {}\r\n", sub.package.name());
            }
        }
        let _ = write!(s, "Subscription-State: {state}\r\n");
        let mut bytes = match &body {
            Some((ty, b)) => {
                let _ = write!(
                    s,
                    "Content-Type: {ty}\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                );
                s.into_bytes()
            }
            None => {
                s.push_str("Content-Length: 0\r\n\r\n");
                s.into_bytes()
            }
        };
        if let Some((_, b)) = body {
            bytes.extend_from_slice(&b);
        }
        self.stats.notifies_sent += 1;
        self.touch(PersistKey::Subscription(id));
        self.outstanding
            .insert(branch.clone(), Outstanding::Notify(id));
        vec![OutRequest {
            reach: sub.reach,
            branch,
            method: "NOTIFY",
            bytes,
        }]
    }

    /// A NOTIFY of subscription `id` was answered (or timed out).
    pub(super) fn notify_result(&mut self, id: SubId, status: u16, now: u64) -> Vec<OutRequest> {
        let Some(sub) = self.subs.get_mut(&id) else {
            return Vec::new();
        };
        sub.in_flight = None;
        if sub.final_sent {
            self.remove_sub(id, now)
        } else if status >= 300 {
            // RFC 6665 §4.2.2: a 481, a timeout or another failure ends the subscription
            // (no further NOTIFY: the watcher is gone or refuses them).
            self.stats.notifies_failed += 1;
            self.remove_sub(id, now)
        } else if sub.dirty || sub.ending.is_some() {
            // Newer state, or the end, came while this NOTIFY was unanswered.
            self.send_notify(id, now)
        } else {
            Vec::new()
        }
    }

    /// A subscription's expiry timer fired.
    pub(super) fn sub_expired(&mut self, id: SubId, deadline: u64, now: u64) -> Vec<OutRequest> {
        let Some(sub) = self.subs.get_mut(&id) else {
            return Vec::new();
        };
        if sub.expires_at != deadline || sub.ending.is_some() {
            return Vec::new();
        }
        sub.ending = Some("timeout");
        self.send_notify(id, now)
    }

    /// Forgets a subscription; the watchers of the presentity's watcher list learn of it.
    fn remove_sub(&mut self, id: SubId, now: u64) -> Vec<OutRequest> {
        let Some(sub) = self.subs.remove(&id) else {
            return Vec::new();
        };
        self.touch(PersistKey::Subscription(id));
        self.timers.remove(&(sub.expires_at, Due::SubExpires(id)));
        self.dialogs.remove(&sub.dialog_key);
        if let Some(branch) = &sub.in_flight {
            self.outstanding.remove(branch);
        }
        let mut changed = false;
        if let Some(p) = self.presentities.get_mut(&sub.presentity) {
            let before = p.watchers.len();
            p.watchers.retain(|w| *w != id);
            p.winfo.retain(|w| *w != id);
            changed = p.watchers.len() != before;
        }
        self.drop_presentity_if_idle(&sub.presentity);
        if changed {
            self.watchers_changed(&sub.presentity);
            self.winfo_changed(&sub.presentity, now)
        } else {
            Vec::new()
        }
    }

    /// The watcher list of `aor` changed: its `presence.winfo` subscribers are told.
    pub(super) fn winfo_changed(&mut self, aor: &str, now: u64) -> Vec<OutRequest> {
        let ids = self
            .presentities
            .get(aor)
            .map(|p| p.winfo.clone())
            .unwrap_or_default();
        ids.into_iter()
            .flat_map(|id| self.send_notify(id, now))
            .collect()
    }

    /// RFC 3858 watcher information for `aor` (always a full document).
    fn watcher_info(&self, aor: &str, version: u32) -> Vec<u8> {
        let mut s = String::with_capacity(256);
        let _ = write!(
            s,
            "<?xml version=\"1.0\"?>\r\n<watcherinfo xmlns=\"urn:ietf:params:xml:ns:watcherinfo\" version=\"{version}\" state=\"full\">\r\n<watcher-list resource=\"{}\" package=\"presence\">\r\n",
            pidf::escape(aor)
        );
        if let Some(p) = self.presentities.get(aor) {
            for id in &p.watchers {
                let Some(w) = self.subs.get(id) else { continue };
                let status = match w.state {
                    SubState::Active => "active",
                    SubState::Pending => "pending",
                };
                let _ = write!(
                    s,
                    "<watcher id=\"w{}\" event=\"subscribe\" status=\"{status}\">{}</watcher>\r\n",
                    id.0,
                    pidf::escape(&w.watcher)
                );
            }
        }
        if let Some(p) = self.presentities.get(aor) {
            for (front, list) in &p.remote_watchers {
                // Ids unique in the document: the other front's id under its name's hash.
                let f = crate::sip::hash::fnv(0, &[front.as_bytes()]) as u32;
                for w in list {
                    let status = if w.pending { "pending" } else { "active" };
                    let _ = write!(
                        s,
                        "<watcher id=\"w{f:08x}.{}\" event=\"subscribe\" status=\"{status}\">{}</watcher>\r\n",
                        w.id,
                        pidf::escape(&w.watcher)
                    );
                }
            }
        }
        s.push_str("</watcher-list>\r\n</watcherinfo>\r\n");
        s.into_bytes()
    }
}

fn ok(expires: u32, contact: String) -> Answer {
    Answer::new(200, "OK")
        .with("Expires", expires.to_string())
        .with("Contact", contact)
}

fn bad_event() -> Handling {
    Handling::Answer(
        Answer::new(489, "Bad Event").with("Allow-Events", ALLOW_EVENTS),
        Vec::new(),
    )
}

/// The first Contact URI of a request (the remote target of the dialog it makes).
fn contact_uri(msg: &crate::sip::parse::Message<'_>) -> Option<String> {
    match msg.contacts().ok()? {
        crate::sip::header::Contact::List(l) => l.first().map(|c| c.uri.as_str().to_owned()),
        crate::sip::header::Contact::Star => None,
    }
}
