//! The built-in SIP proxy's media anchoring: a [`MediaHook`] over the one [`SessionManager`].
//!
//! The proxy (`sip::proxy`) decides *when* media is touched (offer / answer / delete, with the
//! tags already ordered the way Kamailio's rtpengine module orders them); this module decides
//! *how*, through exactly the code path the ng `offer`/`answer`/`delete` commands take: the
//! same manager, the same `negotiate` step, the same SDP rewriter. So a call set up by the
//! built-in proxy shows up in ng `list`/`query`/`statistics` like any other.
//!
//! Policy (the equivalent of `rtpengine_manage("replace-origin replace-session-connection
//! ICE=remove")`, rtpengine's defaults otherwise):
//! - Every relayed m= line and the session `c=` name the relay; `o=` is replaced too; ICE
//!   attributes are removed (we do not terminate ICE); symmetric latching.
//! - NAT (Kamailio's `nat_uac_test` flag 8, then `SIP-source-address`): when the SDP's media
//!   address is private (RFC 1918, RFC 6598 shared space, IPv6 ULA) but the SIP message came
//!   from a non-private address, the media endpoint is the SIP source IP with the SDP's port.
//!   The relay then never sends media to an unreachable private address.
//! - Two networks: the interface names the proxy chose per side (`MediaCtx::direction`, from
//!   where each peer is) become ng `direction`, so each side's SDP names its own network.
//! - Delete: Call-ID + From-tag (+ Via branch), no To-tag, as the module sends it: the whole
//!   call, or only a forked branch's dialogue when the branch names one. A delete of a call the
//!   relay does not hold is not an error (a BYE for a call without SDP).
//! - Failures become SIP statuses the proxy can send instead of forwarding: capacity (session
//!   limit, out of ports) `503` with rtpengine's wording; SDP the relay cannot anchor `488`;
//!   malformed identifiers `400`; anything else `500`. An answer the relay holds no offer for
//!   (it restarted, or the offer was not anchored) passes unchanged.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sdp::Sdp;
use crate::session::backend::MediaBackend;
use crate::session::manager::{DeleteRequest, SessionError, SessionManager, Signal};
use crate::session::negotiate::NegotiateOptions;
use crate::session::record::EndReason;
use crate::sip::media::{MediaCtx, MediaHook, MediaOp, MediaResult};
use crate::time::Nanos;

/// The options every SIP-driven offer and answer uses (see the module doc).
pub fn base_options() -> NegotiateOptions {
    NegotiateOptions {
        replace_origin: true,
        remove_ice: true,
        ..NegotiateOptions::default()
    }
}

/// Private, CGNAT, link-local and IPv6 ULA/link-local addresses: one rule for the proxy's NAT
/// handling and the media's (a private SDP address from a public source is behind NAT).
pub use crate::sip::proxy::is_private;

/// The address the SDP's relayed media name: the first media line's `c=` (or the session's).
fn sdp_media_ip(sdp: &Sdp<'_>) -> Option<IpAddr> {
    sdp.media
        .iter()
        .filter(|m| !m.is_rejected())
        .find_map(|m| m.connection.or(sdp.session_connection))
        .or(sdp.session_connection)
        .map(|c| c.addr)
        .filter(|ip| !ip.is_unspecified())
}

/// The options for one SDP from `source`: [`base_options`] plus the NAT rule.
pub fn options_for(body: &[u8], source: IpAddr) -> NegotiateOptions {
    let mut opts = base_options();
    if !is_private(source) {
        if let Some(ip) = Sdp::parse(body).ok().as_ref().and_then(sdp_media_ip) {
            if is_private(ip) {
                opts.sip_source = Some(source);
            }
        }
    }
    opts
}

fn nonempty(s: Option<&str>) -> Option<&str> {
    s.filter(|t| !t.is_empty())
}

fn failed(status: u16, reason: impl Into<String>) -> MediaResult {
    MediaResult::Failed {
        status,
        reason: reason.into(),
    }
}

fn refusal(e: &SessionError) -> MediaResult {
    match e {
        SessionError::SessionLimit | SessionError::OutOfPorts | SessionError::Draining => {
            failed(503, e.to_string())
        }
        SessionError::Negotiate(_) | SessionError::TooManyBranches(_) => {
            failed(488, "Not Acceptable Here")
        }
        SessionError::TooLong(_) | SessionError::Empty(_) | SessionError::NoToTag => {
            failed(400, "Bad Request")
        }
        SessionError::UnknownCall | SessionError::NoOffer | SessionError::NotFound => {
            MediaResult::Unchanged
        }
        SessionError::Backend(_) => failed(500, "Server Internal Error"),
    }
}

