//! The Event State Compositor (RFC 3903): PUBLISH of `presence` state per AoR and entity
//! tag (initial, refresh, modify, remove; 412 for an unknown tag; expiry), the presentity
//! table, and the rate-limited NOTIFY of every change to the presentity's watchers.
#![forbid(unsafe_code)]

use super::remote::{ByFront, RemoteWatcher};
use super::subscribe::SubState;
use super::{
    event_of, pidf, Answer, Due, Handling, Offer, OutRequest, PersistKey, Services, SubId,
    NANOS_PER_SEC,
};

/// One publication: a publisher's document under its current entity tag.
#[derive(Clone, Debug)]
pub(super) struct Publication {
    pub(super) etag: String,
    pub(super) body: Vec<u8>,
    pub(super) expires_at: u64,
}

/// A presentity: its publications, watchers and registration-derived state.
#[derive(Clone, Debug, Default)]
pub(super) struct Presentity {
    pub(super) publications: Vec<Publication>,
    pub(super) watchers: Vec<SubId>,
    pub(super) winfo: Vec<SubId>,
    /// Other fronts' publications of this AoR, by front (see `remote.rs`).
    pub(super) remote: ByFront<Publication>,
    /// Other fronts' watchers of this AoR, by front (their watcher info).
    pub(super) remote_watchers: ByFront<RemoteWatcher>,
    /// Whether the AoR has a binding (its state while nothing is published).
    pub(super) registered: bool,
    /// When its watchers were last told of a change; a NOTIFY due later is armed.
    last_notify: Option<u64>,
    notify_armed: bool,
}

impl Presentity {
    /// Whether anything is published for it, here or at another front.
    pub(super) fn published(&self) -> bool {
        !self.publications.is_empty() || self.remote.iter().any(|(_, p)| !p.is_empty())
    }
}

impl Services {
    pub(super) fn on_publish(&mut self, o: &Offer<'_, '_>, now: u64) -> Handling {
        let msg = o.msg;
        let Some(target) = o.target.clone() else {
            return Handling::Pass;
        };
        let answer = |a: Answer| Handling::Answer(a, Vec::new());
        if event_of(msg).is_none_or(|(p, _)| p != "presence") {
            return answer(Answer::new(489, "Bad Event").with("Allow-Events", "presence"));
        }
        let expires = match self.lifetime(msg) {
            Ok(e) => e,
            Err(a) => return answer(a),
        };
        let body = msg.body();
        if !body.is_empty() {
            let pidf_type = msg
                .content_type()
                .ok()
                .flatten()
                .is_some_and(|t| t.is("application", "pidf+xml"));
            if !pidf_type {
                return answer(
                    Answer::new(415, "Unsupported Media Type")
                        .with("Accept", "application/pidf+xml"),
                );
            }
            if body.len() > self.cfg.max_pidf {
                return answer(Answer::new(413, "Request Entity Too Large"));
            }
            if pidf::Document::parse(body).is_none() {
                return answer(Answer::new(400, "Bad Request - Invalid PIDF"));
            }
        }
        let if_match = msg
            .header_by_name("SIP-If-Match")
            .map(|h| h.value.trim().to_owned());
        let until = now.saturating_add(u64::from(expires) * NANOS_PER_SEC);
        let etag = match if_match {
            None => {
                // RFC 3903 §6 step 6: an initial publication carries a body.
                if body.is_empty() {
                    return answer(Answer::new(400, "Bad Request - Missing Body"));
                }
                if expires == 0 {
                    return answer(Answer::new(200, "OK").with("Expires", "0"));
                }
                let per_aor = self
                    .presentities
                    .get(&target)
                    .map_or(0, |p| p.publications.len());
                if self.publications >= self.cfg.max_publications
                    || per_aor >= self.cfg.max_publications_per_aor
                {
                    self.stats.refused_full += 1;
                    return answer(
                        Answer::new(503, "Service Unavailable - Too Many Publications")
                            .with("Retry-After", "60"),
                    );
                }
                let etag = self.mint("e");
                self.presentity_mut(&target, now)
                    .publications
                    .push(Publication {
                        etag: etag.clone(),
                        body: body.to_vec(),
                        expires_at: until,
                    });
                self.publications += 1;
                etag
            }
            Some(old) => {
                let found = self.etags.get(&old).is_some_and(|a| *a == target);
                if !found {
                    // An entity tag another front issued: that front refreshes, modifies or
                    // removes its publication (its tags are its own).
                    if let Some(front) = self.front_of_etag(&target, &old) {
                        return Handling::ToFront(front);
                    }
                    return answer(Answer::new(412, "Conditional Request Failed"));
                }
                if expires == 0 {
                    self.remove_publication(&target, &old);
                    let out = self.state_changed(&target, now);
                    return Handling::Answer(
                        Answer::new(200, "OK")
                            .with("SIP-ETag", old)
                            .with("Expires", "0"),
                        out,
                    );
                }
                // Refresh (no body) or modify: a new entity tag either way (§6 step 8).
                let etag = self.mint("e");
                self.etags.remove(&old);
                let Some(p) = self.presentities.get_mut(&target) else {
                    return answer(Answer::new(412, "Conditional Request Failed"));
                };
                let Some(publ) = p.publications.iter_mut().find(|x| x.etag == old) else {
                    return answer(Answer::new(412, "Conditional Request Failed"));
                };
                let stale = (publ.expires_at, Due::PubExpires(old));
                publ.etag = etag.clone();
                publ.expires_at = until;
                if !body.is_empty() {
                    publ.body = body.to_vec();
                }
                self.timers.remove(&stale);
                etag
            }
        };
        self.etags.insert(etag.clone(), target.clone());
        self.arm(until, Due::PubExpires(etag.clone()));
        self.touch(PersistKey::Presentity(target.clone()));
        let out = if body.is_empty() {
            Vec::new()
        } else {
            self.state_changed(&target, now)
        };
        Handling::Answer(
            Answer::new(200, "OK")
                .with("SIP-ETag", etag)
                .with("Expires", expires.to_string()),
            out,
        )
    }

