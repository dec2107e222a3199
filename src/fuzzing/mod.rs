//! The checks behind the fuzz targets (`fuzz/`, cargo-fuzz) and the corpus replay test
//! (`tests/fuzz_corpus.rs`): one function per target, taking arbitrary bytes. A check
//! returns normally for any input the code under test handles as it promises, and panics
//! (an `assert!`) when an invariant breaks, so libFuzzer reports it as a crash and the
//! replay test fails on the corpus file that shows it.
//!
//! Nothing here runs in the relay; it lives in the library so the nightly-only fuzz
//! crate and the stable test suite share one definition of "correct".

mod input;
pub mod ng;
pub mod rtp;
pub mod sdp;
pub mod sequence;
pub mod sip;

pub use input::Input;

/// One fuzz target: its name (the `fuzz/fuzz_targets/<name>.rs` file and the
/// `fuzz/corpus/<name>/` folder) and its check.
pub struct Target {
    pub name: &'static str,
    pub check: fn(&[u8]),
}

/// Every target, in the order `tools/fuzz.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "sip_message",
        check: sip::message,
    },
    Target {
        name: "sip_proxy",
        check: sip::proxy,
    },
    Target {
        name: "sdp",
        check: sdp::check,
    },
    Target {
        name: "ng_request",
        check: ng::request,
    },
    Target {
        name: "rtp",
        check: rtp::check,
    },
    Target {
        name: "ng_sequence",
        check: sequence::check,
    },
];

/// The check of the target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|t| t.name == name).map(|t| t.check)
}
