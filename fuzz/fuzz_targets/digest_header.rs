//! Fuzzes the Digest header parser (`Authorization`, `Proxy-Authorization`, challenges):
//! no panic, and a parsed value survives emit + parse unchanged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rtpanchor::sip::auth::fuzz::digest_header(data);
});
