//! The benchmark's side of the ng protocol (rtpengine's control protocol): the requests it
//! sends (offer, answer, delete of one-stream calls) and what it reads from the replies. The
//! client itself is the relay crate's (`rtpanchor::client::ng`): cookies, pipelining (a window
//! of outstanding requests) and retransmission with the same cookie on timeout, which a
//! compliant relay answers from its reply cache.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::sdp;
use rtpanchor::client::ng::{self as client, RetryPolicy};
use rtpanchor::control::bencode::Owned;

/// An ng client of one relay, with its pipelining window.
pub struct NgClient {
    inner: client::NgClient,
    /// How many requests may be outstanding at once.
    pub window: usize,
}

/// The relay's answer to one request: its `result` and, for offer/answer, its SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub result: String,
    pub sdp: Option<String>,
    pub error_reason: Option<String>,
    pub warning: Option<String>,
}

impl Reply {
    /// Extracts the interesting keys from a reply dictionary.
    pub fn of(v: &Owned) -> Result<Reply> {
        let s = |k: &str| v.get(k).and_then(Owned::as_str).map(str::to_owned);
        Ok(Reply {
            result: s("result").ok_or_else(|| anyhow!("ng reply without result"))?,
            sdp: s("sdp"),
            error_reason: s("error-reason").or_else(|| s("message")),
            warning: s("warning"),
        })
    }
}

impl NgClient {
    /// A client of `relay`: 3 attempts a second apart, 32 requests in flight.
    pub fn connect(relay: SocketAddr) -> Result<Self> {
        let inner = client::NgClient::udp(relay)
            .with_context(|| format!("ng client socket for {relay}"))?
            .with_policy(RetryPolicy::millis(1000, 3));
        Ok(Self { inner, window: 32 })
    }

    /// Per-attempt timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        let mut p = self.inner.policy();
        p.timeout_ns = timeout.as_nanos().try_into().unwrap_or(u64::MAX);
        self.inner.set_policy(p);
    }

    /// Sends per request.
    pub fn set_attempts(&mut self, attempts: u32) {
        let mut p = self.inner.policy();
        p.attempts = attempts;
        self.inner.set_policy(p);
    }

    /// Sends every request and returns the replies in request order. A request that gets
    /// no reply after all attempts yields an error entry; the others still complete.
    pub fn transact_many(
        &mut self,
        requests: &[Owned],
        stop: &dyn Fn() -> bool,
    ) -> Vec<Result<Reply>> {
        self.inner
            .request_many(requests, self.window, stop)
            .into_iter()
            .map(|r| Reply::of(&r?))
            .collect()
    }

    pub fn transact(&mut self, request: Owned) -> Result<Reply> {
        Reply::of(&self.inner.request(&request)?)
    }

    /// The relay's `statistics` reply, whole.
    pub fn statistics(&mut self) -> Result<Owned> {
        Ok(self
            .inner
            .request(&Owned::dict().with("command", Owned::str("statistics")))?)
    }

    /// Pings until `pong` or `wait` elapses.
    pub fn wait_ready(&mut self, wait: Duration) -> Result<()> {
        self.inner.wait_ready(wait).context("relay not ready")
    }
}

/// The data plane's figures in a `statistics` reply (rtpanchor's `dataplane` block: the
/// in-kernel path's `kernel_*`, the per-reason `user_*` packet counts, the workers' drops and
/// receive figures such as `enobufs` and `recv_rearms`), added into `into`; false when the
/// reply has no such block (another relay).
pub fn add_kernel_figures(reply: &Owned, into: &mut BTreeMap<String, u64>) -> bool {
    let Some(entries) = reply
        .get("statistics")
        .and_then(|s| s.get("dataplane"))
        .and_then(Owned::as_dict)
    else {
        return false;
    };
    for (k, v) in entries {
        if let Some(n) = v.as_int().and_then(|n| u64::try_from(n).ok()) {
            *into.entry(k.clone()).or_default() += n;
        }
    }
    true
}

/// Identity of a benchmark call.
pub fn call_id(run: &str, call: usize) -> String {
    format!("rtpbench-{run}-{call}")
}

