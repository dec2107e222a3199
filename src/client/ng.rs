//! A blocking ng client: one socket to one relay, requests in, replies out.
//!
//! - **UDP** ([`NgClient::udp`]): a connected socket, so only the relay's datagrams arrive and
//!   an ICMP "port unreachable" shows as `refused` in [`NgClientError::NoReply`]. A request
//!   is sent again with the same cookie after each `timeout` until its attempts are used up
//!   ([`RetryPolicy`], 3 sends a second apart by default).
//! - **TCP** ([`NgClient::tcp`]): the same messages on a stream (the relay's
//!   `--listen-tcp-ng`); sent once, given up after the policy's timeout.
//! - **Pipelining** ([`NgClient::request_many`]): up to `window` requests in flight, replies
//!   matched by cookie in whatever order they come.
//!
//! Reading blocks for at most [`TICK`] at a time, so deadlines are kept to within that and a
//! `stop` condition is looked at as often. The protocol logic is [`crate::control::client`].

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::control::bencode::Owned;
use crate::control::client::{stream_message, Due, InvalidCookie, NgExchange, ReplyError, Token};
use crate::time::{self, NANOS_PER_MS};

pub use crate::control::client::RetryPolicy;

/// The longest one socket read blocks.
pub const TICK: Duration = Duration::from_millis(20);
/// Largest reply datagram read.
const MAX_DATAGRAM: usize = 65_536;
/// Largest unfinished message held from a TCP stream.
const MAX_STREAM_MESSAGE: usize = 16 << 20;

