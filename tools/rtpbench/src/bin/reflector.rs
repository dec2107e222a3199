//! `reflector`: the physical-limit yardstick for rtpbench. It is NOT a product and not a
//! relay: it forwards UDP between pairs of ports with as little work as possible, so that
//! "relay X costs N ns/packet" can be set against "moving a packet through user space on
//! this box costs M ns/packet".
//!
//! External behaviour, just enough to be driven by rtpbench exactly like a relay:
//! - ng over UDP (`--listen-ng`): `ping` -> `pong`; `offer` allocates one port per side
//!   (no RTCP port, no port pairs) and returns the SDP with its `m=audio` port and every
//!   `c=` replaced textually; `answer` returns the other port the same way; `delete` frees
//!   both. Everything else gets `result=error`. No cookie cache: a retransmitted offer finds
//!   the call by call-id and gets the same ports.
//! - Media: one thread, level-triggered epoll; each ready socket is drained with `recvmmsg`
//!   batches which leave through the partner socket with one `sendmmsg` per batch, to the
//!   peer from the SDP (or, if the SDP named none, the first source seen). No stats, no
//!   parsing, no latching rules, no timeouts.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use clap::Parser;

use rtpanchor::control::bencode::{decode, Owned, Value};
use rtpbench::sdp;
use rtpbench::sys::{self, Epoll, MsgBatch};

#[derive(Parser, Debug)]
#[command(about = "Minimal UDP reflector with just enough ng to be benchmarked like a relay")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:2225")]
    listen_ng: SocketAddr,
    /// Address to bind media ports on and to write into SDP.
    #[arg(long, default_value = "127.0.0.1")]
    interface: Ipv4Addr,
    #[arg(long, default_value_t = 50000)]
    port_min: u16,
    #[arg(long, default_value_t = 54999)]
    port_max: u16,
    /// Datagrams per recvmmsg/sendmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

const NG_TOKEN: u64 = u64::MAX;

/// One media port. Packets arriving here leave through `partner` towards `partner`'s peer.
struct Side {
    sock: UdpSocket,
    peer: Option<SocketAddrV4>,
    partner: usize,
}

/// `to_callee` receives from the callee (its port is in the offer's reply); `to_caller`
/// receives from the caller (its port is in the answer's reply).
struct Call {
    to_callee: usize,
    to_caller: usize,
}

struct Reflector {
    iface: Ipv4Addr,
    epoll: Epoll,
    sides: Vec<Option<Side>>,
    free_slots: Vec<usize>,
    free_ports: Vec<u16>,
    calls: HashMap<String, Call>,
}

impl Reflector {
    fn bind_port(&mut self) -> Result<(UdpSocket, u16), String> {
        while let Some(port) = self.free_ports.pop() {
            if let Ok(s) = UdpSocket::bind(SocketAddrV4::new(self.iface, port)) {
                if s.set_nonblocking(true).is_ok() {
                    return Ok((s, port));
                }
            }
            // Port in use by someone else: drop it from the pool for good.
        }
        Err("Ran out of ports".into())
    }

