//! Control-plane servers (tokio). Each feeds bytes to the sans-IO protocol code and the one
//! session layer; none of them touches the data plane except through the session manager.
//!
//! - [`http`]: `/metrics` and `/health` for operators (`--listen-http`).
//! - [`ng`]: the rtpengine-compatible ng control protocol over UDP and TCP.
//! - [`sip`]: the built-in SIP proxy's transport (UDP and TCP) around `sip::proxy`.
//! - [`cdr`]: the call record writer (a thread appending JSON lines, reopened on SIGHUP).
//! - [`takeover`]: the hitless upgrade's Unix socket (`--takeover PATH`).
#![forbid(unsafe_code)]

pub mod cdr;
pub mod http;
pub mod ng;
pub mod relays;
pub mod sip;
pub mod takeover;

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Resolves when shutdown is requested (the flag turns true, or its sender is gone).
pub(crate) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Next connection on `listener`, or `None` once `stop` resolves. Accept errors (fd
/// exhaustion, aborted handshakes) are logged and retried after a short pause rather than
/// ending the server.
pub(crate) async fn accept_or_stop<F>(
    listener: &TcpListener,
    stop: &mut std::pin::Pin<&mut F>,
    what: &str,
) -> Option<(TcpStream, std::net::SocketAddr)>
where
    F: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = stop.as_mut() => return None,
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!(error = %e, "{what} TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
