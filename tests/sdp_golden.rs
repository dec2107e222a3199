//! Golden SDP corpus: every `tests/golden/sdp/NN-name.in.sdp` is rewritten with the
//! parameters in `NN-name.params` and must equal `NN-name.out.sdp` byte for byte.
//!
//! `.params` format, one directive per line (`#` starts a comment):
//! ```text
//! relay 203.0.113.1            relay address (required)
//! origin                        replace_origin
//! remove-ice                    remove_ice
//! rtcp auto|omit|full           rtcp_attr (default auto)
//! direction sendrecv|sendonly|recvonly|inactive
//! session-name [NAME]           replace_session_name (s=- without NAME)
//! media relay RTP RTCP [mux]    one per m= line, in order
//! media keep
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use rtpanchor::sdp::{rewrite, Direction, MediaRewrite, RewriteParams, RtcpAttr, Sdp};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sdp")
}

/// Sorted list of corpus case names (`NN-name`).
fn cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".in.sdp").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn parse_params(text: &str) -> RewriteParams {
    let mut p = RewriteParams::new(IpAddr::from([0, 0, 0, 0]), Vec::new());
    let mut have_relay = false;
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let args: Vec<&str> = rest.split_whitespace().collect();
        match key {
            "relay" => {
                p.relay_addr = args[0].parse().expect("relay address");
                have_relay = true;
            }
            "origin" => p.replace_origin = true,
            "remove-ice" => p.remove_ice = true,
            "rtcp" => {
                p.rtcp_attr = match args[0] {
                    "auto" => RtcpAttr::Auto,
                    "omit" => RtcpAttr::Omit,
                    "full" => RtcpAttr::Full,
                    other => panic!("bad rtcp mode {other}"),
                }
            }
            "direction" => {
                p.direction = Some(Direction::from_name(args[0].as_bytes()).expect("direction"))
            }
            "session-name" => {
                p.replace_session_name = true;
                p.session_name = (!rest.trim().is_empty()).then(|| rest.trim().to_owned());
            }
            "media" => p.media.push(match args.as_slice() {
                ["keep"] => MediaRewrite::Keep,
                ["relay", rtp, rtcp, flags @ ..] => MediaRewrite::Relay {
                    rtp_port: rtp.parse().expect("rtp port"),
                    rtcp_port: rtcp.parse().expect("rtcp port"),
                    rtcp_mux: flags.first() == Some(&"mux"),
                    rtcp_fallback: flags == ["mux", "fallback"],
                },
                other => panic!("bad media directive {other:?}"),
            }),
            other => panic!("unknown params directive {other}"),
        }
    }
    assert!(have_relay, "params without a relay line");
    p
}

/// Show a line ending visibly.
fn show(line: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(line).into_owned();
    if let Some(x) = s.strip_suffix("\r\n") {
        s = format!("{x}\\r\\n");
    } else if let Some(x) = s.strip_suffix('\n') {
        s = format!("{x}\\n");
    } else {
        s.push_str("<no line ending>");
    }
    s
}

fn split_lines(b: &[u8]) -> Vec<&[u8]> {
    b.split_inclusive(|&c| c == b'\n').collect()
}

/// Line-by-line diff for a failure message: every line, marked where they differ.
fn diff(expected: &[u8], got: &[u8]) -> String {
    let (e, g) = (split_lines(expected), split_lines(got));
    let mut out = String::new();
    for i in 0..e.len().max(g.len()) {
        match (e.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => {
                let _ = writeln!(out, "   {:3}  {}", i + 1, show(a));
            }
            (a, b) => {
                if let Some(a) = a {
                    let _ = writeln!(out, " - {:3}  {}", i + 1, show(a));
                }
                if let Some(b) = b {
                    let _ = writeln!(out, " + {:3}  {}", i + 1, show(b));
                }
            }
        }
    }
    out
}

