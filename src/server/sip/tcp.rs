//! TCP (RFC 3261 §18.3): the accept loop, one task per connection (framing by
//! Content-Length, keep-alives, idle and slow-message close), and connections opened to
//! send a message to a peer without one. The connection task is the same for TLS (`tls`
//! hands it the decrypted stream). Every connection is registered under its transport and
//! peer address in [`SipShared::conns`], which is how a [`Transmit`] finds the connection
//! to write on.

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf};

use super::*;

/// Writes `bytes` on the connection to `to` over `transport` (TCP or TLS), opening one when
/// there is none.
pub(super) fn send_stream<B: MediaBackend + 'static>(
    shared: &Arc<SipShared<B>>,
    transport: Transport,
    to: SocketAddr,
    bytes: Vec<u8>,
) {
    let key = (transport, to);
    let mut conns = lock(&shared.conns);
    if let Some(c) = conns.get(&key) {
        match c.tx.try_send(bytes) {
            Ok(()) => {}
            Err(e) => {
                bump(&shared.stats.send_errors);
                tracing::debug!(%to, ?transport, error = %e, "SIP stream queue full or closed: message dropped");
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
    conns.insert(key, Conn { id, tx });
    drop(conns);
    let shared = shared.clone();
    tokio::spawn(async move {
        let limit = shared.cfg.tcp_connect_timeout;
        let stream = match tokio::time::timeout(limit, TcpStream::connect(to)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%to, ?transport, error = %e, "SIP connect failed");
                return connect_failed(&shared, key, id, rx).await;
            }
            Err(_) => {
                tracing::debug!(%to, ?transport, "SIP connect timed out");
                return connect_failed(&shared, key, id, rx).await;
            }
        };
        let _ = stream.set_nodelay(true);
        if transport == Transport::Tls {
            match tls::connect(&shared, stream, to).await {
                Some(tls) => {
                    bump(&shared.stats.tls_connected);
                    run_connection(shared, tls, key, id, rx).await;
                }
                None => connect_failed(&shared, key, id, rx).await,
            }
        } else {
            bump(&shared.stats.tcp_connected);
            run_connection(shared, stream, key, id, rx).await;
        }
    });
}

/// No connection could be made for `key`: what waited for it is dropped (counted), and
/// each request among it ends its branch as a 503 from the peer (RFC 3261 §16.9), whose
/// result (the caller's final response, usually) is sent at once.
async fn connect_failed<B: MediaBackend + 'static>(
    shared: &Arc<SipShared<B>>,
    key: (Transport, SocketAddr),
    id: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    unregister(shared, key, id);
    rx.close();
    let (transport, to) = key;
    while let Ok(bytes) = rx.try_recv() {
        bump(&shared.stats.send_errors);
        let out = shared.with_media("transport error", |proxy, media| {
            proxy.handle_transport_error(&bytes, to, transport, time::now_ns(), media)
        });
        dispatch(shared, out).await;
    }
}

/// Forgets the connection `id` for `key`; false when another one has replaced it.
fn unregister<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    key: (Transport, SocketAddr),
    id: u64,
) -> bool {
    let mut conns = lock(&shared.conns);
    let ours = conns.get(&key).is_some_and(|c| c.id == id);
    if ours {
        conns.remove(&key);
    }
    ours
}

/// Registers a connection just accepted from `peer`; `None` (and counted) when
/// `max_tcp_connections` are open. A newer connection from the same address replaces the
/// old one for sending.
fn register_accepted<B: MediaBackend + 'static>(
    shared: &SipShared<B>,
    key: (Transport, SocketAddr),
) -> Option<(u64, mpsc::Receiver<Vec<u8>>)> {
    let (tx, rx) = mpsc::channel(shared.cfg.tcp_queue.max(1));
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut conns = lock(&shared.conns);
    if conns.len() >= shared.cfg.max_tcp_connections {
        bump(&shared.stats.tcp_refused);
        return None;
    }
    conns.insert(key, Conn { id, tx });
    Some((id, rx))
}

/// Accepts TCP (or, on the `--listen-sips` listener, TLS) connections until `shutdown`;
/// each gets a task of its own (the TLS handshake first, bounded).
pub(super) async fn accept_loop<B: MediaBackend + 'static>(
    listener: TcpListener,
    shared: Arc<SipShared<B>>,
    shutdown: watch::Receiver<bool>,
    transport: Transport,
) {
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    let what = if transport == Transport::Tls {
        "SIP TLS"
    } else {
        "SIP"
    };
    loop {
        let Some((stream, peer)) = crate::server::accept_or_stop(&listener, &mut stop, what).await
        else {
            return;
        };
        let key = (transport, peer);
        let Some((id, rx)) = register_accepted(&shared, key) else {
            continue; // dropping the stream closes it
        };
        bump(if transport == Transport::Tls {
            &shared.stats.tls_accepted
        } else {
            &shared.stats.tcp_accepted
        });
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped(shutdown) => {}
                _ = serve_accepted(shared, stream, key, id, rx) => {}
            }
        });
    }
}

async fn serve_accepted<B: MediaBackend + 'static>(
    shared: Arc<SipShared<B>>,
    stream: TcpStream,
    key: (Transport, SocketAddr),
    id: u64,
    rx: mpsc::Receiver<Vec<u8>>,
) {
    if key.0 != Transport::Tls {
        return run_connection(shared, stream, key, id, rx).await;
    }
    match tls::accept(&shared, stream, key.1).await {
        Some(tls) => run_connection(shared, tls, key, id, rx).await,
        None => {
            unregister(&shared, key, id);
        }
    }
}

