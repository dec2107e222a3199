//! TCP (RFC 3261 §18.3): the accept loop, one task per connection (framing by
//! Content-Length, keep-alives, idle close), and connections opened to send a message to a
//! peer without one. Every connection is registered under its peer address in
//! [`SipShared::conns`], which is how a [`Transmit`] finds the connection to write on.

use super::*;

pub(super) fn send_tcp<B: MediaBackend + 'static>(
    shared: &Arc<SipShared<B>>,
    to: SocketAddr,
    bytes: Vec<u8>,
) {
    let mut conns = lock(&shared.conns);
    if let Some(c) = conns.get(&to) {
        match c.tx.try_send(bytes) {
            Ok(()) => {}
            Err(e) => {
                bump(&shared.stats.send_errors);
                tracing::debug!(%to, error = %e, "SIP TCP queue full or closed: message dropped");
            }
        }
        return;
    }
    if conns.len() >= shared.cfg.max_tcp_connections {
        bump(&shared.stats.tcp_refused);
        bump(&shared.stats.send_errors);
        return;
    }
    // No connection to that peer: open one; the message waits in its queue.
    let (tx, rx) = mpsc::channel(shared.cfg.tcp_queue.max(1));
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    if tx.try_send(bytes).is_err() {
        bump(&shared.stats.send_errors);
        return;
    }
    conns.insert(to, Conn { id, tx });
    drop(conns);
    let shared = shared.clone();
    tokio::spawn(async move {
        let limit = shared.cfg.tcp_connect_timeout;
        match tokio::time::timeout(limit, TcpStream::connect(to)).await {
            Ok(Ok(stream)) => {
                bump(&shared.stats.tcp_connected);
                let _ = stream.set_nodelay(true);
                run_connection(shared, stream, to, id, rx).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(%to, error = %e, "SIP TCP connect failed");
                connect_failed(&shared, to, id, rx);
            }
            Err(_) => {
                tracing::debug!(%to, "SIP TCP connect timed out");
                connect_failed(&shared, to, id, rx);
            }
        }
    });
}

fn connect_failed<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    to: SocketAddr,
    id: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    unregister(shared, to, id);
    rx.close();
    while rx.try_recv().is_ok() {
        bump(&shared.stats.send_errors);
    }
}

fn unregister<B: MediaBackend + 'static>(shared: &SipShared<B>, peer: SocketAddr, id: u64) {
    let mut conns = lock(&shared.conns);
    if conns.get(&peer).is_some_and(|c| c.id == id) {
        conns.remove(&peer);
    }
}

pub(super) async fn tcp_loop<B: MediaBackend + 'static>(
    listener: TcpListener,
    shared: Arc<SipShared<B>>,
    shutdown: watch::Receiver<bool>,
) {
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        let Some((stream, peer)) = crate::server::accept_or_stop(&listener, &mut stop, "SIP").await
        else {
            return;
        };
        let (tx, rx) = mpsc::channel(shared.cfg.tcp_queue.max(1));
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = lock(&shared.conns);
            if conns.len() >= shared.cfg.max_tcp_connections {
                bump(&shared.stats.tcp_refused);
                continue; // dropping the stream closes it
            }
            // A newer connection from the same address replaces the old one for sending.
            conns.insert(peer, Conn { id, tx });
        }
        bump(&shared.stats.tcp_accepted);
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped(shutdown) => {}
                _ = run_connection(shared, stream, peer, id, rx) => {}
            }
        });
    }
}

