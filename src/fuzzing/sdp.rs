//! The SDP target: parse, and the rewrite's two promises.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::sdp::{rewrite, Direction, MediaRewrite, RewriteParams, RtcpAttr, Sdp};

/// Parses `data` as an SDP body.
///
/// Invariants, for a body that parses:
/// - rewritten with every media line kept and the relay address equal to the session `c=`
///   address, the output is the input, byte for byte;
/// - rewritten relaying every media line (plain, and with every option on, IPv6), the output
///   parses again with the same number of media lines, each relayed one on its relay port and
///   each rejected one still on port 0.
pub fn check(data: &[u8]) {
    let Ok(sdp) = Sdp::parse(data) else {
        return;
    };
    let n = sdp.media.len();
    if let Some(c) = sdp.session_connection {
        let keep = RewriteParams::new(c.addr, vec![MediaRewrite::Keep; n]);
        let out = rewrite(&sdp, &keep).unwrap_or_else(|e| panic!("keep-all rewrite failed: {e}"));
        assert!(
            out == data,
            "keep-all rewrite changed the body:\n--- in\n{}\n--- out\n{}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&out)
        );
    }
    let ports = |i: usize| 30_000 + 4 * (i as u16);
    let relay = |mux: bool, fallback: bool| -> Vec<MediaRewrite> {
        (0..n)
            .map(|i| MediaRewrite::Relay {
                rtp_port: ports(i),
                rtcp_port: ports(i) + 1,
                rtcp_mux: mux,
                rtcp_fallback: fallback,
            })
            .collect()
    };
    let plain = RewriteParams::new(
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        relay(false, false),
    );
    let mut full = RewriteParams::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
        relay(true, true),
    );
    full.replace_origin = true;
    full.replace_session_name = true;
    full.session_name = Some("rtpanchor".to_string());
    full.remove_ice = true;
    full.rtcp_attr = RtcpAttr::Full;
    full.direction = Some(Direction::SendRecv);
    for params in [plain, full] {
        let out = match rewrite(&sdp, &params) {
            Ok(out) => out,
            Err(e) => panic!("relay rewrite failed: {e}"),
        };
        let again = match Sdp::parse(&out) {
            Ok(s) => s,
            Err(e) => panic!(
                "rewritten SDP does not parse ({e}):\n{}",
                String::from_utf8_lossy(&out)
            ),
        };
        assert_eq!(again.media.len(), n, "media count changed");
        for (i, (before, after)) in sdp.media.iter().zip(&again.media).enumerate() {
            let want = if before.is_rejected() { 0 } else { ports(i) };
            assert_eq!(after.port, want, "media {i} port");
        }
    }
}