    /// The front holding `aor`'s live publication under `etag`, if another front does.
    pub(super) fn front_of_etag(&self, aor: &str, etag: &str) -> Option<String> {
        self.presentities
            .get(aor)?
            .remote
            .iter()
            .find(|(_, pubs)| pubs.iter().any(|p| p.etag == etag))
            .map(|(front, _)| front.clone())
    }

    /// A publication's expiry timer fired.
    pub(super) fn pub_expired(&mut self, etag: &str, deadline: u64, now: u64) -> Vec<OutRequest> {
        let Some(aor) = self.etags.get(etag).cloned() else {
            return Vec::new();
        };
        let live = self
            .presentities
            .get(&aor)
            .and_then(|p| p.publications.iter().find(|x| x.etag == etag))
            .is_some_and(|x| x.expires_at > deadline);
        if live {
            return Vec::new();
        }
        self.remove_publication(&aor, etag);
        self.state_changed(&aor, now)
    }

    fn remove_publication(&mut self, aor: &str, etag: &str) {
        self.etags.remove(etag);
        self.touch(PersistKey::Presentity(aor.to_owned()));
        if let Some(p) = self.presentities.get_mut(aor) {
            let before = p.publications.len();
            for x in p.publications.iter().filter(|x| x.etag == etag) {
                self.timers
                    .remove(&(x.expires_at, Due::PubExpires(x.etag.clone())));
            }
            p.publications.retain(|x| x.etag != etag);
            self.publications -= before - p.publications.len();
        }
    }

    /// Registration-derived state: `aor` has (or no longer has) a binding.
    pub(super) fn set_registered(&mut self, aor: &str, on: bool, now: u64) -> Vec<OutRequest> {
        let Some(p) = self.presentities.get_mut(aor) else {
            return Vec::new();
        };
        if p.registered == on {
            return Vec::new();
        }
        p.registered = on;
        if !p.published() {
            self.state_changed(aor, now)
        } else {
            Vec::new()
        }
    }

    /// The presentity's state changed: NOTIFY its watchers now, or at the end of the rate
    /// limit's interval.
    pub(super) fn state_changed(&mut self, aor: &str, now: u64) -> Vec<OutRequest> {
        let interval = self.cfg.notify_interval_ns;
        let Some(p) = self.presentities.get_mut(aor) else {
            return Vec::new();
        };
        if p.notify_armed {
            return Vec::new();
        }
        match p.last_notify {
            Some(last) if now < last.saturating_add(interval) => {
                p.notify_armed = true;
                self.arm(last.saturating_add(interval), Due::Notify(aor.to_owned()));
                Vec::new()
            }
            _ => self.notify_watchers(aor, now),
        }
    }

    /// The rate limit's interval ended with a change pending.
    pub(super) fn notify_due(&mut self, aor: &str, now: u64) -> Vec<OutRequest> {
        let out = match self.presentities.get_mut(aor) {
            Some(p) if p.notify_armed => {
                p.notify_armed = false;
                self.notify_watchers(aor, now)
            }
            _ => Vec::new(),
        };
        self.drop_presentity_if_idle(aor);
        out
    }

    fn notify_watchers(&mut self, aor: &str, now: u64) -> Vec<OutRequest> {
        let Some(p) = self.presentities.get_mut(aor) else {
            return Vec::new();
        };
        p.last_notify = Some(now);
        let ids = p.watchers.clone();
        let mut out = Vec::new();
        for id in ids {
            if self
                .subs
                .get(&id)
                .is_some_and(|s| s.state == SubState::Active)
            {
                out.extend(self.send_notify(id, now));
            }
        }
        self.drop_presentity_if_idle(aor);
        out
    }

    /// The composed PIDF document of `aor` (RFC 3863), or the registration-derived one.
    pub(super) fn document(&self, aor: &str) -> Vec<u8> {
        let p = self.presentities.get(aor);
        let docs: Vec<&[u8]> = p
            .map(|p| {
                let remote = p.remote.iter().flat_map(|(_, pubs)| pubs.iter());
                p.publications
                    .iter()
                    .chain(remote)
                    .map(|x| x.body.as_slice())
                    .collect()
            })
            .unwrap_or_default();
        if docs.is_empty() {
            return pidf::basic(aor, p.is_some_and(|p| p.registered));
        }
        pidf::compose(aor, &docs)
    }

    pub(super) fn presentity_mut(&mut self, aor: &str, _now: u64) -> &mut Presentity {
        self.presentities.entry(aor.to_owned()).or_default()
    }

    /// Forgets a presentity with nothing published, no watcher and nothing pending.
    pub(super) fn drop_presentity_if_idle(&mut self, aor: &str) {
        let idle = self.presentities.get(aor).is_some_and(|p| {
            !p.published()
                && p.watchers.is_empty()
                && p.winfo.is_empty()
                && p.remote_watchers.is_empty()
                && !p.notify_armed
        });
        if idle {
            self.presentities.remove(aor);
        }
    }
}
