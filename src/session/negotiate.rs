//! The pure offer/answer step (RFC 3264) of the relay, without any control-protocol types so
//! the ng handler and the SIP proxy share it.
//!
//! 1. [`describe`]: an SDP body plus [`NegotiateOptions`] -> one [`MediaDesc`] per m= line: what
//!    the sender of the SDP wants (its endpoint, rtcp-mux, direction) and whether the line is
//!    relayed. Policy:
//!    - The endpoint is the SDP's (`c=` + `m=` port, `a=rtcp`) unless `media_address`
//!      (operator override) or `sip_source` (the SIP packet's source, for NATed phones) names
//!      another IP; the SDP port is kept either way.
//!    - `c=0.0.0.0` / `c=::` (RFC 2543 hold) gives no destination: the data plane sends
//!      nothing until it learns a source. The advertised address keeps the hold address.
//!    - Relayed protocols are UDP-based and passed through unchanged (SRTP, DTLS-SRTP and
//!      T.38 are relayed opaquely): RTP/AVP, RTP/AVPF, RTP/SAVP, RTP/SAVPF,
//!      UDP/TLS/RTP/SAVP, UDP/TLS/RTP/SAVPF, udptl, UDP/TLS/UDPTL, UDP. Any other
//!      protocol (TCP/MSRP, TCP/BFCP, ...) is not relayed: the line passes unchanged and a
//!      warning says so. A requested `transport_protocol` different from the SDP's is refused
//!      (we do not convert RTP <-> SRTP).
//! 2. [`plan_streams`]: the described media against the slots a dialogue already has -> which
//!    streams to open, update, re-open or close (re-offer rules of RFC 3264 §8).
//! 3. [`pick_interface`] + [`render`]: the relay address for the outgoing SDP and the
//!    rewritten body (`sdp::rewrite`, span-preserving).

use crate::session::local_ip::LocalIp;
use std::net::{IpAddr, SocketAddr};

use crate::addr::PackedAddr;
use crate::sdp::{self, MediaRewrite, RewriteParams, RtcpAttr, Sdp, SdpError};
use crate::session::latch::LatchMode;
use crate::session::model::{MediaEnd, MediaSlot, RtcpMuxPolicy};

/// Protocols relayed as opaque UDP (compared ASCII case-insensitively).
pub const RELAYED_PROTOCOLS: [&str; 9] = [
    "RTP/AVP",
    "RTP/AVPF",
    "RTP/SAVP",
    "RTP/SAVPF",
    "UDP/TLS/RTP/SAVP",
    "UDP/TLS/RTP/SAVPF",
    "udptl",
    "UDP/TLS/UDPTL",
    "UDP",
];

/// One local address media is relayed on (`--interface [NAME/]IP[!ADVERTISED]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayInterface {
    pub name: String,
    /// The address the relay sockets are bound to.
    pub local: IpAddr,
    /// The address written into SDP when it differs from `local` (1:1 NAT, cloud).
    pub advertised: Option<IpAddr>,
}

impl RelayInterface {
    pub fn new(name: &str, local: IpAddr) -> RelayInterface {
        RelayInterface {
            name: name.to_owned(),
            local,
            advertised: None,
        }
    }

    /// What goes into `c=`.
    pub fn sdp_addr(&self) -> IpAddr {
        self.advertised.unwrap_or(self.local)
    }

