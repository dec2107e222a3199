//! ng offer/answer/delete/query flows through the handler with the FakeBackend: no sockets,
//! a fake clock, real SDP bodies (SIPp's and baresip's shapes), exact rewritten lines.

use rtpanchor::control::bencode::Owned;
use rtpanchor::control::handler::handle_body;
use rtpanchor::control::ng::BodyFormat;
use rtpanchor::session::backend::{
    LatchEventKind, MediaBackend, MediaEvent, Side, SocketCounters, StreamId, StreamStats,
};
use rtpanchor::session::fake::FakeBackend;
use rtpanchor::session::latch::LatchMode;
use rtpanchor::session::manager::{CloseReason, ManagerConfig, SessionManager};
use rtpanchor::session::negotiate::RelayInterface;

const SEC: u64 = 1_000_000_000;
const RELAY: &str = "203.0.113.1";

/// SIPp's uac offer shape, caller at 192.0.2.10:6000.
const OFFER: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// SIPp's uas answer shape, callee at 198.51.100.20:16000.
const ANSWER: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 16000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

fn cfg() -> ManagerConfig {
    ManagerConfig {
        interfaces: vec![RelayInterface::new("default", RELAY.parse().unwrap())],
        port_min: 30000,
        port_max: 30099,
        ..ManagerConfig::default()
    }
}

fn mgr_with(cfg: ManagerConfig, min: u16, max: u16) -> SessionManager<FakeBackend> {
    SessionManager::new(FakeBackend::new(min, max).unwrap(), cfg, SEC)
}

/// A manager (and fake backend) with a port range of its own.
fn mgr_ports(min: u16, max: u16) -> SessionManager<FakeBackend> {
    mgr_with(
        ManagerConfig {
            port_min: min,
            port_max: max,
            ..cfg()
        },
        min,
        max,
    )
}

fn mgr() -> SessionManager<FakeBackend> {
    mgr_with(cfg(), 30000, 30099)
}

fn run(m: &mut SessionManager<FakeBackend>, req: Owned, now: u64) -> Owned {
    let (reply, fmt) = handle_body(m, &req.to_bencode(), now);
    assert_eq!(fmt, BodyFormat::Bencode);
    reply
}

fn req(command: &str) -> Owned {
    Owned::dict().with("command", command)
}

fn offer(call: &str, from: &str, sdp: &str) -> Owned {
    req("offer")
        .with("call-id", call)
        .with("from-tag", from)
        .with("sdp", sdp)
}

fn answer(call: &str, from: &str, to: &str, sdp: &str) -> Owned {
    req("answer")
        .with("call-id", call)
        .with("from-tag", from)
        .with("to-tag", to)
        .with("sdp", sdp)
}

fn s<'a>(o: &'a Owned, key: &str) -> &'a str {
    o.get(key)
        .and_then(Owned::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {o}"))
}

fn i(o: &Owned, key: &str) -> i64 {
    o.get(key)
        .and_then(Owned::as_int)
        .unwrap_or_else(|| panic!("no int {key:?} in {o}"))
}

fn ok_sdp(r: &Owned) -> String {
    assert_eq!(s(r, "result"), "ok", "{r}");
    s(r, "sdp").to_owned()
}

fn lines(sdp: &str) -> Vec<&str> {
    sdp.split("\r\n").filter(|l| !l.is_empty()).collect()
}

/// The only stream the fake has open.
fn only_stream(m: &SessionManager<FakeBackend>) -> StreamId {
    let ids: Vec<StreamId> = m.backend().streams().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 1, "expected one open stream");
    ids[0]
}

fn addr(s: &str) -> Option<std::net::SocketAddr> {
    Some(s.parse().unwrap())
}

mod media;
mod offer_answer;
mod shapes;
mod sweep;

fn stats_with(packets: u64, last_ns: u64) -> StreamStats {
    let mut st = StreamStats::default();
    st.a.rtp = SocketCounters {
        packets,
        bytes: packets * 172,
        errors: 1,
        last_packet_ns: last_ns,
    };
    st.b.rtp = SocketCounters {
        packets: packets + 1,
        bytes: (packets + 1) * 172,
        errors: 0,
        last_packet_ns: last_ns,
    };
    st.b.rtcp = SocketCounters {
        packets: 3,
        bytes: 300,
        errors: 0,
        last_packet_ns: last_ns,
    };
    st.a.quality.ssrc = 0xDEE0_EE8F;
    st.a.quality.jitter_ms = 0.352;
    st.a.quality.max_jitter_ms = 0.839;
    st.a.quality.lost = 2;
    st.a.quality.duplicates = 1;
    st.a.quality.reordered = 4;
    st.a.confirmed = true;
    st
}
