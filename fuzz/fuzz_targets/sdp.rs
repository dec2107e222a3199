//! Fuzz target `sdp`: the check is `rtpanchor::fuzzing::sdp::check` (its invariants are
//! documented there; `tests/fuzz_corpus.rs` replays this target's corpus on stable).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtpanchor::fuzzing::sdp::check(data));
