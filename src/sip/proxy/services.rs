//! The proxy's side of `sip::presence`: what it tells the presence agent, compositor and
//! message store about a request at the interception point (the target AoR, the target's
//! devices as routing reaches them, where the sender is reached), and the requests they
//! originate, sent through client transactions of their own whose final status goes back
//! to them. Also registration changes and their timers.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use super::nat::{is_private, via_mismatch};
use super::route::{Decision, Hop};
use super::state::{Cx, Proxy};
use crate::sip::media::MediaHook;
use crate::sip::number::{number_aor, sip_phone_number, tel_number};
use crate::sip::parse::{HeaderName, Message};
use crate::sip::presence::{
    Device, Handling, Offer, OutRequest, PersistRecord, Reach, RemoteError, RemoteRecord,
    RestoreCounts,
};
use crate::sip::registrar::LocationStore;
use crate::sip::transport::{Transmit, Transport};
use crate::sip::uri::{Scheme, SipUri, Uri};

/// What the services made of a request at the interception point.
pub(super) enum Served {
    /// Answered here.
    Answered,
    /// Not theirs: route it as usual.
    Route,
    /// Another front holds its state: forward it there, as is.
    ToFront(Hop),
}

/// The next hop to another front, by its SIP URI (`sip:IP:PORT`).
fn front_hop(front: &str) -> Option<Hop> {
    let u = SipUri::parse(front).ok()?;
    let ip = u.host.ip()?;
    Some(Hop {
        ruri: None,
        to: SocketAddr::new(ip, u.port_or_default()),
        transport: Transport::of_uri(&u),
        route: None,
    })
}

/// The AoR a SIP URI names for presence and messages: scheme, user (a number normalised),
/// lower-case host, no port (a user is the same user on any of our ports).
pub(super) fn service_aor(u: &SipUri<'_>) -> Option<String> {
    let scheme = match u.scheme {
        Scheme::Sip => "sip",
        Scheme::Sips => "sips",
    };
    let user = match sip_phone_number(u) {
        Some(n) => n,
        None => String::from_utf8_lossy(&u.user_decoded()?).into_owned(),
    };
    Some(format!(
        "{scheme}:{user}@{}",
        u.host_raw.to_ascii_lowercase()
    ))
}

impl<S: LocationStore> Proxy<S> {
    /// The domain numbers (`tel:` URIs) are looked up in.
    pub(super) fn default_domain(&self) -> String {
        self.cfg
            .domains
            .first()
            .cloned()
            .unwrap_or_else(|| self.cfg.local.ip().to_string())
    }

    /// The AoR a Request-URI names in one of our domains (a `tel:` number in the default
    /// domain), for presence and messages.
    pub(super) fn target_aor(&self, ruri: &Uri<'_>) -> Option<String> {
        match ruri {
            Uri::Sip(u) if self.is_our_uri(u) => service_aor(u),
            Uri::Tel(t) => Some(number_aor(&tel_number(t)?, &self.default_domain())),
            _ => None,
        }
    }