    pub fn is_ipv6(&self) -> bool {
        self.local.is_ipv6()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Everything a signal may ask of the relay besides the SDP itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiateOptions {
    pub latch: LatchMode,
    /// Use this IP (the SIP source) instead of the SDP's, keeping the SDP port.
    pub sip_source: Option<IpAddr>,
    /// Use this IP instead of the SDP's and the SIP source's.
    pub media_address: Option<IpAddr>,
    /// Family of the outgoing SDP; `None`: the family the receiving leg used, else any.
    pub family: Option<Family>,
    /// Requested outgoing protocol; `None` (or "accept") passes the SDP's through.
    pub transport_protocol: Option<String>,
    pub rtcp_mux: RtcpMuxPolicy,
    pub rtcp_attr: RtcpAttr,
    pub replace_origin: bool,
    pub replace_session_name: bool,
    /// Drop ICE attributes from relayed media. On by default: the candidates name the
    /// endpoint, so ICE would route media around the relay (we do not terminate ICE).
    pub remove_ice: bool,
    /// Pass an SDP that already points at this relay through untouched (a signalling loop).
    pub loop_protect: bool,
    /// The caller asked for what happens to ICE (or was told already): removing it needs
    /// no warning.
    pub ice_expected: bool,
    /// The caller asked for SDES handling of its own: passing `a=crypto` through needs no
    /// warning.
    pub sdes_expected: bool,
    /// Interface names: the from-tag side's first, the other side's second (ng `direction`,
    /// `from-interface`/`to-interface`); empty or missing entries take the default.
    pub direction: Vec<String>,
}

impl Default for NegotiateOptions {
    fn default() -> Self {
        NegotiateOptions {
            latch: LatchMode::Symmetric,
            sip_source: None,
            media_address: None,
            family: None,
            transport_protocol: None,
            rtcp_mux: RtcpMuxPolicy::Passthrough,
            rtcp_attr: RtcpAttr::Auto,
            replace_origin: false,
            replace_session_name: false,
            remove_ice: true,
            loop_protect: false,
            ice_expected: false,
            sdes_expected: false,
            direction: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// Something we cannot honour (protocol conversion, transcoding): the text names it.
    #[error("{0}")]
    Unsupported(String),
    #[error("No {0} interface configured")]
    NoInterface(&'static str),
    #[error("{0}")]
    Mismatch(String),
}

/// One m= line as its sender described it.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaDesc {
    pub index: u32,
    pub kind: String,
    pub proto: String,
    /// Port 0 in the SDP.
    pub rejected: bool,
    /// A protocol we relay (see [`RELAYED_PROTOCOLS`]).
    pub relayable: bool,
    pub end: MediaEnd,
    pub label: Option<String>,
}

impl MediaDesc {
    /// The relay handles this line (and holds ports for it).
    pub fn relayed(&self) -> bool {
        self.relayable && !self.rejected
    }
}

pub fn is_relayed_protocol(proto: &str) -> bool {
    RELAYED_PROTOCOLS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(proto))
}

/// Describes each m= line of `sdp`; warnings for lines not relayed go to `warnings`.
pub fn describe(
    sdp: &Sdp<'_>,
    opts: &NegotiateOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<MediaDesc>, NegotiateError> {
    let requested = opts
        .transport_protocol
        .as_deref()
        .filter(|p| !p.eq_ignore_ascii_case("accept"));
    let session_c = sdp.session_connection;
    let mut out = Vec::with_capacity(sdp.media.len());
    // What rtpengine would do differently by default is said, never silent: it terminates
    // ICE (offering its own candidates) and SDES (offering its own keys).
    let relayed = || {
        sdp.media
            .iter()
            .filter(|m| is_relayed_protocol(m.proto) && !m.is_rejected())
    };
    if opts.remove_ice && !opts.ice_expected && relayed().any(|m| m.has_ice) {
        warnings.push(
            "ICE attributes removed: this relay does not terminate ICE (rtpengine would offer \
             its own candidates); ICE=remove says so explicitly"
                .into(),
        );
    }
    if !opts.sdes_expected && relayed().any(|m| m.has_crypto) {
        warnings.push(
            "SDES a=crypto passed through end to end: this relay does not terminate SRTP \
             (rtpengine would offer its own keys)"
                .into(),
        );
    }
    for (i, m) in sdp.media.iter().enumerate() {
        let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let relayable = is_relayed_protocol(m.proto);
        if let Some(req) = requested {
            if relayable && !m.is_rejected() && !req.eq_ignore_ascii_case(m.proto) {
                return Err(NegotiateError::Unsupported(format!(
                    "Unsupported transport protocol conversion: {} to {req}",
                    m.proto
                )));
            }
        }
        if !relayable && !m.is_rejected() {
            warnings.push(format!(
                "media {index} ({} {}) not relayed: protocol not supported",
                m.kind, m.proto
            ));
        }
        let advertised = m.rtp_endpoint(session_c);
        let hold = advertised.is_some_and(|a| a.ip().is_unspecified());
        let ip_override = opts.media_address.or(opts.sip_source);
        let locate = |a: Option<SocketAddr>| -> Option<SocketAddr> {
            let a = a?;
            if hold || a.ip().is_unspecified() || a.port() == 0 {
                return None;
            }
            Some(match ip_override {
                Some(ip) => SocketAddr::new(ip, a.port()),
                None => a,
            })
        };
        let rtp = locate(advertised);
        // Where RTCP goes without mux: a=rtcp (its own address if it names one), else port + 1.
        let rtcp = locate(advertised.and_then(|a| match m.rtcp {
            Some((port, addr)) => Some(SocketAddr::new(addr.unwrap_or(a.ip()), port)),
            None => Some(SocketAddr::new(a.ip(), a.port().checked_add(1)?)),
        }));
        let end = MediaEnd {
            endpoint: crate::session::backend::EndpointSpec {
                rtp: PackedAddr::from_option(rtp),
                rtcp: PackedAddr::from_option(rtcp),
                rtcp_mux: m.rtcp_mux,
                latch: opts.latch,
                clock_rates: m.rtpmap.iter().map(|(pt, _, rate)| (*pt, *rate)).collect(),
            },
            // What query shows as `advertised endpoint`: the address media is signalled to,
            // so with SIP-source-address (or media-address) the override, as rtpengine
            // shows it; a hold address stays as the SDP said.
            advertised: PackedAddr::from_option(advertised.map(|a| match ip_override {
                Some(ip) if !a.ip().is_unspecified() => SocketAddr::new(ip, a.port()),
                _ => a,
            })),
            direction: m.direction,
            known: true,
            mux_in_sdp: m.rtcp_mux,
            ipv6: advertised.is_some_and(|a| a.is_ipv6())
                || (advertised.is_none() && session_c.is_some_and(|c| c.addr.is_ipv6())),
            relay_local: LocalIp::NONE,
        };
        out.push(MediaDesc {
            index,
            kind: m.kind.to_owned(),
            proto: m.proto.to_owned(),
            rejected: m.is_rejected(),
            relayable,
            end,
            label: m.label.map(str::to_owned),
        });
    }
    Ok(out)
}

/// True when the SDP's media already point at one of our addresses (the SDP went through
/// this relay before): with `loop_protect` it is passed on unchanged.
pub fn points_at_relay(sdp: &Sdp<'_>, interfaces: &[RelayInterface]) -> bool {
    let ours = |ip: IpAddr| {
        interfaces
            .iter()
            .any(|i| i.local == ip || i.advertised == Some(ip))
    };
    let mut any = false;
    for m in sdp.media.iter().filter(|m| !m.is_rejected()) {
        match m.rtp_endpoint(sdp.session_connection) {
            Some(a) if ours(a.ip()) => any = true,
            _ => return false,
        }
    }
    any
}

/// What to do with the backend stream of one m= line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamOp {
    /// Nothing open and nothing to open (rejected or not relayed).
    Skip,
    /// New relayed line (or a rejected slot brought back): open a stream.
    Open,
    /// Same index and kind as an open stream: keep its ports, update the sender's end.
    Update,
    /// Same index, different kind: close the old stream and open a new one.
    Reopen,
    /// Was relayed, now rejected or not relayable: close (the SDP keeps port 0).
    Close,
}

/// The streams to touch when `new` replaces the lines of `existing` (RFC 3264 §8: m= lines
/// are never removed, a port of 0 disables one, a new line appends). Slots past the end of
/// `new` (a non-compliant shorter re-offer) must be closed by the caller.
pub fn plan_streams(existing: &[MediaSlot], new: &[MediaDesc]) -> Vec<StreamOp> {
    new.iter()
        .enumerate()
        .map(|(i, d)| {
            let open = existing.get(i).filter(|s| s.stream.is_some());
            match (open, d.relayed()) {
                (None, false) => StreamOp::Skip,
                (None, true) => StreamOp::Open,
                (Some(_), false) => StreamOp::Close,
                (Some(s), true) if s.kind().eq_ignore_ascii_case(&d.kind) => StreamOp::Update,
                (Some(_), true) => StreamOp::Reopen,
            }
        })
        .collect()
}

/// The interface whose address goes into an SDP for a leg. `family` forces one (error when
/// none of that family is configured); otherwise the leg's own family is preferred.
pub fn pick_interface(
    interfaces: &[RelayInterface],
    family: Option<Family>,
    leg_ipv6: bool,
) -> Result<&RelayInterface, NegotiateError> {
    let of = |v6: bool| interfaces.iter().find(|i| i.is_ipv6() == v6);
    match family {
        Some(Family::V6) => of(true).ok_or(NegotiateError::NoInterface("IPv6")),
        Some(Family::V4) => of(false).ok_or(NegotiateError::NoInterface("IPv4")),
        None => of(leg_ipv6)
            .or_else(|| interfaces.first())
            .ok_or(NegotiateError::NoInterface("relay")),
    }
}

/// Rewrites `sdp` with the relay address and per-line actions.
pub fn render(
    sdp: &Sdp<'_>,
    media: Vec<MediaRewrite>,
    relay_addr: IpAddr,
    opts: &NegotiateOptions,
) -> Result<Vec<u8>, NegotiateError> {
    let mut params = RewriteParams::new(relay_addr, media);
    params.replace_origin = opts.replace_origin;
    params.replace_session_name = opts.replace_session_name;
    params.remove_ice = opts.remove_ice;
    params.rtcp_attr = opts.rtcp_attr;
    Ok(sdp::rewrite(sdp, &params)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::backend::OpenedStream;
    use crate::session::ports::PortPair;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.168.1.10\r\ns=-\r\nc=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\nm=video 0 RTP/AVP 96\r\nm=message 7000 TCP/MSRP *\r\n";

    #[test]
    fn describe_endpoints_and_relayability() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let mut w = Vec::new();
        let d = describe(&sdp, &NegotiateOptions::default(), &mut w).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[0].end.endpoint.rtp(),
            Some("192.168.1.10:6000".parse().unwrap())
        );
        assert_eq!(
            d[0].end.endpoint.rtcp.get(),
            Some("192.168.1.10:6001".parse().unwrap())
        );
        assert_eq!(&*d[0].end.endpoint.clock_rates, &[(101, 8000)]);
        assert!(d[0].relayed() && !d[1].relayed() && !d[2].relayed());
        assert_eq!(w.len(), 1, "only the MSRP line is warned about: {w:?}");
        assert!(w[0].contains("TCP/MSRP"));
    }

    #[test]
    fn sip_source_and_media_address_override_ip_not_port() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let mut opts = NegotiateOptions {
            sip_source: Some("198.51.100.7".parse().unwrap()),
            ..NegotiateOptions::default()
        };
        let d = describe(&sdp, &opts, &mut Vec::new()).unwrap();
        assert_eq!(
            d[0].end.endpoint.rtp(),
            Some("198.51.100.7:6000".parse().unwrap())
        );
        assert_eq!(
            d[0].end.advertised.get(),
            Some("198.51.100.7:6000".parse().unwrap()),
            "the advertised endpoint is the SIP source, as rtpengine reports it"
        );
        opts.media_address = Some("203.0.113.1".parse().unwrap());
        let d = describe(&sdp, &opts, &mut Vec::new()).unwrap();
        assert_eq!(
            d[0].end.endpoint.rtcp.get(),
            Some("203.0.113.1:6001".parse().unwrap())
        );
    }

    #[test]
    fn removing_ice_and_passing_sdes_are_warned_unless_asked_for() {
        let with = OFFER.replace(
            "a=rtpmap:101 telephone-event/8000\r\n",
            "a=rtpmap:101 telephone-event/8000\r\na=ice-ufrag:x\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:k\r\n",
        );
        let sdp = Sdp::parse(with.as_bytes()).unwrap();
        let mut w = Vec::new();
        describe(&sdp, &NegotiateOptions::default(), &mut w).unwrap();
        let said = |w: &[String], what: &str| w.iter().any(|s| s.contains(what));
        assert!(
            said(&w, "ICE attributes removed") && said(&w, "SDES"),
            "{w:?}"
        );
        let asked = NegotiateOptions {
            ice_expected: true,
            sdes_expected: true,
            ..NegotiateOptions::default()
        };
        let mut w = Vec::new();
        describe(&sdp, &asked, &mut w).unwrap();
        assert!(!said(&w, "ICE") && !said(&w, "SDES"), "{w:?}");
        // Nothing to say when the SDP has neither.
        let mut w = Vec::new();
        let plain = Sdp::parse(OFFER.as_bytes()).unwrap();
        describe(&plain, &NegotiateOptions::default(), &mut w).unwrap();
        assert!(!said(&w, "ICE") && !said(&w, "SDES"), "{w:?}");
    }

    #[test]
    fn hold_address_gives_no_destination() {
        let held = OFFER.replace("c=IN IP4 192.168.1.10", "c=IN IP4 0.0.0.0");
        let sdp = Sdp::parse(held.as_bytes()).unwrap();
        let d = describe(&sdp, &NegotiateOptions::default(), &mut Vec::new()).unwrap();
        assert_eq!(d[0].end.endpoint.rtp(), None);
        assert_eq!(d[0].end.endpoint.rtcp.get(), None);
        assert_eq!(
            d[0].end.advertised.get(),
            Some("0.0.0.0:6000".parse().unwrap())
        );
    }

    #[test]
    fn protocol_conversion_is_refused() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let opts = NegotiateOptions {
            transport_protocol: Some("RTP/SAVP".into()),
            ..NegotiateOptions::default()
        };
        let err = describe(&sdp, &opts, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("RTP/AVP to RTP/SAVP"), "{err}");
        let same = NegotiateOptions {
            transport_protocol: Some("rtp/avp".into()),
            ..NegotiateOptions::default()
        };
        assert!(describe(&sdp, &same, &mut Vec::new()).is_ok());
    }

