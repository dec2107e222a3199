//! A one-audio-stream SDP (RFC 8866) written from values: what a test, a benchmark or a load
//! generator offers a relay for one endpoint. The relay itself never builds SDP (it rewrites
//! what it receives, see [`super::rewrite`]); this is the other side of that conversation.
//!
//! The body: `v=0`, `o=<user> <session id> 1 IN IP4|IP6 <address>`, `s=<name>`, a session
//! `c=` line, `t=0 0`, `m=audio <port> RTP/AVP 0 [<event PT>]`, `a=rtpmap:0 PCMU/8000`, then
//! optionally `a=rtpmap:<PT> telephone-event/8000` (RFC 4733), `a=ptime:<ms>` and
//! `a=rtcp-mux` (RFC 5761), and
//! `a=sendrecv`; every line ends in CRLF. No `a=rtcp:` line, so RTCP is on `port + 1`
//! (RFC 3605's default).

use std::fmt;
use std::net::SocketAddr;

/// One PCMU audio stream at `addr` (see the module text for the lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioSdp<'a> {
    /// Where the endpoint receives RTP: the `c=` address and the `m=` port.
    pub addr: SocketAddr,
    /// The `o=` session id (the version is 1).
    pub session_id: u64,
    /// The `o=` username; `-` by default.
    pub user: &'a str,
    /// The `s=` line; `-` by default.
    pub session_name: &'a str,
    /// The payload type of RFC 4733 telephone events, if offered.
    pub telephone_event: Option<u8>,
    /// `a=ptime`, if given.
    pub ptime_ms: Option<u32>,
    /// `a=rtcp-mux` (RFC 5761): RTCP on the RTP port.
    pub rtcp_mux: bool,
}

impl AudioSdp<'static> {
    /// PCMU at `addr`, user and session name `-`, no events, no ptime.
    pub const fn new(addr: SocketAddr, session_id: u64) -> Self {
        AudioSdp {
            addr,
            session_id,
            user: "-",
            session_name: "-",
            telephone_event: None,
            ptime_ms: None,
            rtcp_mux: false,
        }
    }
}

impl<'a> AudioSdp<'a> {
    pub fn user(self, user: &'a str) -> Self {
        AudioSdp { user, ..self }
    }

    pub fn session_name(self, session_name: &'a str) -> Self {
        AudioSdp {
            session_name,
            ..self
        }
    }

    pub fn telephone_event(self, payload_type: u8) -> Self {
        AudioSdp {
            telephone_event: Some(payload_type),
            ..self
        }
    }

    pub fn ptime(self, ms: u32) -> Self {
        AudioSdp {
            ptime_ms: Some(ms),
            ..self
        }
    }

    pub fn rtcp_mux(self, on: bool) -> Self {
        AudioSdp {
            rtcp_mux: on,
            ..self
        }
    }
}

impl fmt::Display for AudioSdp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.addr.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let (user, id, name) = (self.user, self.session_id, self.session_name);
        write!(
            f,
            "v=0\r\no={user} {id} 1 IN {family} {ip}\r\ns={name}\r\nc=IN {family} {ip}\r\n\
             t=0 0\r\nm=audio {} RTP/AVP 0",
            self.addr.port()
        )?;
        if let Some(pt) = self.telephone_event {
            write!(f, " {pt}")?;
        }
        f.write_str("\r\na=rtpmap:0 PCMU/8000\r\n")?;
        if let Some(pt) = self.telephone_event {
            write!(f, "a=rtpmap:{pt} telephone-event/8000\r\n")?;
        }
        if let Some(ms) = self.ptime_ms {
            write!(f, "a=ptime:{ms}\r\n")?;
        }
        if self.rtcp_mux {
            f.write_str("a=rtcp-mux\r\n")?;
        }
        f.write_str("a=sendrecv\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Sdp;

    #[test]
    fn the_bodies_tests_and_tools_offer() {
        let lo = SocketAddr::from(([127, 0, 0, 1], 4000));
        assert_eq!(
            AudioSdp::new(lo, 7).telephone_event(101).to_string(),
            "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
        );
        assert_eq!(
            AudioSdp::new(lo, 2)
                .user("rtpbench")
                .session_name("rtpbench")
                .ptime(20)
                .to_string(),
            "v=0\r\no=rtpbench 2 1 IN IP4 127.0.0.1\r\ns=rtpbench\r\nc=IN IP4 127.0.0.1\r\n\
             t=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n\
             a=sendrecv\r\n"
        );
    }

    #[test]
    fn the_relays_parser_reads_it_back() {
        for addr in ["10.0.0.1:5004", "[2001:db8::1]:6000"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let text = AudioSdp::new(addr, 1).telephone_event(96).to_string();
            let sdp = Sdp::parse(text.as_bytes()).unwrap();
            assert_eq!(sdp.media.len(), 1);
            assert_eq!(
                sdp.media[0].rtp_endpoint(sdp.session_connection),
                Some(addr)
            );
        }
    }
}