/// Why a request has no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum NgClientError {
    #[error("ng socket: {0}")]
    Io(#[from] io::Error),
    #[error(
        "no ng reply from {peer} after {attempts} attempt(s){}",
        if *refused { " (connection refused)" } else { "" }
    )]
    NoReply {
        peer: SocketAddr,
        attempts: u32,
        /// The peer's host said nothing listens there (UDP: ICMP port unreachable).
        refused: bool,
    },
    #[error(transparent)]
    Reply(#[from] ReplyError),
    #[error(transparent)]
    Cookie(#[from] InvalidCookie),
    #[error("the ng peer closed the connection")]
    Closed,
    #[error("stopped before the reply came")]
    Stopped,
    /// A well-formed reply that does not say what the request asked (`ping` without `pong`).
    #[error("unexpected ng reply: {0}")]
    Unexpected(String),
}

impl NgClientError {
    /// The same error again, for every request a broken connection fails.
    fn again(&self) -> NgClientError {
        match self {
            NgClientError::Io(e) => NgClientError::Io(io::Error::new(e.kind(), e.to_string())),
            NgClientError::NoReply {
                peer,
                attempts,
                refused,
            } => NgClientError::NoReply {
                peer: *peer,
                attempts: *attempts,
                refused: *refused,
            },
            NgClientError::Reply(e) => NgClientError::Reply(e.clone()),
            NgClientError::Cookie(e) => NgClientError::Cookie(e.clone()),
            NgClientError::Closed => NgClientError::Closed,
            NgClientError::Stopped => NgClientError::Stopped,
            NgClientError::Unexpected(s) => NgClientError::Unexpected(s.clone()),
        }
    }
}

enum Transport {
    Udp(UdpSocket),
    Tcp { stream: TcpStream, inbox: Vec<u8> },
}

fn quiet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Transport {
    /// Sends one request. UDP errors are left to retransmission (a refusal is noted).
    fn send(&mut self, datagram: &[u8], refused: &mut bool) -> Result<(), NgClientError> {
        match self {
            Transport::Udp(sock) => {
                if let Err(e) = sock.send(datagram) {
                    *refused |= e.kind() == io::ErrorKind::ConnectionRefused;
                }
                Ok(())
            }
            Transport::Tcp { stream, .. } => Ok(stream.write_all(datagram)?),
        }
    }

    /// Waits up to [`TICK`] for input and hands each message that came to `on_message`.
    fn receive(
        &mut self,
        buf: &mut [u8],
        refused: &mut bool,
        mut on_message: impl FnMut(&[u8]),
    ) -> Result<(), NgClientError> {
        match self {
            Transport::Udp(sock) => match sock.recv(buf) {
                Ok(n) => on_message(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => *refused = true,
                Err(e) if quiet(&e) => {}
                // Anything else may pass (a full receive queue...): the deadlines decide.
                Err(_) => {}
            },
            Transport::Tcp { stream, inbox } => {
                match stream.read(buf) {
                    Ok(0) => return Err(NgClientError::Closed),
                    Ok(n) => inbox.extend_from_slice(&buf[..n]),
                    Err(e) if quiet(&e) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                while let Some(m) = stream_message(inbox)? {
                    on_message(&inbox[m.clone()]);
                    inbox.drain(..m.end);
                }
                if inbox.len() > MAX_STREAM_MESSAGE {
                    return Err(NgClientError::Unexpected(format!(
                        "a message longer than {MAX_STREAM_MESSAGE} bytes"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Numbers the clients of this process in their cookies.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

/// A cookie prefix no other client of the relay uses: the process id, this client's number in
/// the process, and the wall clock's milliseconds (a reused process id a minute later, within
/// the relay's reply-cache memory, still differs).
pub(crate) fn unique_prefix() -> String {
    format!(
        "{}.{}.{}",
        std::process::id(),
        NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
        time::unix_now().as_millis() % 1_000_000
    )
}

/// One request of a batch: an optional cookie of the caller's, the dictionary.
type Job<'a> = (Option<&'a str>, &'a Owned);

/// A blocking ng client of one relay.
pub struct NgClient {
    transport: Transport,
    peer: SocketAddr,
    exchange: NgExchange,
    buf: Vec<u8>,
}

impl NgClient {
    /// A UDP client of `peer` from an ephemeral port of the matching wildcard address.
    pub fn udp(peer: SocketAddr) -> io::Result<NgClient> {
        let local = match peer {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        NgClient::udp_from(local, peer)
    }

    /// A UDP client of `peer` from `local` (an address of the host's, port 0 for any).
    pub fn udp_from(local: SocketAddr, peer: SocketAddr) -> io::Result<NgClient> {
        let sock = UdpSocket::bind(local)?;
        sock.connect(peer)?;
        sock.set_read_timeout(Some(TICK))?;
        Ok(NgClient::over(
            Transport::Udp(sock),
            peer,
            RetryPolicy::default(),
        ))
    }

    /// A TCP client of `peer`: connects within `timeout`, and gives a request up when its
    /// reply has not come `timeout` after it was sent.
    pub fn tcp(peer: SocketAddr, timeout: Duration) -> io::Result<NgClient> {
        let stream = TcpStream::connect_timeout(&peer, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(timeout.max(TICK)))?;
        let policy = RetryPolicy {
            timeout_ns: timeout.as_nanos().try_into().unwrap_or(u64::MAX),
            attempts: 1,
        };
        let transport = Transport::Tcp {
            stream,
            inbox: Vec::new(),
        };
        Ok(NgClient::over(transport, peer, policy))
    }

    fn over(transport: Transport, peer: SocketAddr, policy: RetryPolicy) -> NgClient {
        NgClient {
            transport,
            peer,
            exchange: NgExchange::new(unique_prefix(), policy),
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// Names this client's cookies `<prefix>_<n>`. The relay answers a cookie it has seen in
    /// the last 30-60 s from its cache, so the prefix must be unique among its clients.
    pub fn with_cookie_prefix(mut self, prefix: impl Into<String>) -> NgClient {
        self.exchange = NgExchange::new(prefix, self.exchange.policy());
        self
    }

    /// The same client with `policy` (see [`NgClient::set_policy`]).
    pub fn with_policy(mut self, policy: RetryPolicy) -> NgClient {
        self.set_policy(policy);
        self
    }

    /// Timeouts and attempts for the requests from now on. Over TCP a request is sent once.
    pub fn set_policy(&mut self, mut policy: RetryPolicy) {
        if matches!(self.transport, Transport::Tcp { .. }) {
            policy.attempts = 1;
        }
        self.exchange.set_policy(policy);
    }

    pub fn policy(&self) -> RetryPolicy {
        self.exchange.policy()
    }

    /// The relay's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.transport {
            Transport::Udp(s) => s.local_addr(),
            Transport::Tcp { stream, .. } => stream.local_addr(),
        }
    }

    /// Sends `request` under the next cookie and waits for its reply (whatever its `result`).
    pub fn request(&mut self, request: &Owned) -> Result<Owned, NgClientError> {
        self.one((None, request))
    }

    /// Sends `request` under `cookie`: the same cookie twice is a retransmission to the relay.
    pub fn request_with_cookie(
        &mut self,
        cookie: &str,
        request: &Owned,
    ) -> Result<Owned, NgClientError> {
        self.one((Some(cookie), request))
    }

    /// `{"command": name}` and its reply.
    pub fn command(&mut self, name: &str) -> Result<Owned, NgClientError> {
        self.request(&Owned::dict().with("command", name))
    }

    /// `ping`, answered with `pong`.
    pub fn ping(&mut self) -> Result<(), NgClientError> {
        let r = self.command("ping")?;
        match r.get("result").and_then(Owned::as_str) {
            Some("pong") => Ok(()),
            _ => Err(NgClientError::Unexpected(format!("ping answered {r}"))),
        }
    }

    /// The call-ids the relay holds (`list`).
    pub fn list(&mut self) -> Result<Vec<String>, NgClientError> {
        let r = self.command("list")?;
        let Some(calls) = r.get("calls").and_then(Owned::as_list) else {
            return Err(NgClientError::Unexpected(format!("list answered {r}")));
        };
        Ok(calls
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect())
    }

    /// Pings (one attempt of at most 200 ms each, 100 ms apart) until `pong` or `wait` passed;
    /// the last failure if it never came.
    pub fn wait_ready(&mut self, wait: Duration) -> Result<(), NgClientError> {
        let saved = self.policy();
        self.set_policy(RetryPolicy {
            timeout_ns: saved.timeout_ns.min(200 * NANOS_PER_MS),
            attempts: 1,
        });
        let wait_ns: u64 = wait.as_nanos().try_into().unwrap_or(u64::MAX);
        let deadline = time::now_ns().saturating_add(wait_ns);
        let result = loop {
            let r = self.ping();
            if r.is_ok() || time::now_ns() >= deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.set_policy(saved);
        result
    }

    /// Sends every request, at most `window` in flight, and returns the replies in request
    /// order. A request without a reply fails alone; the others still complete. Once `stop`
    /// returns true the requests still waiting fail with [`NgClientError::Stopped`].
    pub fn request_many(
        &mut self,
        requests: &[Owned],
        window: usize,
        stop: &dyn Fn() -> bool,
    ) -> Vec<Result<Owned, NgClientError>> {
        let jobs: Vec<Job<'_>> = requests.iter().map(|r| (None, r)).collect();
        self.drive(&jobs, window, stop)
    }

    fn one(&mut self, job: Job<'_>) -> Result<Owned, NgClientError> {
        self.drive(&[job], 1, &|| false)
            .pop()
            .unwrap_or(Err(NgClientError::Stopped))
    }

    fn drive(
        &mut self,
        jobs: &[Job<'_>],
        window: usize,
        stop: &dyn Fn() -> bool,
    ) -> Vec<Result<Owned, NgClientError>> {
        let mut out: Vec<Option<Result<Owned, NgClientError>>> =
            jobs.iter().map(|_| None).collect();
        let (peer, attempts) = (self.peer, self.policy().attempts.max(1));
        let NgClient {
            transport,
            exchange,
            buf,
            ..
        } = self;
        let mut next = 0;
        let mut refused = false;
        let fatal = loop {
            if stop() {
                break Some(NgClientError::Stopped);
            }
            let mut failed = None;
            while failed.is_none() && next < jobs.len() && exchange.in_flight() < window.max(1) {
                let (cookie, request) = jobs[next];
                let now = time::now_ns();
                let started = match cookie {
                    Some(c) => exchange.start_with_cookie(Token(next), c, request, now),
                    None => Ok(exchange.start(Token(next), request, now)),
                };
                match started {
                    Ok(datagram) => failed = transport.send(datagram, &mut refused).err(),
                    Err(e) => out[next] = Some(Err(e.into())),
                }
                next += 1;
            }
            if failed.is_some() {
                break failed;
            }
            if exchange.in_flight() == 0 {
                if next == jobs.len() {
                    break None;
                }
                continue;
            }
            let got = transport.receive(buf, &mut refused, |message| {
                if let Some((Token(i), reply)) = exchange.on_datagram(message) {
                    out[i] = Some(reply.map_err(NgClientError::from));
                }
            });
            if let Err(e) = got {
                break Some(e);
            }
            let now = time::now_ns();
            while let Some(due) = exchange.poll_due(now) {
                match due {
                    Due::Resend(datagram) => {
                        if let Err(e) = transport.send(datagram, &mut refused) {
                            failed = Some(e);
                            break;
                        }
                    }
                    Due::GaveUp(Token(i)) => {
                        out[i] = Some(Err(NgClientError::NoReply {
                            peer,
                            attempts,
                            refused,
                        }))
                    }
                }
            }
            if failed.is_some() {
                break failed;
            }
        };
        // What is still waiting, or was never sent, shares the fate that ended the loop.
        exchange.abandon();
        out.into_iter()
            .map(|r| match (r, &fatal) {
                (Some(r), _) => r,
                (None, Some(e)) => Err(e.again()),
                (None, None) => Err(NgClientError::Stopped),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
