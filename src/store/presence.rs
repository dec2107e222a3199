//! Where presence state and stored messages are kept across restarts: one interface (a
//! [`ChangeSink`] taking `PutPresence`/`DeletePresence` changes, and the records it held at
//! start) over two backends:
//!
//! - the embedded database ([`super::embedded::EmbeddedStore`], `DIR/presence.redb`), the
//!   default: `--sip-state-dir DIR`, else `$STATE_DIRECTORY` (systemd's `StateDirectory=`)
//!   or `/var/lib/rtpanchor` when that directory exists. A default directory that is
//!   missing or cannot be opened leaves presence in memory (a warning says so), so a
//!   first run on a fresh machine works; a directory given explicitly is created, and the
//!   relay does not start if it cannot be used;
//! - Redis (`--redis`), the same store calls and registrations go to. There several SIP
//!   fronts may share one store: each writes its records under its own name
//!   ([`scoped_key`]: `front/<its SIP URI>/<key>`), restores only its own (and records
//!   written before keys were scoped), and its presentity records are published to the
//!   other fronts (`store::share`), which compose them with their own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::embedded::EmbeddedStore;
use super::ChangeSink;

/// The default state directory when systemd does not name one.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rtpanchor";
/// The database file in the state directory.
pub const DB_FILE: &str = "presence.redb";

/// What the SIP server needs to keep presence state: where changes go, what was held at
/// start, and the clock conversion.
#[derive(Clone)]
pub struct PresencePersistence {
    pub sink: Arc<dyn ChangeSink>,
    /// (key, record JSON) as loaded at start.
    pub loaded: Vec<(String, String)>,
    /// Unix time at this process's monotonic 0.
    pub unix_at_zero: Duration,
    /// The embedded backend, if that is the sink (waited for at a clean stop).
    pub embedded: Option<Arc<EmbeddedStore>>,
    /// This front's SIP URI when the store is shared (Redis): its keys are scoped by it.
    /// The SIP server sets it once bound.
    pub front: Option<String>,
}

impl std::fmt::Debug for PresencePersistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresencePersistence")
            .field("loaded", &self.loaded.len())
            .field("embedded", &self.embedded.is_some())
            .field("front", &self.front)
            .finish_non_exhaustive()
    }
}

impl PresencePersistence {
    /// Writes behind to `sink` (e.g. Redis), starting from `loaded`.
    pub fn new(
        sink: Arc<dyn ChangeSink>,
        loaded: Vec<(String, String)>,
        unix_at_zero: Duration,
    ) -> Self {
        PresencePersistence {
            sink,
            loaded,
            unix_at_zero,
            embedded: None,
            front: None,
        }
    }

    /// The key a record of this front is stored under.
    pub fn store_key(&self, key: &str) -> String {
        match &self.front {
            Some(f) => scoped_key(f, key),
            None => key.to_owned(),
        }
    }

    /// The records loaded at start that are this front's own (their keys unscoped), and
    /// the keys of records written before keys were scoped (taken by this front: to be
    /// deleted once written again under its own name).
    pub fn own_records(&self) -> (Vec<(String, String)>, Vec<String>) {
        let Some(front) = &self.front else {
            return (self.loaded.clone(), Vec::new());
        };
        let mut own = Vec::new();
        let mut legacy = Vec::new();
        for (k, v) in &self.loaded {
            match split_scoped(k) {
                Some((f, rest)) if f == front => own.push((rest.to_owned(), v.clone())),
                Some(_) => {}
                None => {
                    legacy.push(k.clone());
                    own.push((k.clone(), v.clone()));
                }
            }
        }
        (own, legacy)
    }

    /// Waits (at most `limit`) for the embedded backend to commit what it took.
    pub fn wait_written(&self, limit: Duration) -> bool {
        self.embedded.as_ref().is_none_or(|e| e.wait_written(limit))
    }
}

const FRONT_PREFIX: &str = "front/";

/// The key of a front's record: `front/<front>/<key>` (a front is `sip:IP:PORT`, no `/`).
pub fn scoped_key(front: &str, key: &str) -> String {
    format!("{FRONT_PREFIX}{front}/{key}")
}

/// The front and the record's own key of a scoped key; `None` for an unscoped one.
pub fn split_scoped(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(FRONT_PREFIX)?.split_once('/')
}

/// The state directory used when none is given: systemd's first `$STATE_DIRECTORY`, else
/// [`DEFAULT_STATE_DIR`].
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// Opens the embedded store in `dir` (given: created if missing, errors are fatal) or in
/// the default directory (missing or unusable: `Ok(None)`, with a warning).
pub fn open_embedded(
    dir: Option<&Path>,
    unix_at_zero: Duration,
) -> anyhow::Result<Option<PresencePersistence>> {
    let explicit = dir.is_some();
    let dir = dir.map_or_else(default_state_dir, Path::to_path_buf);
    if explicit {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create --sip-state-dir {}: {e}", dir.display()))?;
    } else if !dir.is_dir() {
        tracing::warn!(
            dir = %dir.display(),
            "presence state and stored messages are kept in memory only (lost at restart): \
             create the directory or give --sip-state-dir"
        );
        return Ok(None);
    }
    let path = dir.join(DB_FILE);
    let now_unix = u64::try_from(crate::time::unix_now().as_nanos()).unwrap_or(u64::MAX);
    match EmbeddedStore::open(&path, now_unix) {
        Ok((store, loaded)) => {
            tracing::info!(
                path = %path.display(),
                records = loaded.len(),
                "presence state database opened"
            );
            let store = Arc::new(store);
            Ok(Some(PresencePersistence {
                sink: store.clone(),
                loaded,
                unix_at_zero,
                embedded: Some(store),
                front: None,
            }))
        }
        Err(e) if !explicit => {
            tracing::warn!(
                error = format!("{e:#}"),
                "presence state kept in memory only (lost at restart)"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_front_restores_its_own_records_and_the_unscoped_ones() {
        let mut p = PresencePersistence::new(
            Arc::new(MemoryStore::new()),
            vec![
                ("front/sip:192.0.2.1:5060/subscription:1".into(), "a".into()),
                ("front/sip:192.0.2.2:5060/subscription:1".into(), "b".into()),
                ("messages:sip:bob@example.com".into(), "old".into()),
            ],
            Duration::ZERO,
        );
        assert_eq!(p.own_records().0.len(), 3, "not shared: everything");
        p.front = Some("sip:192.0.2.1:5060".into());
        let (own, legacy) = p.own_records();
        assert_eq!(
            own,
            vec![
                ("subscription:1".to_owned(), "a".to_owned()),
                ("messages:sip:bob@example.com".to_owned(), "old".to_owned())
            ]
        );
        assert_eq!(legacy, vec!["messages:sip:bob@example.com".to_owned()]);
        assert_eq!(
            p.store_key("presentity:sip:a@x"),
            "front/sip:192.0.2.1:5060/presentity:sip:a@x"
        );
        assert_eq!(
            split_scoped(&p.store_key("presentity:sip:a@x")),
            Some(("sip:192.0.2.1:5060", "presentity:sip:a@x"))
        );
        assert_eq!(split_scoped("presentity:sip:a@x"), None);
    }
}