    /// The active devices of `aor` as routing reaches them.
    fn devices(&self, aor: &str, now: u64) -> Vec<Device> {
        let Ok(uri) = Uri::parse(aor) else {
            return Vec::new();
        };
        match self.lookup(&uri, now) {
            Decision::Forward(hops) => hops
                .into_iter()
                .map(|h| Device {
                    uri: h.ruri.unwrap_or_else(|| aor.to_owned()),
                    reach: Reach {
                        to: h.to,
                        transport: h.transport,
                    },
                    route: h.route,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Where requests in a dialog with the sender of `msg` go: its Contact when that is a
    /// public address the request came from directly, else the address it came from
    /// (NAT, or a proxy on the way that will route them).
    fn sender_reach(msg: &Message<'_>, src: SocketAddr, transport: Transport) -> Reach {
        let direct = msg
            .top_via()
            .is_ok_and(|v| !via_mismatch(&v, src) && msg.vias().count() == 1);
        let contact = match msg.contacts() {
            Ok(crate::sip::header::Contact::List(l)) => l.first().and_then(|c| {
                let u = c.sip_uri()?;
                let ip = u.host.ip()?;
                (!is_private(ip)).then(|| {
                    (
                        SocketAddr::new(ip, u.port_or_default()),
                        Transport::of_uri(u),
                    )
                })
            }),
            _ => None,
        };
        match contact {
            Some((to, t)) if direct && transport == Transport::Udp => Reach { to, transport: t },
            _ => Reach { to: src, transport },
        }
    }

    /// Step 7 of `on_request` for presence and messages: whether the services answered,
    /// leave the request to routing, or send it to another front.
    pub(super) fn offer_to_services(
        &mut self,
        msg: &Message<'_>,
        key: &str,
        cx: &mut Cx<'_>,
    ) -> Served {
        if self.presence.is_none()
            || !matches!(msg.method(), Some("SUBSCRIBE" | "PUBLISH" | "MESSAGE"))
        {
            return Served::Route;
        }
        let Some(Ok(ruri)) = msg.request_uri() else {
            return Served::Route;
        };
        // A request routed through us by Route headers is not for us to serve.
        if msg
            .route_set(HeaderName::Route)
            .unwrap_or_default()
            .iter()
            .any(|r| !r.sip_uri().is_some_and(|u| self.is_our_route(u)))
        {
            return Served::Route;
        }
        let target = self.target_aor(&ruri);
        let to_server = matches!(&ruri, Uri::Sip(u) if self.is_our_uri(u) && u.user.is_none());
        let from = msg.from().ok();
        let from_sip = from.as_ref().and_then(|f| f.sip_uri());
        let from_local = from_sip.is_some_and(|u| self.is_our_uri(u));
        let offer = Offer {
            msg,
            devices: target
                .as_deref()
                .map(|a| self.devices(a, cx.now))
                .unwrap_or_default(),
            target,
            to_server,
            from_aor: from_sip.and_then(service_aor),
            from_local,
            reach: Self::sender_reach(msg, cx.src, cx.transport),
            local_tag: self.tag_for(key),
        };
        let Some(services) = self.presence.as_mut() else {
            return Served::Route;
        };
        match services.on_request(&offer, cx.now) {
            Handling::Pass => Served::Route,
            Handling::Answer(a, reqs) => {
                let extra: Vec<(&str, &str)> =
                    a.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                self.answer_locally(msg, key.to_owned(), a.status, a.reason, &extra, cx);
                self.send_service_requests(reqs, cx);
                Served::Answered
            }
            Handling::ToFront(front) => match front_hop(&front) {
                Some(hop) => Served::ToFront(hop),
                None => {
                    let reason = "Conditional Request Failed";
                    self.answer_locally(msg, key.to_owned(), 412, reason, &[], cx);
                    Served::Answered
                }
            },
        }
    }

    /// Sends requests the services originate, each through a client transaction.
    pub(super) fn send_service_requests(&mut self, reqs: Vec<OutRequest>, cx: &mut Cx<'_>) {
        for r in reqs {
            let hop = Hop {
                ruri: None,
                to: r.reach.to,
                transport: r.reach.transport,
                route: None,
            };
            self.new_client_tx(None, &r.branch, r.method, &hop, r.bytes.clone(), cx.now);
            cx.push(r.reach.to, r.reach.transport, r.bytes);
        }
    }

    /// The final status (408 for a timeout) of a request the services sent.
    pub(super) fn service_result(&mut self, branch: &str, status: u16, cx: &mut Cx<'_>) {
        let Some(services) = self.presence.as_mut() else {
            return;
        };
        let reqs = services.on_result(branch, status, cx.now);
        self.send_service_requests(reqs, cx);
    }

    /// A REGISTER for `to` was accepted: stored messages and registration-derived state.
    pub(super) fn service_bindings(&mut self, to: &SipUri<'_>, cx: &mut Cx<'_>) {
        if self.presence.is_none() {
            return;
        }
        let Some(aor) = service_aor(to) else { return };
        self.bindings_changed(&aor, cx);
    }

    /// The bindings of `aor` (a service AoR) changed: its devices as routing reaches them
    /// now get the stored messages, and its registration-derived state is NOTIFYed.
    fn bindings_changed(&mut self, aor: &str, cx: &mut Cx<'_>) {
        let devices = self.devices(aor, cx.now);
        let Some(services) = self.presence.as_mut() else {
            return;
        };
        let reqs = services.on_bindings(aor, &devices, cx.now);
        self.send_service_requests(reqs, cx);
    }

    /// The services' timers.
    pub(super) fn service_timers(&mut self, cx: &mut Cx<'_>) {
        let due = self
            .presence
            .as_ref()
            .and_then(|s| s.poll_timeout())
            .is_some_and(|t| t <= cx.now);
        let housekeeping = self.next_housekeeping.is_none_or(|h| h <= cx.now);
        if !due && !housekeeping {
            return;
        }
        let now = cx.now;
        let port = self.cfg.local.port();
        let registrar = &self.registrar;
        let registered = |aor: &str| {
            !registrar.lookup(aor, now).is_empty()
                || !registrar.lookup(&format!("{aor}:{port}"), now).is_empty()
        };
        let Some(services) = self.presence.as_mut() else {
            return;
        };
        let mut reqs = services.handle_timeout(now);
        if housekeeping {
            reqs.extend(services.check_registrations(now, &registered));
        }
        self.send_service_requests(reqs, cx);
    }
}

impl<S: LocationStore> Proxy<S> {
    /// Loads the presence records a store held at start (publications, subscriptions,
    /// stored messages) and starts recording changes for [`Proxy::take_presence_records`].
    /// `None` when presence is not served.
    pub fn restore_presence(
        &mut self,
        records: &[(String, String)],
        now: u64,
        unix_at_zero_ns: u64,
    ) -> Option<RestoreCounts> {
        let port = self.cfg.local.port();
        let registrar = &self.registrar;
        let registered = |aor: &str| {
            !registrar.lookup(aor, now).is_empty()
                || !registrar.lookup(&format!("{aor}:{port}"), now).is_empty()
        };
        let services = self.presence.as_mut()?;
        services.enable_persistence();
        Some(services.restore(records, now, unix_at_zero_ns, &registered))
    }

    /// The presence records changed since the last call (see `sip::presence::persist`).
    pub fn take_presence_records(&mut self, unix_at_zero_ns: u64) -> Vec<PersistRecord> {
        self.presence
            .as_mut()
            .map(|s| s.take_persist(unix_at_zero_ns))
            .unwrap_or_default()
    }

    /// A record the store refused: taken again next time.
    pub fn presence_persist_again(&mut self, key: &str) {
        if let Some(s) = self.presence.as_mut() {
            s.persist_again(key);
        }
    }
}

/// State learnt from other SIP fronts sharing the store (`store::share`): their
/// publications, and their registrations' effect on presence and stored messages.
impl<S: LocationStore> Proxy<S> {
    /// Another front's presence record (`presentity:AOR`, `watchers:AOR`); our watchers of
    /// the AoR get the composed state, our watcher-info subscribers its watchers.
    pub fn remote_presence(
        &mut self,
        record: RemoteRecord<'_>,
        now: u64,
        unix_at_zero_ns: u64,
        media: &mut dyn MediaHook,
    ) -> Result<Vec<Transmit>, RemoteError> {
        let Some(services) = self.presence.as_mut() else {
            return Ok(Vec::new());
        };
        let reqs = services.apply_remote_record(record, now, unix_at_zero_ns)?;
        Ok(self.send_from_outside(reqs, now, media))
    }

    /// Sends requests the services made outside a message or timer (another front's
    /// change): what to transmit.
    fn send_from_outside(
        &mut self,
        reqs: Vec<OutRequest>,
        now: u64,
        media: &mut dyn MediaHook,
    ) -> Vec<Transmit> {
        let mut cx = Cx::timer(now, self.cfg.local, media);
        self.send_service_requests(reqs, &mut cx);
        cx.out
    }

    /// Every other front's shared presence records, (front, key, record), after a
    /// reconnect; how many could not be applied.
    pub fn reload_remote_presence(
        &mut self,
        records: &[(String, String, String)],
        now: u64,
        unix_at_zero_ns: u64,
        media: &mut dyn MediaHook,
    ) -> (Vec<Transmit>, usize) {
        let Some(services) = self.presence.as_mut() else {
            return (Vec::new(), 0);
        };
        let (reqs, bad) = services.reload_remote(records, now, unix_at_zero_ns);
        (self.send_from_outside(reqs, now, media), bad)
    }

    /// Bindings changed at another front (already applied to the location store) for these
    /// AoRs (`None`: every AoR presence holds something of, after a reload): stored messages
    /// go to the devices, registration-derived state is NOTIFYed, as after a REGISTER here.
    pub fn remote_bindings(
        &mut self,
        aors: Option<&[String]>,
        now: u64,
        media: &mut dyn MediaHook,
    ) -> Vec<Transmit> {
        let Some(services) = self.presence.as_ref() else {
            return Vec::new();
        };
        let aors = match aors {
            Some(a) => a.to_vec(),
            None => services.known_aors(),
        };
        let mut cx = Cx::timer(now, self.cfg.local, media);
        for aor in aors {
            let service = match Uri::parse(&aor) {
                Ok(Uri::Sip(u)) => service_aor(&u),
                _ => None,
            };
            if let Some(a) = service {
                self.bindings_changed(&a, &mut cx);
            }
        }
        cx.out
    }

    /// Shares watcher lists with the other fronts (their watcher info).
    pub fn share_presence(&mut self) {
        if let Some(s) = self.presence.as_mut() {
            s.enable_sharing();
        }
    }

    /// Marks every presence record to be written again (the store lost them).
    pub fn presence_persist_all(&mut self) {
        if let Some(s) = self.presence.as_mut() {
            s.persist_all();
        }
    }
}
