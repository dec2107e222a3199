//! A small ng-protocol client (rtpengine's control protocol over UDP): one datagram is
//! `<cookie> <bencode dict>`, the reply echoes the cookie. Requests are pipelined (a window
//! of outstanding cookies) and retransmitted with the same cookie on timeout, which a
//! compliant relay answers from its reply cache.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::sdp;
use rtpanchor::control::bencode::{decode, Owned, Value};

/// Distinguishes the clients of one process in their cookies.
static NEXT_CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct NgClient {
    sock: UdpSocket,
    prefix: String,
    counter: u64,
    /// Per-attempt timeout and number of attempts.
    pub timeout: Duration,
    pub attempts: u32,
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

/// Extracts the interesting keys from a reply body.
pub fn parse_reply(body: &[u8]) -> Result<Reply> {
    let v = decode(body).map_err(|e| anyhow!("undecodable ng reply: {e}"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(Reply {
        result: s("result").ok_or_else(|| anyhow!("ng reply without result"))?,
        sdp: s("sdp"),
        error_reason: s("error-reason").or_else(|| s("message")),
        warning: s("warning"),
    })
}

impl NgClient {
    pub fn connect(relay: SocketAddr) -> Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0").context("binding the ng client socket")?;
        sock.connect(relay)
            .with_context(|| format!("connecting to ng {relay}"))?;
        Ok(Self {
            sock,
            // Cookies must be unique per request for the relay's reply cache: a second
            // client in the same process gets its own prefix.
            prefix: format!(
                "rb{}x{}",
                std::process::id(),
                NEXT_CLIENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            counter: 0,
            timeout: Duration::from_millis(1000),
            attempts: 3,
            window: 32,
        })
    }

    /// Sends every request and returns the replies in request order. A request that gets
    /// no reply after all attempts yields an error entry; the others still complete.
    pub fn transact_many(
        &mut self,
        requests: &[Owned],
        stop: &dyn Fn() -> bool,
    ) -> Vec<Result<Reply>> {
        let mut out: Vec<Option<Result<Reply>>> = (0..requests.len()).map(|_| None).collect();
        // cookie -> (request index, attempts made, encoded datagram, deadline)
        let mut pending: HashMap<String, (usize, u32, Vec<u8>, u64)> = HashMap::new();
        let mut next = 0;
        let mut buf = vec![0u8; 65536];
        let timeout_ns = self.timeout.as_nanos() as u64;
        let _ = self.sock.set_read_timeout(Some(Duration::from_millis(20)));
        while next < requests.len() || !pending.is_empty() {
            if stop() {
                break;
            }
            while next < requests.len() && pending.len() < self.window {
                self.counter += 1;
                let cookie = format!("{}_{}", self.prefix, self.counter);
                let mut dgram = Vec::with_capacity(512);
                dgram.extend_from_slice(cookie.as_bytes());
                dgram.push(b' ');
                requests[next].encode(&mut dgram);
                let _ = self.sock.send(&dgram);
                let deadline = crate::sys::mono_ns() + timeout_ns;
                pending.insert(cookie, (next, 1, dgram, deadline));
                next += 1;
            }
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let d = &buf[..n];
                    let Some(sp) = d.iter().position(|&b| b == b' ') else {
                        continue;
                    };
                    let cookie = String::from_utf8_lossy(&d[..sp]).into_owned();
                    if let Some((idx, _, _, _)) = pending.remove(&cookie) {
                        out[idx] = Some(parse_reply(&d[sp + 1..]));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // ECONNREFUSED: nothing listens yet; retransmission handles it.
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            let now = crate::sys::mono_ns();
            let mut expired = Vec::new();
            for (cookie, (idx, tries, dgram, deadline)) in pending.iter_mut() {
                if now >= *deadline {
                    if *tries >= self.attempts {
                        expired.push((cookie.clone(), *idx));
                    } else {
                        *tries += 1;
                        *deadline = now + timeout_ns;
                        let _ = self.sock.send(dgram);
                    }
                }
            }
            for (cookie, idx) in expired {
                pending.remove(&cookie);
                out[idx] = Some(Err(anyhow!("no ng reply after {} attempts", self.attempts)));
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow!("interrupted"))))
            .collect()
    }

    pub fn transact(&mut self, request: Owned) -> Result<Reply> {
        self.transact_many(std::slice::from_ref(&request), &|| false)
            .pop()
            .unwrap_or_else(|| Err(anyhow!("no reply")))
    }

    /// Pings until `pong` or `wait` elapses.
    pub fn wait_ready(&mut self, wait: Duration) -> Result<()> {
        let deadline = crate::sys::mono_ns() + wait.as_nanos() as u64;
        let saved = self.attempts;
        self.attempts = 1;
        let saved_t = self.timeout;
        self.timeout = Duration::from_millis(200);
        let mut last = anyhow!("no reply");
        while crate::sys::mono_ns() < deadline {
            match self.transact(Owned::dict().with("command", Owned::str("ping"))) {
                Ok(r) if r.result == "pong" => {
                    self.attempts = saved;
                    self.timeout = saved_t;
                    return Ok(());
                }
                Ok(r) => last = anyhow!("ping answered {:?}", r.result),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.attempts = saved;
        self.timeout = saved_t;
        Err(last.context("relay not ready"))
    }
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

    #[test]
    fn reply_parsing() {
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
