//! A minimal HTTP/1.1 client for the operations endpoint (`/metrics`, `/health`) and
//! Prometheus' API on loopback: one GET per connection, bounded by a timeout.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP/1.1 GET on 127.0.0.1:`port`: (status, body). Bounded by a 5 s read timeout.
pub fn http_get(port: u16, target: &str) -> (u16, String) {
    try_get(port, target).expect("HTTP GET")
}

/// [`http_get`], `None` when nothing answers (connection refused or no response).
pub fn try_get(port: u16, target: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of the series `series` (name and labels exactly) in a text exposition.
pub fn exposed(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