/// Reads and writes one registered connection until it closes, idles out or breaks.
async fn run_connection<B: MediaBackend + 'static>(
    shared: Arc<SipShared<B>>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let (rd, mut wr) = stream.into_split();
    let stats = shared.clone();
    let mut writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if let Err(e) = wr.write_all(&bytes).await {
                tracing::debug!(%peer, error = %e, "SIP TCP write failed");
                bump(&stats.stats.send_errors);
                return;
            }
            bump(&stats.stats.tcp_sent);
        }
        let _ = wr.shutdown().await;
    });
    let reason = tokio::select! {
        r = read_connection(&shared, rd, peer, id) => r,
        // The writer ends on its own only when writing failed: the connection is dead.
        _ = &mut writer => "write failed",
    };
    tracing::debug!(%peer, reason, "SIP TCP connection closed");
    // Drop our sender so the writer drains what is queued (a final error response), then ends.
    unregister(&shared, peer, id);
    if !writer.is_finished()
        && tokio::time::timeout(Duration::from_secs(2), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// The sender registered for this connection, if it is still the registered one.
fn conn_sender<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    peer: SocketAddr,
    id: u64,
) -> Option<mpsc::Sender<Vec<u8>>> {
    lock(&shared.conns)
        .get(&peer)
        .filter(|c| c.id == id)
        .map(|c| c.tx.clone())
}

/// Frames and handles messages until the stream ends; returns why it ended.
async fn read_connection<B: MediaBackend + 'static>(
    shared: &Arc<SipShared<B>>,
    mut rd: OwnedReadHalf,
    peer: SocketAddr,
    id: u64,
) -> &'static str {
    let max = shared.cfg.max_message;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    // Where the search for the end of the header section resumes.
    let mut scan_from = 0usize;
    loop {
        loop {
            // Keep-alives first, then only re-frame once a blank line has arrived.
            let crlfs = buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if crlfs == 0 {
                match find_blank_line(&buf, scan_from) {
                    Some(_) => {}
                    None => {
                        scan_from = buf.len().saturating_sub(3);
                        break;
                    }
                }
            }
            match frame(&buf) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::KeepAlive(n)) => {
                    bump(&shared.stats.keepalives);
                    let n = n.min(buf.len());
                    // A double-CRLF ping gets a single-CRLF pong (RFC 5626 §4.4.1).
                    if n >= 4 {
                        if let Some(tx) = conn_sender(shared, peer, id) {
                            let _ = tx.try_send(b"\r\n".to_vec());
                        }
                    }
                    buf.drain(..n);
                    scan_from = 0;
                    if n == 0 {
                        break;
                    }
                }
                Ok(Frame::Message { len }) => {
                    let len = len.min(buf.len());
                    if len > max {
                        return reject_and_close(shared, &buf, ParseError::TooLarge, peer, id);
                    }
                    bump(&shared.stats.tcp_received);
                    let out = shared.incoming(&buf[..len], peer, Transport::Tcp);
                    dispatch(shared, out).await;
                    buf.drain(..len);
                    scan_from = 0;
                }
                Err(e) => return reject_and_close(shared, &buf, e, peer, id),
            }
        }
        if buf.len() > max {
            return reject_and_close(shared, &buf, ParseError::TooLarge, peer, id);
        }
        let n = match tokio::time::timeout(shared.cfg.tcp_idle, rd.read(&mut chunk)).await {
            Err(_) => {
                bump(&shared.stats.tcp_idle_closed);
                return "idle";
            }
            Ok(Err(_)) => return "read error",
            Ok(Ok(0)) => return "closed by peer",
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Offset of the first CRLF CRLF at or after `from`.
pub(super) fn find_blank_line(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + from)
}

fn reject_and_close<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    buf: &[u8],
    e: ParseError,
    peer: SocketAddr,
    id: u64,
) -> &'static str {
    if e == ParseError::TooLarge {
        bump(&shared.stats.too_large);
    } else {
        bump(&shared.stats.framing_errors);
    }
    if let Some(r) = transport_reject(buf, e) {
        if let Some(tx) = conn_sender(shared, peer, id) {
            bump(&shared.stats.transport_rejects);
            let _ = tx.try_send(r);
        }
    }
    tracing::debug!(%peer, error = %e, "SIP TCP stream cannot be framed");
    "framing error"
}
