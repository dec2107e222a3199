//! The operations HTTP endpoint (`--listen-http`): `GET /metrics` (Prometheus text format) and
//! `GET /health` (200 when the ng server and every data-plane worker answer, 503 otherwise or
//! while draining).
//!
//! A deliberately small HTTP/1.1 server: one request per connection (`Connection: close`), a
//! request head of at most [`MAX_HEAD`] bytes read within [`READ_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] connections at once (more wait in the listen queue), bodies ignored.
//! Anything that is not a well-formed `GET`/`HEAD` request line gets a 400 or 405 and the
//! connection is closed; nothing a client sends can make it allocate more than `MAX_HEAD`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::{accept_or_stop, stopped};

/// Largest request head (request line and headers) accepted: a scraper's is a few hundred
/// bytes; 8 KiB is what common servers allow by default.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head (a slow or silent client is dropped).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to write a response (a client that does not read is dropped).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; Prometheus uses one per target, so 32 leaves room for a few
/// scrapers and health checkers.
pub const MAX_CONNECTIONS: usize = 32;

/// What the endpoints read: the metrics text, and the health verdict (`Err` says why not).
pub struct HttpHandlers {
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
    #[allow(clippy::type_complexity)]
    pub health:
        Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>,
    /// Set while the relay drains: `/health` answers 503 at once.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Head<'a> {
    /// More bytes are needed.
    Incomplete,
    /// A request: method and path (query string removed).
    Request { method: &'a str, path: &'a str },
    /// Not HTTP/1.x.
    Invalid,
}

/// Parses the request line once the whole head (up to the blank line) is in `buf`.
pub fn parse_head(buf: &[u8]) -> Head<'_> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| {
        // Bare LF line ends, as some hand-made clients send.
        buf.windows(2).position(|w| w == b"\n\n")
    }) else {
        return Head::Incomplete;
    };
    let head = buf.get(..end).unwrap_or_default();
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(head.get(..line_end).unwrap_or_default()) else {
        return Head::Invalid;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Invalid;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Head::Invalid;
    }
    let path = target.split('?').next().unwrap_or(target);
    Head::Request { method, path }
}

/// A response: status line, headers and body.
fn response(status: &str, content_type: &str, body: &[u8], with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body);
    }
    out
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn answer(handlers: &HttpHandlers, method: &str, path: &str) -> Vec<u8> {
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return response("405 Method Not Allowed", TEXT, b"only GET and HEAD\n", true);
    }
    match path {
        "/metrics" => {
            let text = (handlers.metrics)();
            response(
                "200 OK",
                crate::metrics::CONTENT_TYPE,
                text.as_bytes(),
                with_body,
            )
        }
        "/health" => {
            if handlers.lifecycle.is_draining() {
                return response("503 Service Unavailable", TEXT, b"draining\n", with_body);
            }
            match (handlers.health)().await {
                Ok(()) => response("200 OK", TEXT, b"ok\n", with_body),
                Err(why) => response(
                    "503 Service Unavailable",
                    TEXT,
                    format!("{why}\n").as_bytes(),
                    with_body,
                ),
            }
        }
        _ => response(
            "404 Not Found",
            TEXT,
            b"not found: try /metrics or /health\n",
            with_body,
        ),
    }
}

async fn connection(mut stream: TcpStream, handlers: Arc<HttpHandlers>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    const CHUNK: usize = 1024;
    let mut chunk = [0u8; CHUNK];
    let reply = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            match parse_head(&buf) {
                Head::Request { method, path } => {
                    return Ok(answer(&handlers, method, path).await);
                }
                Head::Invalid => {
                    return Ok(response("400 Bad Request", TEXT, b"bad request\n", true));
                }
                Head::Incomplete => {}
            }
            if buf.len() >= MAX_HEAD {
                return Ok(response(
                    "431 Request Header Fields Too Large",
                    TEXT,
                    b"request head too large\n",
                    true,
                ));
            }
            let room = MAX_HEAD - buf.len();
            let n = stream
                .read(chunk.get_mut(..room.min(CHUNK)).unwrap_or_default())
                .await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// A bound HTTP endpoint, not yet serving.
pub struct HttpServer {
    listener: TcpListener,
    handlers: Arc<HttpHandlers>,
}

impl HttpServer {
    pub async fn bind(addr: SocketAddr, handlers: HttpHandlers) -> anyhow::Result<HttpServer> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding HTTP {addr}"))?;
        Ok(HttpServer {
            listener,
            handlers: Arc::new(handlers),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let stop = stopped(shutdown.clone());
        tokio::pin!(stop);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // Wait for a free slot before accepting: excess clients queue in the backlog.
            let permit = tokio::select! {
                _ = &mut stop => return Ok(()),
                p = slots.clone().acquire_owned() => p?,
            };
            let Some((stream, peer)) = accept_or_stop(&self.listener, &mut stop, "HTTP").await
            else {
                return Ok(());
            };
            let handlers = self.handlers.clone();
            tokio::spawn(async move {
                if let Err(e) = connection(stream, handlers).await {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Head::Incomplete
        );
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Request {
                method: "GET",
                path: "/metrics"
            }
        );
        assert_eq!(
            parse_head(b"HEAD /health HTTP/1.0\n\n"),
            Head::Request {
                method: "HEAD",
                path: "/health"
            }
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET /metrics HTTP/2\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), Head::Invalid, "{bad:?}");
        }
    }

    #[test]
    fn head_answers_without_body() {
        let r = response("200 OK", TEXT, b"hello", false);
        let s = String::from_utf8(r).unwrap();
        assert!(
            s.ends_with("\r\n\r\n") && s.contains("Content-Length: 5\r\n"),
            "{s}"
        );
    }
}
