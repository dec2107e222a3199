//! The hitless upgrade (`--takeover PATH`) in the relay's start and stop: the new process
//! takes the running one's calls and sockets before it serves anything; the running one
//! hands them over when asked, stops receiving media, and exits. The messages are
//! [`crate::takeover`]'s, the socket I/O [`crate::server::takeover`]'s.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::dataplane::fdpass::FdConn;
use crate::dataplane::DataPlane;
use crate::server::sip::SipFds;
use crate::session::manager::SessionManager;
use crate::takeover::{CallState, Handover, SocketRole, VERSION};
use crate::time;

pub use crate::server::takeover::Taken;

/// How long the old relay's workers get to relay what they already received.
const PAUSE_LIMIT: Duration = Duration::from_secs(2);
/// How long the old relay's servers get to answer what they already read.
const SERVER_STOP_LIMIT: Duration = Duration::from_secs(2);

/// Takes over from the relay serving takeovers at `path`, if one does: its media sockets
/// are adopted (no bind) and its calls restored on them. `None`: nothing to take over. A
/// call that cannot be restored here (a port outside this relay's range, say) abandons
/// the takeover: the running relay is told and serves on.
pub fn take_over(
    path: &Path,
    manager: &mut SessionManager<DataPlane>,
) -> anyhow::Result<Option<Taken>> {
    let Some(mut taken) = crate::server::takeover::take(path)? else {
        tracing::info!(path = %path.display(), "no relay to take over; starting afresh");
        return Ok(None);
    };
    let media = taken.take_media();
    let sockets = media.len();
    manager.backend_mut().adopt_sockets(media);
    let (mut restored, mut dropped) = (0usize, 0usize);
    for c in &taken.state.calls {
        let now = time::now_ns();
        let now_unix = u64::try_from(time::unix_now().as_nanos()).unwrap_or(u64::MAX);
        match manager.restore(&c.record, c.stats.as_deref(), now, now_unix) {
            Ok(_) => restored += 1,
            Err(e) => {
                dropped += 1;
                tracing::warn!(call_id = c.call_id, error = %e, "call handed over not restored");
            }
        }
    }
    let unused = manager.backend_mut().drop_unadopted();
    if dropped > 0 {
        // All or nothing: the running relay serves on with every call.
        let why = format!(
            "{dropped} of {} calls could not be restored here",
            taken.state.calls.len()
        );
        // The calls restored here already receive: what they took is relayed before exit.
        if !manager.backend().pause(PAUSE_LIMIT) {
            tracing::warn!("a worker did not confirm it stopped receiving");
        }
        taken.abort(&why);
        anyhow::bail!("takeover abandoned: {why}");
    }
    tracing::info!(
        restored,
        dropped,
        sockets,
        unused,
        "took over the running relay's calls"
    );
    Ok(Some(taken))
}

/// The next takeover asked for (never, without `--takeover`).
pub async fn next_takeover(rx: &mut Option<tokio::sync::mpsc::Receiver<FdConn>>) -> Option<FdConn> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits (a short while) for a server task that was told to stop.
pub async fn stopped_in_time(task: &mut tokio::task::JoinHandle<anyhow::Result<()>>) {
    if tokio::time::timeout(SERVER_STOP_LIMIT, task).await.is_err() {
        tracing::warn!("a server did not stop in time for the takeover");
    }
}

