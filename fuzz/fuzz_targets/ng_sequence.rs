//! Fuzz target `ng_sequence`: the check is `rtpanchor::fuzzing::sequence::check` (its invariants are
//! documented there; `tests/fuzz_corpus.rs` replays this target's corpus on stable).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtpanchor::fuzzing::sequence::check(data));