    #[test]
    fn stream_plan_follows_rfc3264_reoffer_rules() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let d = describe(&sdp, &NegotiateOptions::default(), &mut Vec::new()).unwrap();
        let slot = |kind: &str, open: bool| MediaSlot {
            index: 1,
            names: crate::session::model::MediaNames::new(kind, "RTP/AVP"),
            stream: open.then_some(OpenedStream::new(
                crate::session::backend::StreamId::FIRST,
                PortPair { rtp: 2 },
                PortPair { rtp: 4 },
            )),
            a: MediaEnd::default(),
            b: MediaEnd::default(),
            mux_policy: RtcpMuxPolicy::Passthrough,
            mux_offered: false,
        };
        assert_eq!(
            plan_streams(&[], &d),
            vec![StreamOp::Open, StreamOp::Skip, StreamOp::Skip]
        );
        assert_eq!(
            plan_streams(&[slot("audio", true), slot("video", true)], &d),
            vec![StreamOp::Update, StreamOp::Close, StreamOp::Skip]
        );
        assert_eq!(
            plan_streams(&[slot("video", true)], &d[..1]),
            vec![StreamOp::Reopen]
        );
    }

    #[test]
    fn interface_choice_by_family() {
        let v4 = RelayInterface::new("pub", "203.0.113.5".parse().unwrap());
        let v6 = RelayInterface::new("pub6", "2001:db8::5".parse().unwrap());
        let both = [v4.clone(), v6.clone()];
        assert_eq!(pick_interface(&both, None, true).unwrap(), &v6);
        assert_eq!(pick_interface(&both, None, false).unwrap(), &v4);
        assert_eq!(
            pick_interface(std::slice::from_ref(&v4), None, true).unwrap(),
            &v4
        );
        assert_eq!(
            pick_interface(&[v4], Some(Family::V6), false).unwrap_err(),
            NegotiateError::NoInterface("IPv6")
        );
        assert!(pick_interface(&[], None, false).is_err());
    }

    #[test]
    fn loop_detection_only_when_all_media_point_at_us() {
        let ifs = [RelayInterface::new("x", "192.168.1.10".parse().unwrap())];
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        assert!(points_at_relay(&sdp, &ifs));
        let other = [RelayInterface::new("x", "10.9.9.9".parse().unwrap())];
        assert!(!points_at_relay(&sdp, &other));
    }
}