    fn add_side(&mut self, sock: UdpSocket) -> Result<usize, String> {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.sides.push(None);
                self.sides.len() - 1
            }
        };
        self.epoll
            .add(sock.as_raw_fd(), slot as u64)
            .map_err(|e| format!("epoll: {e}"))?;
        self.sides[slot] = Some(Side {
            sock,
            peer: None,
            partner: usize::MAX,
        });
        Ok(slot)
    }

    fn port_of(&self, slot: usize) -> u16 {
        match self
            .sides
            .get(slot)
            .and_then(Option::as_ref)
            .map(|s| s.sock.local_addr())
        {
            Some(Ok(a)) => a.port(),
            _ => 0,
        }
    }

    fn new_call(&mut self) -> Result<Call, String> {
        let (s1, _) = self.bind_port()?;
        let (s2, p2) = match self.bind_port() {
            Ok(x) => x,
            Err(e) => {
                if let Ok(a) = s1.local_addr() {
                    self.free_ports.push(a.port());
                }
                return Err(e);
            }
        };
        let a = self.add_side(s1)?;
        let b = match self.add_side(s2) {
            Ok(b) => b,
            Err(e) => {
                self.free_ports.push(p2);
                self.remove_side(a);
                return Err(e);
            }
        };
        for (x, y) in [(a, b), (b, a)] {
            if let Some(s) = self.sides[x].as_mut() {
                s.partner = y;
            }
        }
        Ok(Call {
            to_callee: a,
            to_caller: b,
        })
    }

    fn remove_side(&mut self, slot: usize) {
        if let Some(s) = self.sides.get_mut(slot).and_then(Option::take) {
            self.epoll.del(s.sock.as_raw_fd());
            if let Ok(a) = s.sock.local_addr() {
                self.free_ports.push(a.port());
            }
            self.free_slots.push(slot);
        }
    }

    /// Handles one ng request; returns the reply dictionary.
    fn command(&mut self, req: &Value<'_>) -> Owned {
        let s = |k: &str| req.get(k).and_then(Value::as_str);
        let ok = || Owned::dict().with("result", Owned::str("ok"));
        let err = |why: &str| {
            Owned::dict()
                .with("result", Owned::str("error"))
                .with("error-reason", Owned::str(why))
        };
        let (Some(cmd), call_id) = (s("command"), s("call-id")) else {
            return err("Dictionary contains no key \"command\"");
        };
        match (cmd, call_id) {
            ("ping", _) => Owned::dict().with("result", Owned::str("pong")),
            ("delete", Some(id)) => match self.calls.remove(id) {
                Some(c) => {
                    self.remove_side(c.to_callee);
                    self.remove_side(c.to_caller);
                    ok()
                }
                None => ok().with("warning", Owned::str("Call-ID not found")),
            },
            (op @ ("offer" | "answer"), Some(id)) => {
                let Some(body) = s("sdp") else {
                    return err("No SDP body");
                };
                if !self.calls.contains_key(id) {
                    if op == "answer" {
                        return err("Unknown call-id");
                    }
                    match self.new_call() {
                        Ok(c) => {
                            self.calls.insert(id.to_owned(), c);
                        }
                        Err(e) => return err(&e),
                    }
                }
                let Some(call) = self.calls.get(id) else {
                    return err("Unknown call-id");
                };
                // The SDP's author receives on the side facing it; the reply advertises
                // the other side's port to the recipient.
                let (facing_author, advertised) = if op == "offer" {
                    (call.to_caller, call.to_callee)
                } else {
                    (call.to_callee, call.to_caller)
                };
                if let Ok(ep) = sdp::media_endpoint(body) {
                    if let Some(side) = self.sides[facing_author].as_mut() {
                        side.peer = Some(ep);
                    }
                }
                let port = self.port_of(advertised);
                ok().with("sdp", Owned::str(&sdp::rewrite(body, self.iface, port)))
            }
            ("offer" | "answer" | "delete", None) => err("No call-id"),
            _ => err("Unrecognized command"),
        }
    }

    /// Drains socket `slot` and forwards everything through its partner.
    fn forward(&mut self, slot: usize, batch: &mut MsgBatch) {
        let Some(side) = self.sides.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let fd = side.sock.as_raw_fd();
        let partner = side.partner;
        loop {
            let n = batch.recv(fd).unwrap_or(0);
            if n == 0 {
                return;
            }
            if let Some(s) = self.sides[slot].as_mut() {
                if s.peer.is_none() {
                    s.peer = Some(batch.addr(0));
                }
            }
            let Some(out) = self.sides.get(partner).and_then(Option::as_ref) else {
                return;
            };
            if let Some(dest) = out.peer {
                for i in 0..n {
                    let len = batch.data(i).len();
                    batch.set(i, len, dest);
                }
                batch.send_all(out.sock.as_raw_fd(), n);
            }
            if n < batch.capacity() {
                return;
            }
        }
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    let stop = sys::install_stop_signals();
    sys::raise_nofile_limit();
    let ng = UdpSocket::bind(a.listen_ng).with_context(|| format!("binding {}", a.listen_ng))?;
    ng.set_nonblocking(true)?;
    let mut r = Reflector {
        iface: a.interface,
        epoll: Epoll::new(256)?,
        sides: Vec::new(),
        free_slots: Vec::new(),
        // Popped from the end: lowest port first.
        free_ports: (a.port_min..=a.port_max).rev().collect(),
        calls: HashMap::new(),
    };
    r.epoll.add(ng.as_raw_fd(), NG_TOKEN)?;
    eprintln!(
        "reflector: ng on {}, media {}:{}-{}",
        a.listen_ng, a.interface, a.port_min, a.port_max
    );
    let mut batch = MsgBatch::new(a.batch, 2048);
    let mut ready = Vec::with_capacity(256);
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        ready.clear();
        r.epoll.wait(200, |t| ready.push(t))?;
        for &token in &ready {
            if token != NG_TOKEN {
                r.forward(token as usize, &mut batch);
                continue;
            }
            while let Ok((n, from)) = ng.recv_from(&mut buf) {
                let d = &buf[..n];
                let Some(sp) = d.iter().position(|&b| b == b' ').filter(|&p| p > 0) else {
                    continue; // no cookie: no reply, like rtpengine
                };
                let reply = match decode(&d[sp + 1..]) {
                    Ok(v) => r.command(&v),
                    Err(_) => Owned::dict()
                        .with("result", Owned::str("error"))
                        .with("error-reason", Owned::str("Invalid NG data format")),
                };
                out.clear();
                out.extend_from_slice(&d[..=sp]);
                reply.encode(&mut out);
                let _ = ng.send_to(&out, from);
            }
        }
    }
    eprintln!("reflector: stopping with {} calls", r.calls.len());
    Ok(())
}