/// The old relay's side, once its servers stopped reading: sends every call and socket to
/// the new relay, and once that one serves them, stops receiving media. True when the calls
/// are the new relay's now.
pub async fn hand_over(
    conn: FdConn,
    manager: &Arc<Mutex<SessionManager<DataPlane>>>,
    ng: Option<&(OwnedFd, Option<OwnedFd>)>,
    sip: Option<&SipFds>,
) -> bool {
    let mut roles = Vec::new();
    let mut fds = Vec::new();
    let copied = (|| -> std::io::Result<()> {
        if let Some((udp, tcp)) = ng {
            roles.push(SocketRole::NgUdp);
            fds.push(udp.try_clone()?);
            if let Some(tcp) = tcp {
                roles.push(SocketRole::NgTcp);
                fds.push(tcp.try_clone()?);
            }
        }
        if let Some(s) = sip {
            roles.extend([SocketRole::SipUdp, SocketRole::SipTcp]);
            fds.extend([s.udp.try_clone()?, s.tcp.try_clone()?]);
            if let Some(tls) = &s.tls {
                roles.push(SocketRole::SipTls);
                fds.push(tls.try_clone()?);
            }
        }
        Ok(())
    })();
    if let Err(e) = copied {
        tracing::error!(error = %e, "takeover: cannot copy the ng and SIP sockets");
        return false;
    }
    let calls = {
        let mut m = manager.lock().unwrap_or_else(|e| e.into_inner());
        let calls = m.snapshot_calls();
        match m.backend().handover_sockets() {
            Ok(media) => {
                for (port, fd) in media {
                    roles.push(SocketRole::Media { port });
                    fds.push(fd);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "takeover: cannot copy the media sockets");
                return false;
            }
        }
        calls
    };
    let state = Handover {
        v: VERSION,
        calls: calls
            .into_iter()
            .map(|(call_id, record, stats)| CallState {
                call_id,
                record,
                stats,
            })
            .collect(),
        sockets: roles,
        registrations: Vec::new(),
    };
    let n = state.calls.len();
    let sent =
        tokio::task::spawn_blocking(move || crate::server::takeover::give(&conn, &state, &fds))
            .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = format!("{e:#}"), "takeover failed");
            return false;
        }
        Err(e) => {
            tracing::error!(error = %e, "takeover task failed");
            return false;
        }
    }
    let m = manager.clone();
    let paused = tokio::task::spawn_blocking(move || {
        m.lock()
            .unwrap_or_else(|e| e.into_inner())
            .backend()
            .pause(PAUSE_LIMIT)
    })
    .await
    .unwrap_or(false);
    if !paused {
        tracing::warn!("takeover: a worker did not confirm it stopped receiving");
    }
    tracing::info!(calls = n, "takeover done: the new relay serves every call");
    true
}

type NgServer = crate::server::ng::NgServer<DataPlane>;
type SipServer = crate::server::sip::SipServer<DataPlane>;

/// After a takeover that failed: the ng and SIP servers again, on the same state and on
/// copies of the sockets they served (what was queued meanwhile is answered now).
pub fn resume(
    ng_shared: &Arc<crate::server::ng::NgShared<DataPlane>>,
    ng: Option<&(OwnedFd, Option<OwnedFd>)>,
    tick_interval: Duration,
    sip_shared: Option<&Arc<crate::server::sip::SipShared<DataPlane>>>,
    sip: Option<&SipFds>,
) -> anyhow::Result<(NgServer, Option<SipServer>)> {
    let (udp, tcp) = ng.ok_or_else(|| anyhow::anyhow!("no copy of the ng sockets"))?;
    let tcp = match tcp {
        Some(t) => Some(t.try_clone()?.into()),
        None => None,
    };
    let ng = NgServer::resume(
        ng_shared.clone(),
        udp.try_clone()?.into(),
        tcp,
        tick_interval,
    )?;
    let sip = match (sip_shared, sip) {
        (Some(shared), Some(fds)) => {
            let tls = match &fds.tls {
                Some(l) => Some(l.try_clone()?.into()),
                None => None,
            };
            Some(SipServer::resume(
                shared.clone(),
                fds.tcp.try_clone()?.into(),
                tls,
            )?)
        }
        _ => None,
    };
    Ok((ng, sip))
}

/// SIGUSR2 (the upgrade of a systemd service, see the unit): starts this program again as
/// it was started (the binary at the same path: after a package upgrade, the new one), with
/// the same arguments; with `--takeover` among them it takes this relay's calls over.
pub fn start_successor(takeover_configured: bool) {
    if !takeover_configured {
        tracing::warn!("SIGUSR2: no --takeover socket configured; no upgrade started");
        return;
    }
    let mut args = std::env::args_os();
    let Some(program) = args.next() else {
        tracing::error!("SIGUSR2: own program path unknown; no upgrade started");
        return;
    };
    match std::process::Command::new(&program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => tracing::info!(
            pid = child.id(),
            program = %Path::new(&program).display(),
            "SIGUSR2: started the new relay; it takes over"
        ),
        Err(e) => tracing::error!(error = %e, "SIGUSR2: cannot start the new relay"),
    }
}

/// Tells systemd (when it started us with a notification socket) that this process is the
/// service's main process now and ready: a takeover replaced the process systemd started.
/// Needs `NotifyAccess=all` in the unit.
pub fn notify_main_pid() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = format!("MAINPID={}\nREADY=1", std::process::id());
    let sent = (|| -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &addr)?;
            }
            None => {
                sock.send_to(msg.as_bytes(), Path::new(&path))?;
            }
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd of the new main process");
    }
}
