//! A location service, and presence state, shared by several SIP fronts (rtpanchor
//! processes with the built-in proxy) through Redis: a phone registered at front A is
//! reached by a call through front B, and a PUBLISH at A reaches the watchers at B.
//!
//! The registrar and the presence services stay synchronous and in memory. What makes the
//! fronts see each other's state:
//!
//! 1. Every front writes each change of an address of record behind to Redis (the record
//!    under `rtpanchor:reg:<AoR>`, see [`super::locations`]) and, in the same pipeline right
//!    after it, PUBLISHes a [`RegistrationNotice`] (the record itself, and who wrote it) on
//!    [`REG_CHANNEL`]. Likewise each change of a presentity record it writes under its own
//!    name (`rtpanchor:presence:front/<front>/presentity:<AoR>`: the publications it holds
//!    for that AoR), and of a watchers record (`…/watchers:<AoR>`: the watchers subscribed
//!    at it), is PUBLISHed as a [`PresenceNotice`] on [`PRESENCE_CHANNEL`].
//! 2. A subscriber thread in every front (its own single-threaded runtime, like the writer)
//!    hands the other fronts' notices to the SIP server, which applies them to its
//!    in-memory store ([`super::locations::StoredLocations::apply_remote`]) and presence
//!    services (the other fronts' publications, composed with its own).
//! 3. Pub/sub is fire-and-forget: a notice sent while a front's subscription is down is
//!    lost. So after every (re)subscription the subscriber waits for its own writer to
//!    catch up (so the store has this front's changes made while Redis was away), reads
//!    every registration record and every front's shared presence records, and hands over the
//!    lot ([`RemoteChange::Snapshot`], [`RemoteChange::PresenceSnapshot`]).
//!
//! While Redis is down every front keeps serving from memory: registrations made at it
//! work as before (their writes wait in the writer's queue), bindings and publications
//! learnt from the others stay until they expire; changes at the other fronts are seen
//! again once the subscription is back.
//!
//! Concurrent changes of the same address of record at two fronts: the last write wins
//! (each record holds all of an AoR's bindings). Publications never conflict: each front
//! writes only the ones it holds.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;

use super::record::{
    PresenceNotice, RegistrationNotice, PRESENCE_CHANNEL, PRESENCE_KEY_PREFIX,
    PRESENCE_NOTICE_VERSION, REGISTRATION_VERSION, REG_CHANNEL, REG_KEY_PREFIX,
};
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
    /// A front's presentity or watchers record (its key without the store's prefix, scoped
    /// by the front: `front/<front>/presentity:<AoR>`; `None`: deleted).
    Presence { key: String, record: Option<String> },
    /// Every front's presentity and watchers records (after a (re)subscription), keys as
    /// above.
    PresenceSnapshot(Vec<(String, String)>),
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

/// Whether a presence key (without the store's prefix) is a front's presentity or watchers
/// record: the only presence records shared (subscriptions and stored messages stay with
/// their front).
fn shared_presence_key(key: &str) -> bool {
    super::presence::split_scoped(key)
        .is_some_and(|(_, rest)| crate::sip::presence::shared_record(rest).is_some())
}

/// The channel and notice to publish after writing `change`, if it is a registration
/// change or a change of a front's presentity record.
pub fn notice_for(change: &Change, origin: &str) -> Option<(&'static str, String)> {
    let origin = origin.to_owned();
    match change {
        Change::PutRegistration { aor, json, .. } => Some(reg_notice(origin, aor, Some(json))),
        Change::DeleteRegistration { aor } => Some(reg_notice(origin, aor, None)),
        Change::PutPresence { key, json, .. } if shared_presence_key(key) => {
            Some(presence_notice(origin, key, Some(json)))
        }
        Change::DeletePresence { key } if shared_presence_key(key) => {
            Some(presence_notice(origin, key, None))
        }
        _ => None,
    }
}

fn reg_notice(origin: String, aor: &str, record: Option<&String>) -> (&'static str, String) {
    let n = RegistrationNotice {
        v: REGISTRATION_VERSION,
        origin,
        aor: aor.to_owned(),
        record: record.cloned(),
    };
    (REG_CHANNEL, n.emit())
}

fn presence_notice(origin: String, key: &str, record: Option<&String>) -> (&'static str, String) {
    let n = PresenceNotice {
        v: PRESENCE_NOTICE_VERSION,
        origin,
        key: key.to_owned(),
        record: record.cloned(),
    };
    (PRESENCE_CHANNEL, n.emit())
}