/// One media step on a manager the caller has locked.
pub fn apply<B: MediaBackend>(
    mgr: &mut SessionManager<B>,
    ctx: &MediaCtx<'_>,
    body: &[u8],
    now: Nanos,
) -> MediaResult {
    match ctx.op {
        MediaOp::Offer | MediaOp::Answer => {
            if body.is_empty() {
                return MediaResult::Unchanged;
            }
            let sig = Signal {
                call_id: ctx.call_id,
                from_tag: ctx.from_tag,
                to_tag: nonempty(ctx.to_tag),
                via_branch: nonempty(ctx.via_branch),
                label: None,
                sdp: body,
            };
            let mut opts = options_for(body, ctx.source.ip());
            if let Some(d) = ctx.direction {
                opts.direction = d.iter().map(|n| (*n).to_owned()).collect();
            }
            let result = match ctx.op {
                MediaOp::Answer => mgr.answer(&sig, &opts, now),
                _ => mgr.offer(&sig, &opts, now),
            };
            match result {
                Ok(n) => {
                    for w in &n.warnings {
                        tracing::debug!(call_id = ctx.call_id, warning = %w, "media");
                    }
                    MediaResult::NewBody(n.sdp)
                }
                Err(e) => {
                    tracing::debug!(call_id = ctx.call_id, op = ?op_name(&ctx.op), error = %e, "media refused");
                    refusal(&e)
                }
            }
        }
        MediaOp::Delete => {
            let req = DeleteRequest {
                call_id: ctx.call_id,
                from_tag: nonempty(Some(ctx.from_tag)),
                to_tag: None,
                via_branch: nonempty(ctx.via_branch),
                delay_ns: None,
                reason: EndReason::Bye,
            };
            match mgr.delete(&req, false, now) {
                Ok(_) | Err(SessionError::NotFound) => MediaResult::Unchanged,
                Err(e) => {
                    tracing::debug!(call_id = ctx.call_id, error = %e, "media delete refused");
                    MediaResult::Unchanged
                }
            }
        }
    }
}

fn op_name(op: &MediaOp) -> &'static str {
    match op {
        MediaOp::Offer => "offer",
        MediaOp::Answer => "answer",
        MediaOp::Delete => "delete",
    }
}

/// The hook over a manager borrowed for the duration of one call (tests, single-threaded use).
pub struct ManagerMedia<'m, B: MediaBackend> {
    pub manager: &'m mut SessionManager<B>,
}

impl<B: MediaBackend> MediaHook for ManagerMedia<'_, B> {
    fn media(&mut self, ctx: &MediaCtx<'_>, body: &[u8], now_ns: u64) -> MediaResult {
        apply(self.manager, ctx, body, now_ns)
    }
}

/// The hook the SIP server uses: the manager shared with the ng server, locked only for the
/// duration of one media step (messages without SDP never touch the lock).
pub struct SharedMedia<B: MediaBackend> {
    manager: Arc<Mutex<SessionManager<B>>>,
}

impl<B: MediaBackend> SharedMedia<B> {
    pub fn new(manager: Arc<Mutex<SessionManager<B>>>) -> Self {
        SharedMedia { manager }
    }

