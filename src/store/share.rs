//! A location service shared by several SIP fronts (rtpanchor processes with the built-in
//! proxy) through Redis: a phone registered at front A is reached by a call through front B.
//!
//! The registrar stays synchronous and in memory. What makes the fronts see each other's
//! registrations:
//!
//! 1. Every front writes each change of an address of record behind to Redis (the record
//!    under `rtpanchor:reg:<AoR>`, see [`super::locations`]) and, in the same pipeline right
//!    after it, PUBLISHes a [`RegistrationNotice`] (the record itself, and who wrote it) on
//!    [`REG_CHANNEL`].
//! 2. A subscriber thread in every front (its own single-threaded runtime, like the writer)
//!    hands the other fronts' notices to the SIP server, which applies them to its
//!    in-memory store ([`super::locations::StoredLocations::apply_remote`]).
//! 3. Pub/sub is fire-and-forget: a notice sent while a front's subscription is down is
//!    lost. So after every (re)subscription the subscriber waits for its own writer to
//!    catch up (so the store has this front's changes made while Redis was away), reads
//!    every registration record and hands over the lot ([`RemoteChange::Snapshot`]).
//!
//! While Redis is down every front keeps serving from memory: registrations made at it
//! work as before (their writes wait in the writer's queue), bindings learnt from the
//! others stay until they expire; changes at the other fronts are seen again once the
//! subscription is back.
//!
//! Concurrent changes of the same address of record at two fronts: the last write wins
//! (each record holds all of an AoR's bindings).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;

use super::record::{RegistrationNotice, REGISTRATION_VERSION, REG_CHANNEL, REG_KEY_PREFIX};
use super::{Change, WriterCounters};

/// A change made at another front, for the SIP server to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteChange {
    /// One address of record: its record as stored (`None`: no binding left).
    Changed { aor: String, record: Option<String> },
    /// A snapshot is about to be read: address of record changed here from now on keep
    /// their bindings when it is applied (the snapshot may predate them).
    Reading,
    /// Every registration record the store holds (after a (re)subscription).
    Snapshot(Vec<(String, String)>),
}

/// Applies a [`RemoteChange`]; returns false once there is nothing left to apply to (the
/// subscriber then stops).
pub type ApplyRemote = Box<dyn FnMut(RemoteChange) -> bool + Send>;

/// Longest wait for this front's own queued writes before reading a snapshot.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(2);

/// A token naming this process in its notices (its pid and start time), so it skips its own.
pub fn origin_token() -> String {
    format!(
        "{}-{:x}",
        std::process::id(),
        crate::time::unix_now().as_nanos()
    )
}

/// The notice to publish after writing `change`, if it is a registration change.
pub fn notice_for(change: &Change, origin: &str) -> Option<String> {
    let (aor, record) = match change {
        Change::PutRegistration { aor, json, .. } => (aor, Some(json.clone())),
        Change::DeleteRegistration { aor } => (aor, None),
        _ => return None,
    };
    Some(
        RegistrationNotice {
            v: REGISTRATION_VERSION,
            origin: origin.to_owned(),
            aor: aor.clone(),
            record,
        }
        .emit(),
    )
}

/// What a published payload means for a front named `origin`: `None` for its own notices
/// and for what cannot be read.
pub fn remote_change(payload: &str, origin: &str) -> Option<RemoteChange> {
    let n = RegistrationNotice::parse(payload).ok()?;
    (n.origin != origin).then_some(RemoteChange::Changed {
        aor: n.aor,
        record: n.record,
    })
}

/// Starts the subscriber thread (see the module docs).
pub(super) fn spawn_subscriber(
    client: redis::Client,
    origin: String,
    counters: Arc<WriterCounters>,
    apply: ApplyRemote,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("rtpanchor-store-sub".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(subscriber(client, origin, counters, apply)),
                Err(e) => tracing::error!(error = %e, "store subscriber not started"),
            }
        })?;
    Ok(())
}

/// Why one subscription ended.
enum Ended {
    /// Redis went away (or never answered): subscribe again.
    Lost(String),
    /// Nothing left to apply to.
    Stop,
}

async fn subscriber(
    client: redis::Client,
    origin: String,
    counters: Arc<WriterCounters>,
    mut apply: ApplyRemote,
) {
    // An outage is logged once, not at every retry.
    let mut logged = false;
    loop {
        match subscription(&client, &origin, &counters, &mut apply, &mut logged).await {
            Ended::Stop => return,
            Ended::Lost(e) if !logged => {
                tracing::warn!(error = %e, "shared locations: subscription lost; retrying");
                logged = true;
            }
            Ended::Lost(_) => {}
        }
        tokio::time::sleep(super::redis::RETRY_DELAY).await;
    }
}

async fn subscription(
    client: &redis::Client,
    origin: &str,
    counters: &WriterCounters,
    apply: &mut ApplyRemote,
    logged: &mut bool,
) -> Ended {
    let mut ps = match client.get_async_pubsub().await {
        Ok(p) => p,
        Err(e) => return Ended::Lost(e.to_string()),
    };
    if let Err(e) = ps.subscribe(REG_CHANNEL).await {
        return Ended::Lost(e.to_string());
    }
    // Subscribed first, then the snapshot: a change made between the two is in both,
    // applied twice, never missed.
    let caught_up = counters.wait_written(CATCH_UP_LIMIT);
    if !apply(RemoteChange::Reading) {
        return Ended::Stop;
    }
    let snapshot = match client.get_multiplexed_async_connection().await {
        Ok(mut con) => super::redis::load_prefix(&mut con, REG_KEY_PREFIX).await,
        Err(e) => Err(e.into()),
    };
    match snapshot {
        Ok(s) => {
            tracing::info!(
                aors = s.len(),
                caught_up,
                "shared locations: subscribed; registrations reloaded"
            );
            *logged = false;
            if !apply(RemoteChange::Snapshot(s)) {
                return Ended::Stop;
            }
        }
        Err(e) => return Ended::Lost(e.to_string()),
    }
    let mut messages = ps.into_on_message();
    loop {
        let next = poll_fn(|cx| Pin::new(&mut messages).poll_next(cx)).await;
        let Some(msg) = next else {
            return Ended::Lost("connection closed".into());
        };
        let Ok(payload) = msg.get_payload::<String>() else {
            continue;
        };
        if let Some(change) = remote_change(&payload, origin) {
            if !apply(change) {
                return Ended::Stop;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_name_their_origin_and_are_skipped_by_it() {
        let put = Change::PutRegistration {
            aor: "sip:bob@example.com".into(),
            json: "{\"v\":2}".into(),
            expires_unix_ns: 9,
        };
        let n = notice_for(&put, "a").unwrap();
        assert_eq!(remote_change(&n, "a"), None);
        assert_eq!(
            remote_change(&n, "b"),
            Some(RemoteChange::Changed {
                aor: "sip:bob@example.com".into(),
                record: Some("{\"v\":2}".into())
            })
        );
        let del = notice_for(
            &Change::DeleteRegistration {
                aor: "sip:bob@example.com".into(),
            },
            "a",
        )
        .unwrap();
        assert!(matches!(
            remote_change(&del, "b"),
            Some(RemoteChange::Changed { record: None, .. })
        ));
        assert_eq!(
            notice_for(
                &Change::DeleteCall {
                    call_id: "x".into()
                },
                "a"
            ),
            None
        );
        assert_eq!(remote_change("garbage", "b"), None);
    }
}