/// What a payload published on `channel` means for a front named `origin`: `None` for its
/// own notices and for what cannot be read.
pub fn remote_change(channel: &str, payload: &str, origin: &str) -> Option<RemoteChange> {
    if channel == PRESENCE_CHANNEL {
        let n = PresenceNotice::parse(payload).ok()?;
        return (n.origin != origin && shared_presence_key(&n.key)).then_some(
            RemoteChange::Presence {
                key: n.key,
                record: n.record,
            },
        );
    }
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
    if let Err(e) = ps.subscribe(&[REG_CHANNEL, PRESENCE_CHANNEL]).await {
        return Ended::Lost(e.to_string());
    }
    // Subscribed first, then the snapshot: a change made between the two is in both,
    // applied twice, never missed.
    let caught_up = counters.wait_written(CATCH_UP_LIMIT);
    if !apply(RemoteChange::Reading) {
        return Ended::Stop;
    }
    let snapshot = match client.get_multiplexed_async_connection().await {
        Ok(mut con) => match super::redis::load_prefix(&mut con, REG_KEY_PREFIX).await {
            Ok(regs) => {
                let mut shared = Vec::new();
                let mut failed = None;
                for rest in ["front/*/presentity:*", "front/*/watchers:*"] {
                    match super::redis::load_matching(&mut con, PRESENCE_KEY_PREFIX, rest).await {
                        Ok(mut p) => shared.append(&mut p),
                        Err(e) => failed = Some(e),
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok((regs, shared)),
                }
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e.into()),
    };
    match snapshot {
        Ok((s, p)) => {
            tracing::info!(
                aors = s.len(),
                presence_records = p.len(),
                caught_up,
                "shared locations: subscribed; registrations and presence reloaded"
            );
            *logged = false;
            if !apply(RemoteChange::Snapshot(s)) {
                return Ended::Stop;
            }
            let p = p
                .into_iter()
                .filter(|(k, _)| shared_presence_key(k))
                .collect();
            if !apply(RemoteChange::PresenceSnapshot(p)) {
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
        if let Some(change) = remote_change(msg.get_channel_name(), &payload, origin) {
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
        let (ch, n) = notice_for(&put, "a").unwrap();
        assert_eq!(ch, REG_CHANNEL);
        assert_eq!(remote_change(ch, &n, "a"), None);
        assert_eq!(
            remote_change(ch, &n, "b"),
            Some(RemoteChange::Changed {
                aor: "sip:bob@example.com".into(),
                record: Some("{\"v\":2}".into())
            })
        );
        let (ch, del) = notice_for(
            &Change::DeleteRegistration {
                aor: "sip:bob@example.com".into(),
            },
            "a",
        )
        .unwrap();
        assert!(matches!(
            remote_change(ch, &del, "b"),
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
        assert_eq!(remote_change(REG_CHANNEL, "garbage", "b"), None);
        assert_eq!(remote_change(PRESENCE_CHANNEL, "garbage", "b"), None);
    }

    #[test]
    fn only_a_fronts_presentity_and_watchers_records_are_published() {
        let put = |key: &str| Change::PutPresence {
            key: key.into(),
            json: "{}".into(),
            expires_unix_ns: 9,
        };
        let key = "front/sip:192.0.2.1:5060/presentity:sip:bob@example.com";
        let (ch, n) = notice_for(&put(key), "a").unwrap();
        assert_eq!(ch, PRESENCE_CHANNEL);
        assert_eq!(remote_change(ch, &n, "a"), None);
        assert_eq!(
            remote_change(ch, &n, "b"),
            Some(RemoteChange::Presence {
                key: key.into(),
                record: Some("{}".into())
            })
        );
        let (_, del) = notice_for(&Change::DeletePresence { key: key.into() }, "a").unwrap();
        assert!(matches!(
            remote_change(PRESENCE_CHANNEL, &del, "b"),
            Some(RemoteChange::Presence { record: None, .. })
        ));
        let watchers = "front/sip:192.0.2.1:5060/watchers:sip:bob@example.com";
        assert!(notice_for(&put(watchers), "a").is_some());
        for other in [
            "front/sip:192.0.2.1:5060/subscription:1",
            "front/sip:192.0.2.1:5060/messages:sip:bob@example.com",
            "presentity:sip:bob@example.com",
        ] {
            assert_eq!(notice_for(&put(other), "a"), None, "{other}");
        }
    }
}
