//! A phone on one TCP connection to a SIP front (`tests/shared_*`).
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A phone on one TCP connection to its front; messages framed by Content-Length.
pub struct TcpPhone {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpPhone {
    pub fn connect(front: SocketAddr) -> TcpPhone {
        let stream = TcpStream::connect(front).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        TcpPhone {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// One complete message from the front of the buffer.
    fn take(&mut self) -> Option<String> {
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if self.buf.len() < end + len {
            return None;
        }
        let msg: Vec<u8> = self.buf.drain(..end + len).collect();
        Some(String::from_utf8_lossy(&msg).into_owned())
    }

    /// The next message within `limit`.
    pub fn next(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(m) = self.take() {
                return Some(m);
            }
            if let Ok(n) = self.stream.read(&mut chunk) {
                assert!(n > 0, "the front closed the phone's connection");
                self.buf.extend_from_slice(&chunk[..n]);
                continue;
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Sends on the connection.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }
}