pub fn offer(call_id: &str, caller: SocketAddrV4, session_id: u64) -> Owned {
    Owned::dict()
        .with("command", Owned::str("offer"))
        .with("call-id", Owned::str(call_id))
        .with("from-tag", Owned::str("caller"))
        .with("sdp", Owned::str(&sdp::audio_sdp(caller, session_id)))
        .with("ICE", Owned::str("remove"))
        .with(
            "replace",
            Owned::List(vec![Owned::str("origin"), Owned::str("session-connection")]),
        )
}

pub fn answer(call_id: &str, callee: SocketAddrV4, session_id: u64) -> Owned {
    Owned::dict()
        .with("command", Owned::str("answer"))
        .with("call-id", Owned::str(call_id))
        .with("from-tag", Owned::str("caller"))
        .with("to-tag", Owned::str("callee"))
        .with("sdp", Owned::str(&sdp::audio_sdp(callee, session_id)))
        .with("ICE", Owned::str("remove"))
        .with(
            "replace",
            Owned::List(vec![Owned::str("origin"), Owned::str("session-connection")]),
        )
}

pub fn delete(call_id: &str) -> Owned {
    Owned::dict()
        .with("command", Owned::str("delete"))
        .with("call-id", Owned::str(call_id))
        .with("from-tag", Owned::str("caller"))
        .with("delete-delay", Owned::Int(0))
}

/// The relay address a reply's SDP tells its recipient to send to.
pub fn reply_endpoint(r: &Result<Reply>) -> Result<SocketAddrV4> {
    let r = r.as_ref().map_err(|e| anyhow!("{e:#}"))?;
    if r.result != "ok" {
        bail!(
            "relay answered {:?}: {}",
            r.result,
            r.error_reason.as_deref().unwrap_or("-")
        );
    }
    let sdp = r
        .sdp
        .as_deref()
        .ok_or_else(|| anyhow!("ok reply without sdp"))?;
    sdp::media_endpoint(sdp).map_err(|e| anyhow!("relay SDP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtpanchor::control::bencode::{decode, Value};

    #[test]
    fn reply_parsing() {
        let parse_reply = |body: &[u8]| Reply::of(&Owned::from(&decode(body).unwrap()));
        let r = parse_reply(b"d3:sdp31:c=IN IP4 127.0.0.1\r\nm=audio 4 X6:result2:oke").unwrap();
        assert_eq!(r.result, "ok");
        assert_eq!(
            reply_endpoint(&Ok(r)).unwrap(),
            "127.0.0.1:4".parse::<SocketAddrV4>().unwrap()
        );
        let e = parse_reply(b"d6:result5:error12:error-reason15:Unknown call-ide").unwrap();
        assert_eq!(e.error_reason.as_deref(), Some("Unknown call-id"));
        assert!(reply_endpoint(&Ok(e)).is_err());
        assert!(parse_reply(b"d3:sdp0:e").is_err());
    }

    #[test]
    fn kernel_figures_are_summed_over_relays() {
        let reply = |n: i64| {
            Owned::dict().with(
                "statistics",
                Owned::dict().with(
                    "dataplane",
                    Owned::dict()
                        .with("rx_packets", Owned::Int(9))
                        .with("kernel_streams", Owned::Int(n))
                        .with("user_taken_back", Owned::Int(2 * n)),
                ),
            )
        };
        let mut m = BTreeMap::new();
        assert!(add_kernel_figures(&reply(3), &mut m));
        assert!(add_kernel_figures(&reply(4), &mut m));
        assert_eq!(m.get("kernel_streams"), Some(&7));
        assert_eq!(m.get("user_taken_back"), Some(&14));
        assert_eq!(m.get("rx_packets"), Some(&18));
        assert!(!add_kernel_figures(
            &Owned::dict().with("result", "ok"),
            &mut m
        ));
    }

    #[test]
    fn offer_request_names_the_caller_socket() {
        let me: SocketAddrV4 = "127.0.0.1:20000".parse().unwrap();
        let mut out = Vec::new();
        offer("c1", me, 1).encode(&mut out);
        let v = decode(&out).unwrap();
        assert_eq!(v.get("command").and_then(Value::as_str), Some("offer"));
        assert_eq!(v.get("call-id").and_then(Value::as_str), Some("c1"));
        let sdp = v.get("sdp").and_then(Value::as_str).unwrap();
        assert_eq!(sdp::media_endpoint(sdp), Ok(me));
        let mut d = Vec::new();
        delete("c1").encode(&mut d);
        let v = decode(&d).unwrap();
        assert_eq!(v.get("command").and_then(Value::as_str), Some("delete"));
    }
}
