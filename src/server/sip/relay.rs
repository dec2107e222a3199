//! The SIP server's side of relay sets: the ng requests the media hook asks for are sent by
//! the links (`server::relays`) in tasks of their own, and the message that asked for them is
//! kept aside; when the last of its requests is answered, the result goes to the hook and
//! the message to the proxy again (see `relayset::hook`). The SIP tasks never wait for a
//! relay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{dispatch, lock, SipShared};
use crate::relayset::{Job, JobId, Outcome, RelaySet};
use crate::server::relays::{health_loop, log_event, Links, MEDIA_POLICY};
use crate::session::backend::MediaBackend;
use crate::sip::transport::Transport;
use crate::time;

/// A message waiting for its relays' answers.
pub(super) struct Parked {
    pub bytes: Vec<u8>,
    pub src: SocketAddr,
    pub transport: Transport,
}

/// The requests one message is waiting for.
pub(super) struct Group {
    parked: Mutex<Option<Parked>>,
    remaining: AtomicUsize,
}

pub(super) struct Done {
    job: JobId,
    outcome: Outcome,
    group: Option<Arc<Group>>,
}

/// The set, its links and the channel their outcomes come back on.
pub(super) struct RelayIo {
    pub set: Arc<Mutex<RelaySet>>,
    links: Links,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: Mutex<Option<mpsc::UnboundedReceiver<Done>>>,
}

impl RelayIo {
    /// Starts the links (needs a tokio runtime).
    pub fn start(set: Arc<Mutex<RelaySet>>) -> RelayIo {
        let links = Links::start(&lock(&set));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        RelayIo {
            set,
            links,
            done_tx,
            done_rx: Mutex::new(Some(done_rx)),
        }
    }

    /// Sends `jobs`; `parked` is handed to the proxy again when those waited for are done.
    pub fn spawn_jobs(&self, jobs: Vec<Job>, parked: Option<Parked>) {
        let waited = jobs.iter().filter(|j| !j.detached).count();
        let group = match (waited, parked) {
            (1.., Some(p)) => Some(Arc::new(Group {
                parked: Mutex::new(Some(p)),
                remaining: AtomicUsize::new(waited),
            })),
            _ => None,
        };
        for job in jobs {
            let g = if job.detached { None } else { group.clone() };
            self.spawn(job, g);
        }
    }

    fn spawn(&self, job: Job, group: Option<Arc<Group>>) {
        let links = self.links.clone();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let outcome = links.request(job.relay, job.request, MEDIA_POLICY).await;
            let _ = tx.send(Done {
                job: job.id,
                outcome,
                group,
            });
        });
    }

    /// The health task (abort it to stop).
    pub fn start_health(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(health_loop(self.set.clone(), self.links.clone()))
    }

    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Done>> {
        lock(&self.done_rx).take()
    }
}

/// Feeds the outcomes to the hook and the waiting messages to the proxy.
pub(super) async fn replay_loop<B: MediaBackend + 'static>(
    shared: Arc<SipShared<B>>,
    mut rx: mpsc::UnboundedReceiver<Done>,
) {
    while let Some(d) = rx.recv().await {
        let Some(io) = shared.relays.as_ref() else {
            return;
        };
        let c = lock(&shared.core)
            .media
            .complete(d.job, d.outcome, time::now_ns());
        if !c.events.is_empty() {
            let set = lock(&io.set);
            for ev in &c.events {
                log_event(&set, ev);
            }
        }
        if let Some(job) = c.retry {
            io.spawn(job, d.group);
            continue;
        }
        let Some(g) = d.group else {
            continue;
        };
        if g.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            continue;
        }
        let parked = lock(&g.parked).take();
        if let Some(p) = parked {
            let out = shared.replay(&p.bytes, p.src, p.transport);
            dispatch(&shared, out).await;
        }
    }
}
