//! Fuzz target `sip_message`: the check is `rtpanchor::fuzzing::sip::message` (its invariants are
//! documented there; `tests/fuzz_corpus.rs` replays this target's corpus on stable).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtpanchor::fuzzing::sip::message(data));
