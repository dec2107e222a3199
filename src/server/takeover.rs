//! The hitless upgrade's I/O (`--takeover PATH`): serving a takeover (the running relay)
//! and taking over (the new one). The messages are [`crate::takeover`]'s; descriptors pass
//! through [`crate::dataplane::fdpass`]. Both sides block (the old relay runs its side on a
//! blocking thread; the new one before it serves anything).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::dataplane::fdpass::{FdConn, FdListener, MAX_FDS};
use crate::takeover::{Frame, Handover, SocketRole, MAX_MESSAGE, VERSION};

/// How long one side waits for the other's next message while the state and sockets move.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the old relay waits for the new one to restore every call and say it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Listens at `path` on a thread of its own; every connection that asks for a takeover in
/// our version is passed on (to the control loop).
pub fn listen(path: PathBuf) -> io::Result<tokio::sync::mpsc::Receiver<FdConn>> {
    let listener = FdListener::bind(&path)?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    std::thread::Builder::new()
        .name("rtpanchor-takeover".into())
        .spawn(move || loop {
            let conn = match listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "takeover socket failed");
                    return;
                }
            };
            match read_request(&conn) {
                Ok(()) => {
                    if tx.blocking_send(conn).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "takeover request refused"),
            }
        })?;
    Ok(rx)
}

fn read_request(conn: &FdConn) -> anyhow::Result<()> {
    conn.set_timeout(Some(STEP_TIMEOUT))?;
    let mut buf = [0u8; 16];
    let (n, _) = conn.recv(&mut buf)?;
    match buf.get(..n).and_then(Frame::parse) {
        Some(Frame::Request { version }) if version == VERSION => Ok(()),
        Some(Frame::Request { version }) => {
            let why = format!("version {version} asked, {VERSION} spoken");
            let _ = conn.send(&Frame::Abort(&why).emit(), &[]);
            anyhow::bail!(why)
        }
        _ => anyhow::bail!("not a takeover request"),
    }
}

/// The old relay's side, after it stopped reading ng and SIP: sends the state and the
/// sockets (in the order `state.sockets` names them) and waits for the new relay to say it
/// serves them.
pub fn give(conn: &FdConn, state: &Handover, sockets: &[OwnedFd]) -> anyhow::Result<()> {
    anyhow::ensure!(
        state.sockets.len() == sockets.len(),
        "socket roles and sockets differ"
    );
    conn.set_timeout(Some(STEP_TIMEOUT))?;
    let bytes = state.emit();
    for piece in Handover::pieces(&bytes) {
        conn.send(&Frame::State(piece).emit(), &[])
            .context("sending the state")?;
    }
    let frame = Frame::Fds.emit();
    for batch in sockets.chunks(MAX_FDS) {
        let fds: Vec<_> = batch.iter().map(AsFd::as_fd).collect();
        conn.send(&frame, &fds).context("sending sockets")?;
    }
    conn.send(&Frame::End.emit(), &[])?;
    conn.set_timeout(Some(READY_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (n, _) = conn.recv(&mut buf).context("waiting for the new relay")?;
    match buf.get(..n).and_then(Frame::parse) {
        Some(Frame::Ready) => Ok(()),
        Some(Frame::Abort(why)) => anyhow::bail!("the new relay gave up: {why}"),
        None if n == 0 => anyhow::bail!("the new relay went away"),
        _ => anyhow::bail!("unexpected answer from the new relay"),
    }
}

/// What the new relay took over.
pub struct Taken {
    conn: FdConn,
    pub state: Handover,
    pub sockets: Vec<(SocketRole, OwnedFd)>,
}

impl Taken {
    /// Tells the old relay that everything is served here now (it then stops and exits).
    pub fn ready(&self) -> io::Result<()> {
        self.conn.send(&Frame::Ready.emit(), &[])
    }

    /// Tells the old relay that this one gives up.
    pub fn abort(&self, why: &str) {
        let _ = self.conn.send(&Frame::Abort(why).emit(), &[]);
    }

    /// The socket handed over for `role` (taken out).
    pub fn take_socket(&mut self, role: SocketRole) -> Option<OwnedFd> {
        let k = self.sockets.iter().position(|(r, _)| *r == role)?;
        Some(self.sockets.swap_remove(k).1)
    }

    /// The ng UDP socket and TCP listener handed over, if any.
    pub fn ng_sockets(&mut self) -> Option<(std::net::UdpSocket, Option<std::net::TcpListener>)> {
        let udp = self.take_socket(SocketRole::NgUdp)?;
        let tcp = self.take_socket(SocketRole::NgTcp);
        Some((udp.into(), tcp.map(Into::into)))
    }

    /// The SIP UDP socket and TCP listener handed over, if any, and the TLS listener if
    /// the old relay had one.
    pub fn sip_sockets(&mut self) -> Option<crate::server::sip::AdoptedSip> {
        let udp = self.take_socket(SocketRole::SipUdp)?;
        let tcp = self.take_socket(SocketRole::SipTcp)?;
        let tls = self.take_socket(SocketRole::SipTls);
        Some(crate::server::sip::AdoptedSip {
            udp: udp.into(),
            tcp: tcp.into(),
            tls: tls.map(Into::into),
        })
    }

    /// The media sockets, by local port (taken out).
    pub fn take_media(&mut self) -> Vec<(u16, OwnedFd)> {
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for (role, fd) in self.sockets.drain(..) {
            match role {
                SocketRole::Media { port } => out.push((port, fd)),
                other => rest.push((other, fd)),
            }
        }
        self.sockets = rest;
        out
    }
}

/// The new relay's side: connects to `path` and receives the state and sockets. `None`
/// when no relay serves takeovers there (nothing to take over: a fresh start).
pub fn take(path: &Path) -> anyhow::Result<Option<Taken>> {
    let conn = match FdConn::connect(path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    conn.set_timeout(Some(STEP_TIMEOUT))?;
    conn.send(&Frame::Request { version: VERSION }.emit(), &[])?;
    let mut bytes = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, got) = conn
            .recv(&mut buf)
            .context("receiving the old relay's state")?;
        match buf.get(..n).and_then(Frame::parse) {
            Some(Frame::State(piece)) => bytes.extend_from_slice(piece),
            Some(Frame::Fds) => fds.extend(got),
            Some(Frame::End) => break,
            Some(Frame::Abort(why)) => anyhow::bail!("the old relay refused: {why}"),
            None if n == 0 => anyhow::bail!("the old relay closed the connection"),
            _ => anyhow::bail!("unexpected message from the old relay"),
        }
    }
    let state = Handover::parse(&bytes)?;
    anyhow::ensure!(
        fds.len() == state.sockets.len(),
        "{} sockets announced, {} received",
        state.sockets.len(),
        fds.len()
    );
    let sockets = state.sockets.iter().copied().zip(fds).collect();
    Ok(Some(Taken {
        conn,
        state,
        sockets,
    }))
}