fn read(name: &str, ext: &str) -> Vec<u8> {
    let path = corpus_dir().join(format!("{name}.{ext}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn corpus_is_large_enough() {
    let names = cases();
    assert!(names.len() >= 20, "only {} corpus files", names.len());
    for n in &names {
        assert!(
            corpus_dir().join(format!("{n}.out.sdp")).exists(),
            "{n}: no .out.sdp"
        );
        assert!(
            corpus_dir().join(format!("{n}.params")).exists(),
            "{n}: no .params"
        );
    }
}

#[test]
fn golden_rewrites_match() {
    let mut failures = Vec::new();
    for name in cases() {
        let input = read(&name, "in.sdp");
        let expected = read(&name, "out.sdp");
        let params = parse_params(&String::from_utf8(read(&name, "params")).expect("utf8"));
        let sdp = Sdp::parse(&input).unwrap_or_else(|e| panic!("{name}: parse: {e}"));
        let got = rewrite(&sdp, &params).unwrap_or_else(|e| panic!("{name}: rewrite: {e}"));
        if got != expected {
            failures.push(format!(
                "{name}: output differs (- expected, + got)\n{}",
                diff(&expected, &got)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The expected outputs are themselves valid SDP, and they say what the relay promised: every
/// relayed, non-rejected media points at the relay's ports (unless on 0.0.0.0 hold).
#[test]
fn golden_outputs_point_at_the_relay() {
    for name in cases() {
        let input = read(&name, "in.sdp");
        let expected = read(&name, "out.sdp");
        let params = parse_params(&String::from_utf8(read(&name, "params")).expect("utf8"));
        let before = Sdp::parse(&input).expect("input parses");
        let after = Sdp::parse(&expected).unwrap_or_else(|e| panic!("{name}: output parse: {e}"));
        assert_eq!(before.media.len(), after.media.len(), "{name}");
        for (i, (m_in, m_out)) in before.media.iter().zip(&after.media).enumerate() {
            // Untouched properties.
            assert_eq!(m_in.kind, m_out.kind, "{name} media {i}");
            assert_eq!(m_in.proto, m_out.proto, "{name} media {i}");
            assert_eq!(m_in.formats, m_out.formats, "{name} media {i}");
            assert_eq!(m_in.rtpmap, m_out.rtpmap, "{name} media {i}");
            assert_eq!(m_in.has_crypto, m_out.has_crypto, "{name} media {i}");
            assert_eq!(
                m_in.has_fingerprint, m_out.has_fingerprint,
                "{name} media {i}"
            );
            let MediaRewrite::Relay {
                rtp_port,
                rtcp_port,
                rtcp_mux,
                ..
            } = params.media[i]
            else {
                assert_eq!(
                    m_in.port, m_out.port,
                    "{name} media {i}: keep changed the port"
                );
                assert_eq!(
                    m_in.rtp_endpoint(before.session_connection),
                    m_out.rtp_endpoint(after.session_connection),
                    "{name} media {i}: keep moved the media"
                );
                continue;
            };
            if m_in.is_rejected() {
                assert!(m_out.is_rejected(), "{name} media {i}");
                continue;
            }
            assert_eq!(m_out.port, rtp_port, "{name} media {i}");
            assert_eq!(m_out.rtcp_mux, rtcp_mux, "{name} media {i}");
            if params.remove_ice {
                assert!(!m_out.has_ice, "{name} media {i}: ICE left");
            }
            if let Some(d) = params.direction {
                assert_eq!(m_out.direction, Some(d), "{name} media {i}");
            }
            // RFC 2543 hold (c=0.0.0.0) must survive the rewrite.
            let zero_addr_hold = m_in
                .connection
                .or(before.session_connection)
                .is_some_and(|c| c.is_hold());
            if zero_addr_hold {
                assert!(m_out.is_hold(after.session_connection), "{name}: hold lost");
                continue;
            }
            let relay_rtp = SocketAddr::new(params.relay_addr, rtp_port);
            assert_eq!(
                m_out.rtp_endpoint(after.session_connection),
                Some(relay_rtp),
                "{name} media {i}"
            );
            if m_out.is_rtp() && params.rtcp_attr != RtcpAttr::Omit {
                let want = SocketAddr::new(
                    params.relay_addr,
                    if rtcp_mux { rtp_port } else { rtcp_port },
                );
                assert_eq!(
                    m_out.rtcp_endpoint(after.session_connection),
                    Some(want),
                    "{name} media {i}"
                );
            }
        }
        if params.replace_origin {
            let o = after.origin.expect("origin");
            assert_eq!(o.addr, params.relay_addr.to_string(), "{name}");
            let o_in = before.origin.expect("origin");
            assert_eq!(o.session_version, o_in.session_version, "{name}");
            assert_eq!(o.session_id, o_in.session_id, "{name}");
        }
    }
}

/// No edits (all Keep, no flags, relay = the session address) gives back the input exactly.
#[test]
fn golden_inputs_round_trip_without_edits() {
    for name in cases() {
        let input = read(&name, "in.sdp");
        let sdp = Sdp::parse(&input).expect("parse");
        let relay = sdp
            .session_connection
            .map_or(IpAddr::from([192, 0, 2, 254]), |c| c.addr);
        let params = RewriteParams::new(relay, vec![MediaRewrite::Keep; sdp.media.len()]);
        let got = rewrite(&sdp, &params).expect("rewrite");
        assert!(
            got == input,
            "{name}: identity rewrite changed bytes\n{}",
            diff(&input, &got)
        );
    }
}

/// Rewriting an output again with the same parameters changes nothing (idempotent).
#[test]
fn golden_rewrite_is_idempotent() {
    for name in cases() {
        let expected = read(&name, "out.sdp");
        let params = parse_params(&String::from_utf8(read(&name, "params")).expect("utf8"));
        let sdp = Sdp::parse(&expected).expect("parse");
        let got = rewrite(&sdp, &params).expect("rewrite");
        assert!(
            got == expected,
            "{name}: second rewrite differs\n{}",
            diff(&expected, &got)
        );
    }
}
