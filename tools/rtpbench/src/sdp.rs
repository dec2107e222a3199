//! The little SDP (RFC 8866) the benchmark needs: the one-stream PCMU offer/answer for a
//! generator socket (written by the relay crate's `AudioSdp`), the relay's media address in a
//! returned SDP, and the reflector's trivial textual rewrite. Not a general SDP library
//! (rtpanchor has `src/sdp` for that).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use rtpanchor::sdp::AudioSdp;

/// A one-audio-stream SDP: PCMU (PT 0), 20 ms packets, RTP only. No `a=rtcp:` line, so the
/// implied RTCP port is `port + 1` (RFC 3605 default); the benchmark sends no RTCP.
pub fn audio_sdp(addr: SocketAddrV4, session_id: u64) -> String {
    audio_sdp_mux(addr, session_id, false)
}

/// [`audio_sdp`], with `a=rtcp-mux` when `mux` (RTCP on the RTP port).
pub fn audio_sdp_mux(addr: SocketAddrV4, session_id: u64, mux: bool) -> String {
    AudioSdp::new(addr.into(), session_id)
        .user("rtpbench")
        .session_name("rtpbench")
        .ptime(20)
        .rtcp_mux(mux)
        .to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    NoAudio,
    BadPort,
    NoConnection,
    NotIpv4,
}

impl std::fmt::Display for SdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            SdpError::NoAudio => "no m=audio line",
            SdpError::BadPort => "bad or zero port in m=audio",
            SdpError::NoConnection => "no c= line for the audio stream",
            SdpError::NotIpv4 => "c= is not an IPv4 address",
        };
        f.write_str(s)
    }
}

impl std::error::Error for SdpError {}

fn conn_addr(line: &str) -> Option<Result<Ipv4Addr, SdpError>> {
    let rest = line.strip_prefix("c=")?;
    let mut it = rest.split_whitespace();
    let (_net, ty, addr) = (it.next()?, it.next()?, it.next()?);
    if ty != "IP4" {
        return Some(Err(SdpError::NotIpv4));
    }
    // Multicast TTL suffixes ("/127") are not expected from a relay; strip them anyway.
    let addr = addr.split('/').next().unwrap_or(addr);
    Some(addr.parse().map_err(|_| SdpError::NotIpv4))
}

/// The address where the SDP's author wants to receive the first audio stream: the
/// `m=audio` port with the media-level `c=` if present, else the session-level one.
pub fn media_endpoint(sdp: &str) -> Result<SocketAddrV4, SdpError> {
    let mut session_c: Option<Result<Ipv4Addr, SdpError>> = None;
    let mut port: Option<u16> = None;
    let mut media_c: Option<Result<Ipv4Addr, SdpError>> = None;
    let mut in_audio = false;
    let mut seen_media = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // only the first audio stream matters
            }
            seen_media = true;
            let mut it = m.split_whitespace();
            in_audio = it.next() == Some("audio");
            if in_audio {
                let p = it
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p != 0)
                    .ok_or(SdpError::BadPort)?;
                port = Some(p);
            }
        } else if let Some(c) = conn_addr(line) {
            if !seen_media {
                session_c = Some(c);
            } else if in_audio {
                media_c = Some(c);
            }
        }
    }
    let port = port.ok_or(SdpError::NoAudio)?;
    let ip = media_c.or(session_c).ok_or(SdpError::NoConnection)??;
    Ok(SocketAddrV4::new(ip, port))
}

/// The reflector's rewrite: every `c=` line names `ip`, the first `m=audio` line gets
/// `port`. Purely textual; anything else is passed through unchanged.
pub fn rewrite(sdp: &str, ip: Ipv4Addr, port: u16) -> String {
    let mut out = String::with_capacity(sdp.len() + 16);
    let mut done_m = false;
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        if body.starts_with("c=") {
            let _ = write!(out, "c=IN IP4 {ip}{eol}");
        } else if let (false, Some(m)) = (done_m, body.strip_prefix("m=audio ")) {
            done_m = true;
            let rest = m.split_once(' ').map(|(_, r)| r).unwrap_or("");
            let _ = write!(out, "m=audio {port} {rest}{eol}");
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shape of the SDP rtpengine 10.5 returned for an offer on this machine.
    const RTPENGINE_REPLY: &str = "v=0\r\no=- 1545997027 1 IN IP4 127.0.0.1\r\ns=tester\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 42000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n\
        a=sendrecv\r\na=rtcp:42001\r\n";

    #[test]
    fn endpoint_from_relay_reply() {
        assert_eq!(
            media_endpoint(RTPENGINE_REPLY),
            Ok("127.0.0.1:42000".parse().unwrap())
        );
    }

    #[test]
    fn media_level_c_wins_and_only_first_audio_counts() {
        let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.9\r\n\
                   m=audio 6000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\nm=audio 7000 RTP/AVP 0\r\n";
        assert_eq!(media_endpoint(sdp), Ok("10.0.0.2:6000".parse().unwrap()));
        let no_media_c = "v=0\nc=IN IP4 10.0.0.1\nm=audio 6000 RTP/AVP 0\n";
        assert_eq!(
            media_endpoint(no_media_c),
            Ok("10.0.0.1:6000".parse().unwrap())
        );
    }

    #[test]
    fn endpoint_errors() {
        assert_eq!(media_endpoint("v=0\r\n"), Err(SdpError::NoAudio));
        assert_eq!(
            media_endpoint("c=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n"),
            Err(SdpError::BadPort)
        );
        assert_eq!(
            media_endpoint("m=audio 9 RTP/AVP 0\r\n"),
            Err(SdpError::NoConnection)
        );
        assert_eq!(
            media_endpoint("c=IN IP6 ::1\r\nm=audio 9 RTP/AVP 0\r\n"),
            Err(SdpError::NotIpv4)
        );
        assert_eq!(
            media_endpoint("c=IN IP4 nonsense\r\nm=audio 9 RTP/AVP 0\r\n"),
            Err(SdpError::NotIpv4)
        );
    }

    #[test]
    fn built_sdp_parses_back_and_rewrite_moves_it() {
        let me: SocketAddrV4 = "127.0.0.1:20000".parse().unwrap();
        let sdp = audio_sdp(me, 7);
        assert_eq!(media_endpoint(&sdp), Ok(me));
        let out = rewrite(&sdp, Ipv4Addr::new(127, 0, 0, 2), 43000);
        assert_eq!(media_endpoint(&out), Ok("127.0.0.2:43000".parse().unwrap()));
        assert!(out.contains("m=audio 43000 RTP/AVP 0\r\n"));
        assert_eq!(out.lines().count(), sdp.lines().count());
    }
}
