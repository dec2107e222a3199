//! The hitless upgrade's messages (sans-IO): what a running relay hands to the process that
//! takes over from it (`--takeover PATH`), over a Unix seqpacket connection.
//!
//! 1. new → old: [`Frame::Request`] (the protocol version).
//! 2. old: stops reading ng and SIP, takes a snapshot of every call (the state store's
//!    records, [`crate::store::record`]) and sends it as [`Frame::State`] pieces, then its
//!    sockets as [`Frame::Fds`] messages (descriptors attached, in the order the state's
//!    `sockets` names them), then [`Frame::End`].
//! 3. new: adopts the sockets (no bind: datagrams queued on them are kept), restores the
//!    calls, starts serving, and answers [`Frame::Ready`].
//! 4. old: stops receiving media (what it already received is relayed) and exits.
//!
//! Either side may send [`Frame::Abort`] with a reason instead.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use serde::{Deserialize, Serialize};

/// The version both sides must speak.
pub const VERSION: u8 = 1;
/// Largest state piece per message (well below a Unix socket's send buffer).
pub const STATE_PIECE: usize = 48 * 1024;
/// Largest message either side sends (a state piece and its frame byte).
pub const MAX_MESSAGE: usize = STATE_PIECE + 16;

/// What one takeover message is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Request {
        version: u8,
    },
    State(&'a [u8]),
    /// Descriptors ride with this message.
    Fds,
    End,
    Ready,
    Abort(&'a str),
}

impl<'a> Frame<'a> {
    pub fn parse(b: &'a [u8]) -> Option<Frame<'a>> {
        let (&kind, rest) = b.split_first()?;
        Some(match kind {
            b'T' => Frame::Request {
                version: *rest.first()?,
            },
            b'S' => Frame::State(rest),
            b'F' => Frame::Fds,
            b'E' => Frame::End,
            b'R' => Frame::Ready,
            b'X' => Frame::Abort(std::str::from_utf8(rest).unwrap_or("(not UTF-8)")),
            _ => return None,
        })
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Frame::Request { version } => out.extend([b'T', *version]),
            Frame::State(s) => {
                out.push(b'S');
                out.extend_from_slice(s);
            }
            Frame::Fds => out.push(b'F'),
            Frame::End => out.push(b'E'),
            Frame::Ready => out.push(b'R'),
            Frame::Abort(why) => {
                out.push(b'X');
                out.extend_from_slice(why.as_bytes());
            }
        }
        out
    }
}

/// What a socket handed over is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "role")]
pub enum SocketRole {
    NgUdp,
    NgTcp,
    SipUdp,
    SipTcp,
    /// The SIP TLS listener (`--listen-sips`).
    SipTls,
    /// A relay port of a call.
    Media {
        port: u16,
    },
}

/// One call as the state store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    pub call_id: String,
    /// A [`crate::store::record::CallRecord`] (JSON).
    pub record: String,
    /// A [`crate::store::record::StatsRecord`] (JSON).
    pub stats: Option<String>,
}

/// Everything handed over besides the descriptors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub v: u8,
    pub calls: Vec<CallState>,
    /// The descriptors' roles, in the order they are sent.
    pub sockets: Vec<SocketRole>,
    /// The registrar's bindings ([`crate::store::record::RegistrationRecord`] JSON per
    /// address of record).
    #[serde(default)]
    pub registrations: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("handover state is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("handover version {0}, this relay speaks {VERSION}")]
    Version(u8),
}

impl Handover {
    pub fn emit(&self) -> Vec<u8> {
        // A struct of strings and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(b: &[u8]) -> Result<Handover, HandoverError> {
        let h: Handover = serde_json::from_slice(b)?;
        if h.v != VERSION {
            return Err(HandoverError::Version(h.v));
        }
        Ok(h)
    }

    /// The state in the pieces it is sent in.
    pub fn pieces(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
        bytes.chunks(STATE_PIECE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for f in [
            Frame::Request { version: 1 },
            Frame::State(b"{\"v\":1}"),
            Frame::Fds,
            Frame::End,
            Frame::Ready,
            Frame::Abort("ports"),
        ] {
            assert_eq!(Frame::parse(&f.emit()), Some(f.clone()));
        }
        assert_eq!(Frame::parse(b""), None);
        assert_eq!(Frame::parse(b"T"), None);
        assert_eq!(Frame::parse(b"Q1"), None);
    }

    #[test]
    fn state_round_trips_in_pieces() {
        let h = Handover {
            v: VERSION,
            calls: (0..2000)
                .map(|i| CallState {
                    call_id: format!("c{i}"),
                    record: "{\"v\":1}".repeat(10),
                    stats: None,
                })
                .collect(),
            sockets: vec![
                SocketRole::NgUdp,
                SocketRole::SipTcp,
                SocketRole::SipTls,
                SocketRole::Media { port: 30000 },
            ],
            registrations: vec![("sip:a@x".into(), "{}".into())],
        };
        let bytes = h.emit();
        assert!(Handover::pieces(&bytes).count() > 1);
        let joined: Vec<u8> = Handover::pieces(&bytes).flatten().copied().collect();
        assert_eq!(Handover::parse(&joined).unwrap(), h);
        let other = Handover { v: 9, ..h }.emit();
        assert!(matches!(
            Handover::parse(&other),
            Err(HandoverError::Version(9))
        ));
        assert!(Handover::parse(b"{").is_err());
    }
}
