//! The SIP server's side of a takeover (`--takeover`): copies of its UDP socket, TCP
//! listener and TLS listener (`--listen-sips`) for the new relay, serving on them when it
//! adopted them, and serving again on them when a takeover failed. Connections open at the
//! time (TCP or TLS) are not handed over: they close with the old relay, and their peers
//! connect again (to the same listeners, now the new relay's).

use std::os::fd::{AsFd, OwnedFd};

use super::*;

/// Copies of the SIP sockets, kept for a takeover.
pub struct SipFds {
    pub udp: OwnedFd,
    pub tcp: OwnedFd,
    /// The TLS listener (`None` without `--listen-sips`).
    pub tls: Option<OwnedFd>,
}

/// SIP sockets handed over by the relay this one took over from.
pub struct AdoptedSip {
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
    /// Its TLS listener, if it had one.
    pub tls: Option<std::net::TcpListener>,
}

impl AdoptedSip {
    /// The sockets as tokio's (non-blocking): UDP, then the TCP and TLS listeners.
    pub(super) fn into_tokio(
        self,
    ) -> std::io::Result<(UdpSocket, (TcpListener, Option<TcpListener>))> {
        self.udp.set_nonblocking(true)?;
        let tls = match self.tls {
            Some(l) => Some(listener(l)?),
            None => None,
        };
        Ok((UdpSocket::from_std(self.udp)?, (listener(self.tcp)?, tls)))
    }
}

fn listener(l: std::net::TcpListener) -> std::io::Result<TcpListener> {
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

impl<B: MediaBackend + 'static> SipServer<B> {
    /// Serves again with the state of a server that was stopped (a takeover that failed):
    /// its UDP socket is still in `shared`; `tcp` and `tls` are copies of its listeners.
    /// Needs a tokio runtime.
    pub fn resume(
        shared: Arc<SipShared<B>>,
        tcp: std::net::TcpListener,
        tls: Option<std::net::TcpListener>,
    ) -> anyhow::Result<SipServer<B>> {
        let local = shared.udp.local_addr()?;
        Ok(SipServer {
            tcp: listener(tcp)?,
            tcp_more: Vec::new(),
            tls: tls.map(listener).transpose()?,
            shared,
            local,
        })
    }

    /// Copies of the UDP socket and the TCP and TLS listeners, for a takeover.
    pub fn handover_sockets(&self) -> std::io::Result<SipFds> {
        Ok(SipFds {
            udp: self.shared.udp.as_fd().try_clone_to_owned()?,
            tcp: self.tcp.as_fd().try_clone_to_owned()?,
            tls: match &self.tls {
                Some(l) => Some(l.as_fd().try_clone_to_owned()?),
                None => None,
            },
        })
    }
}