/// Reads and writes one registered connection (TCP, or TLS after its handshake) until it
/// closes, idles out or breaks.
async fn run_connection<B, S>(
    shared: Arc<SipShared<B>>,
    stream: S,
    key: (Transport, SocketAddr),
    id: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
) where
    B: MediaBackend + 'static,
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (transport, peer) = key;
    let (rd, mut wr) = tokio::io::split(stream);
    let stats = shared.clone();
    let mut writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let written = match wr.write_all(&bytes).await {
                // TLS buffers records: push them out now.
                Ok(()) => wr.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::debug!(%peer, ?transport, error = %e, "SIP stream write failed");
                // What could not be written, and what waits behind it, ends its branch
                // at once (a 503 from the peer), not after Timer B.
                rx.close();
                let mut lost = vec![bytes];
                while let Ok(b) = rx.try_recv() {
                    lost.push(b);
                }
                for b in lost {
                    bump(&stats.stats.send_errors);
                    let out = stats.with_media("transport error", |proxy, media| {
                        proxy.handle_transport_error(&b, peer, transport, time::now_ns(), media)
                    });
                    dispatch(&stats, out).await;
                }
                return;
            }
            bump(if transport == Transport::Tls {
                &stats.stats.tls_sent
            } else {
                &stats.stats.tcp_sent
            });
        }
        let _ = wr.shutdown().await;
    });
    let reason = tokio::select! {
        r = read_connection(&shared, rd, key, id) => r,
        // The writer ends on its own only when writing failed: the connection is dead.
        _ = &mut writer => "write failed",
    };
    tracing::debug!(%peer, ?transport, reason, "SIP connection closed");
    // Drop our sender so the writer drains what is queued (a final error response), then ends.
    if unregister(&shared, key, id) {
        // Bindings on this flow are reached otherwise from now on (`Proxy::flow_closed`).
        lock(&shared.core)
            .proxy
            .flow_closed(transport, peer, time::now_ns());
    }
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
    key: (Transport, SocketAddr),
    id: u64,
) -> Option<mpsc::Sender<Vec<u8>>> {
    lock(&shared.conns)
        .get(&key)
        .filter(|c| c.id == id)
        .map(|c| c.tx.clone())
}

/// Frames and handles messages until the stream ends; returns why it ended.
async fn read_connection<B, S>(
    shared: &Arc<SipShared<B>>,
    mut rd: ReadHalf<S>,
    key: (Transport, SocketAddr),
    id: u64,
) -> &'static str
where
    B: MediaBackend + 'static,
    S: AsyncRead + AsyncWrite,
{
    let (transport, peer) = key;
    let max = shared.cfg.max_message;
    // When the bytes now buffered started to arrive (`None`: nothing buffered): a message
    // must complete within `message_timeout` of its first byte.
    let mut partial_since: Option<tokio::time::Instant> = None;
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
                        if let Some(tx) = conn_sender(shared, key, id) {
                            let _ = tx.try_send(b"\r\n".to_vec());
                        }
                    }
                    buf.drain(..n);
                    scan_from = 0;
                    partial_since = None;
                    if n == 0 {
                        break;
                    }
                }
                Ok(Frame::Message { len }) => {
                    let len = len.min(buf.len());
                    if len > max {
                        return reject_and_close(shared, &buf, ParseError::TooLarge, key, id);
                    }
                    bump(if transport == Transport::Tls {
                        &shared.stats.tls_received
                    } else {
                        &shared.stats.tcp_received
                    });
                    let out = shared.incoming(&buf[..len], peer, transport);
                    dispatch(shared, out).await;
                    buf.drain(..len);
                    scan_from = 0;
                    partial_since = None;
                }
                Err(e) => return reject_and_close(shared, &buf, e, key, id),
            }
        }
        if buf.len() > max {
            return reject_and_close(shared, &buf, ParseError::TooLarge, key, id);
        }
        let now = tokio::time::Instant::now();
        if buf.is_empty() {
            partial_since = None;
        }
        let started = *partial_since.get_or_insert(now);
        // Idle between messages; a message begun must end within `message_timeout`.
        let (limit, slow) = if buf.is_empty() {
            (shared.cfg.tcp_idle, false)
        } else {
            let left = (started + shared.cfg.message_timeout).saturating_duration_since(now);
            (left.min(shared.cfg.tcp_idle), true)
        };
        let n = match tokio::time::timeout(limit, rd.read(&mut chunk)).await {
            Err(_) if slow => {
                bump(&shared.stats.slow_closed);
                return "message not completed in time";
            }
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
    key: (Transport, SocketAddr),
    id: u64,
) -> &'static str {
    let peer = key.1;
    if e == ParseError::TooLarge {
        bump(&shared.stats.too_large);
    } else {
        bump(&shared.stats.framing_errors);
    }
    if let Some(r) = transport_reject(buf, e) {
        if let Some(tx) = conn_sender(shared, key, id) {
            bump(&shared.stats.transport_rejects);
            let _ = tx.try_send(r);
        }
    }
    tracing::debug!(%peer, transport = ?key.0, error = %e, "SIP stream cannot be framed");
    "framing error"
}
