//! What the manager owns, for checks from outside (the fuzz targets' invariants): every
//! stream of a live call and every stream lingering in its delete delay.

use crate::session::backend::{MediaBackend, StreamId};
use crate::session::manager::SessionManager;

/// The streams a [`SessionManager`] holds, by where they are held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedStreams {
    /// Streams of live calls.
    pub live: Vec<StreamId>,
    /// Streams of deleted calls (or legs) waiting out their delete delay.
    pub lingering: Vec<StreamId>,
}

impl<B: MediaBackend> SessionManager<B> {
    /// Every stream this manager owns (allocates; for checks, never on a hot path).
    #[doc(hidden)]
    pub fn owned_streams(&self) -> OwnedStreams {
        OwnedStreams {
            live: self
                .calls
                .values()
                .flat_map(|c| c.streams().map(|s| s.id))
                .collect(),
            lingering: self
                .lingering
                .iter()
                .flat_map(|l| l.streams.iter().copied())
                .collect(),
        }
    }
}