    fn lock(&self) -> MutexGuard<'_, SessionManager<B>> {
        // A panic elsewhere while holding the lock leaves a usable manager (the ng server
        // recovers the same way).
        self.manager.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B: MediaBackend> Clone for SharedMedia<B> {
    fn clone(&self) -> Self {
        SharedMedia {
            manager: self.manager.clone(),
        }
    }
}

impl<B: MediaBackend> MediaHook for SharedMedia<B> {
    fn media(&mut self, ctx: &MediaCtx<'_>, body: &[u8], now_ns: u64) -> MediaResult {
        let mut mgr = self.lock();
        apply(&mut mgr, ctx, body, now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::fake::FakeBackend;
    use crate::session::manager::ManagerConfig;
    use crate::session::negotiate::RelayInterface;
    use std::net::SocketAddr;

    const OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8\r\na=ice-ufrag:abcd\r\na=candidate:1 1 UDP 1 198.51.100.7 6000 typ host\r\n";
    const ANSWER: &str = "v=0\r\no=bob 2 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 8\r\n";
    const NATED: &str = "v=0\r\no=bob 2 2 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 8\r\n";

    fn mgr(port_max: u16, max_sessions: usize) -> SessionManager<FakeBackend> {
        let cfg = ManagerConfig {
            interfaces: vec![RelayInterface::new("x", "203.0.113.1".parse().unwrap())],
            max_sessions,
            port_min: 30000,
            port_max,
            ..ManagerConfig::default()
        };
        SessionManager::new(FakeBackend::new(30000, port_max).unwrap(), cfg, 1)
    }

    fn ctx<'a>(op: MediaOp, call: &'a str, to: Option<&'a str>, src: &str) -> MediaCtx<'a> {
        MediaCtx {
            op,
            call_id: call,
            from_tag: "ft",
            to_tag: to,
            via_branch: None,
            source: src.parse::<SocketAddr>().unwrap(),
            direction: None,
        }
    }

    fn body(r: MediaResult) -> String {
        match r {
            MediaResult::NewBody(b) => String::from_utf8(b).unwrap(),
            other => panic!("expected a new body, got {other:?}"),
        }
    }

    #[test]
    fn the_proxys_direction_picks_each_sides_interface() {
        let cfg = ManagerConfig {
            interfaces: vec![
                RelayInterface::new("internal", "10.0.0.1".parse().unwrap()),
                RelayInterface::new("external", "203.0.113.1".parse().unwrap()),
            ],
            port_min: 30000,
            port_max: 30999,
            ..ManagerConfig::default()
        };
        let mut m = SessionManager::new(FakeBackend::new(30000, 30999).unwrap(), cfg, 1);
        let mut hook = ManagerMedia { manager: &mut m };
        let dir = Some(["internal", "external"]);
        let offer = MediaCtx {
            direction: dir,
            ..ctx(MediaOp::Offer, "c1", None, "10.0.0.10:5060")
        };
        // The offer goes to the external side: it names the external address.
        let out = body(hook.media(&offer, OFFER.as_bytes(), 2));
        assert!(out.contains("c=IN IP4 203.0.113.1\r\n"), "{out}");
        let answer = MediaCtx {
            direction: dir,
            ..ctx(MediaOp::Answer, "c1", Some("tt"), "203.0.113.20:5060")
        };
        // The answer goes back to the internal side.
        let ans = body(hook.media(&answer, ANSWER.as_bytes(), 3));
        assert!(ans.contains("c=IN IP4 10.0.0.1\r\n"), "{ans}");
        assert!(!ans.contains("203.0.113.1"), "{ans}");
    }

    #[test]
    fn offer_answer_delete_through_the_manager() {
        let mut m = mgr(30999, 0);
        let mut hook = ManagerMedia { manager: &mut m };
        let src = "198.51.100.7:5060";
        let out = body(hook.media(&ctx(MediaOp::Offer, "c1", None, src), OFFER.as_bytes(), 2));
        // The relay in c= and o=, its port in m=, ICE gone.
        assert!(out.contains("c=IN IP4 203.0.113.1\r\n"), "{out}");
        assert!(out.contains("o=alice 1 1 IN IP4 203.0.113.1\r\n"), "{out}");
        assert!(
            out.contains("m=audio 30002 RTP/AVP 8\r\n")
                || out.contains("m=audio 30000 RTP/AVP 8\r\n"),
            "{out}"
        );
        assert!(
            !out.contains("ice-ufrag") && !out.contains("candidate"),
            "{out}"
        );
        let ans = body(hook.media(
            &ctx(MediaOp::Answer, "c1", Some("tt"), "198.51.100.9:5060"),
            ANSWER.as_bytes(),
            3,
        ));
        assert!(ans.contains("c=IN IP4 203.0.113.1\r\n"), "{ans}");
        assert_ne!(ans, out);
        assert_eq!(m.call_count(), 1);
        assert_eq!(m.backend().port_usage().0, 2);
        let mut hook = ManagerMedia { manager: &mut m };
        assert_eq!(
            hook.media(&ctx(MediaOp::Delete, "c1", None, src), b"", 4),
            MediaResult::Unchanged
        );
        assert_eq!(m.call_count(), 0);
        assert_eq!(m.backend().port_usage().0, 0);
        // Deleting again, or a call never seen: not an error.
        let mut hook = ManagerMedia { manager: &mut m };
        assert_eq!(
            hook.media(&ctx(MediaOp::Delete, "c1", None, src), b"", 5),
            MediaResult::Unchanged
        );
    }

    #[test]
    fn retransmitted_offer_gets_the_same_sdp_and_no_new_ports() {
        let mut m = mgr(30999, 0);
        let mut hook = ManagerMedia { manager: &mut m };
        let c = ctx(MediaOp::Offer, "c2", None, "198.51.100.7:5060");
        let a = body(hook.media(&c, OFFER.as_bytes(), 2));
        let b = body(hook.media(&c, OFFER.as_bytes(), 3));
        assert_eq!(a, b);
        assert_eq!(m.backend().opens, 1);
    }

    #[test]
    fn load_limits_become_503_and_bad_sdp_488() {
        let mut m = mgr(30999, 1);
        let mut hook = ManagerMedia { manager: &mut m };
        let src = "198.51.100.7:5060";
        body(hook.media(&ctx(MediaOp::Offer, "a", None, src), OFFER.as_bytes(), 2));
        match hook.media(&ctx(MediaOp::Offer, "b", None, src), OFFER.as_bytes(), 2) {
            MediaResult::Failed {
                status: 503,
                reason,
            } => {
                assert_eq!(reason, "Parallel session limit reached")
            }
            other => panic!("{other:?}"),
        }
        // Two port pairs only: the first offer takes them all.
        let mut m = mgr(30003, 0);
        let mut hook = ManagerMedia { manager: &mut m };
        body(hook.media(&ctx(MediaOp::Offer, "a", None, src), OFFER.as_bytes(), 2));
        assert_eq!(
            hook.media(&ctx(MediaOp::Offer, "b", None, src), OFFER.as_bytes(), 2),
            MediaResult::Failed {
                status: 503,
                reason: "Ran out of ports".into()
            }
        );
        assert_eq!(m.call_count(), 1, "nothing half-open after the refusal");
        let mut hook = ManagerMedia { manager: &mut m };
        assert!(matches!(
            hook.media(&ctx(MediaOp::Offer, "c", None, src), b"not sdp", 2),
            MediaResult::Failed { status: 488, .. }
        ));
        // An answer nobody offered, and an empty body: passed on unchanged.
        assert_eq!(
            hook.media(
                &ctx(MediaOp::Answer, "zz", Some("t"), src),
                ANSWER.as_bytes(),
                2
            ),
            MediaResult::Unchanged
        );
        assert_eq!(
            hook.media(&ctx(MediaOp::Offer, "zz", None, src), b"", 2),
            MediaResult::Unchanged
        );
    }

    #[test]
    fn private_sdp_from_public_source_uses_the_source_ip() {
        let opts = options_for(NATED.as_bytes(), "192.0.2.50".parse().unwrap());
        assert_eq!(opts.sip_source, Some("192.0.2.50".parse().unwrap()));
        assert!(opts.replace_origin && opts.remove_ice);
        // Loopback counts as reachable: a same-host peer with a private SDP is NATed too.
        let opts = options_for(NATED.as_bytes(), "127.0.0.1".parse().unwrap());
        assert_eq!(opts.sip_source, Some("127.0.0.1".parse().unwrap()));
        // Both private (same LAN), or a public SDP: the SDP is trusted.
        assert_eq!(
            options_for(NATED.as_bytes(), "10.1.1.1".parse().unwrap()).sip_source,
            None
        );
        assert_eq!(
            options_for(ANSWER.as_bytes(), "192.0.2.50".parse().unwrap()).sip_source,
            None
        );
        assert_eq!(
            options_for(b"garbage", "192.0.2.50".parse().unwrap()).sip_source,
            None
        );

        let mut m = mgr(30999, 0);
        let mut hook = ManagerMedia { manager: &mut m };
        body(hook.media(
            &ctx(MediaOp::Offer, "n", None, "192.0.2.1:5060"),
            OFFER.as_bytes(),
            2,
        ));
        body(hook.media(
            &ctx(MediaOp::Answer, "n", Some("tt"), "192.0.2.50:5062"),
            NATED.as_bytes(),
            3,
        ));
        let report = m.query("n").unwrap();
        let endpoints: Vec<SocketAddr> = report
            .tags
            .iter()
            .flat_map(|t| t.medias.iter().filter_map(|md| md.endpoint))
            .collect();
        assert!(
            endpoints.contains(&"192.0.2.50:7000".parse().unwrap()),
            "{endpoints:?}"
        );
        assert!(
            endpoints.iter().all(|e| !is_private(e.ip())),
            "{endpoints:?}"
        );
    }

    #[test]
    fn private_ranges() {
        for p in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(p.parse().unwrap()), "{p}");
        }
        for p in [
            "127.0.0.1",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "192.0.2.1",
            "::1",
            "2001:db8::1",
        ] {
            assert!(!is_private(p.parse().unwrap()), "{p}");
        }
    }
}
