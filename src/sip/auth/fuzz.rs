//! Invariants of the Digest header grammar, checked on arbitrary bytes: the body of the
//! `digest_header` fuzz target (`fuzz/`) and of the corpus replay under `cargo test`
//! (`tests/fuzz_digest_header.rs`), so both run the same checks.
//!
//! - Nothing panics on any input (as `Authorization`/`Proxy-Authorization` or as a
//!   challenge).
//! - What parses, re-emitted, parses back to the same value ([`Credentials::emit`],
//!   [`Challenge::emit`]).
//!
//! A violated invariant panics: that is how a fuzzer reports it.
#![forbid(unsafe_code)]
// Panicking on a violated invariant is this module's job (the fuzzer's signal).
#![allow(clippy::panic)]

use super::header::{Challenge, Credentials};

/// Checks the invariants on `data` (non-UTF-8 input is refused before the parser, as the
/// message layer does).
pub fn digest_header(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Credentials::parse(text) {
        let emitted = c.emit();
        match Credentials::parse(&emitted) {
            Ok(again) => assert_eq!(again, c, "credentials changed on a round trip: {emitted:?}"),
            Err(e) => panic!("emitted credentials do not parse ({e:?}): {emitted:?}"),
        }
    }
    if let Ok((realm, nonce, algorithm, stale)) = Challenge::parse(text) {
        let emitted = Challenge {
            realm: &realm,
            nonce: &nonce,
            algorithm,
            stale,
        }
        .emit();
        match Challenge::parse(&emitted) {
            Ok(again) => assert_eq!(
                again,
                (realm.clone(), nonce.clone(), algorithm, stale),
                "challenge changed on a round trip: {emitted:?}"
            ),
            Err(e) => panic!("emitted challenge does not parse ({e:?}): {emitted:?}"),
        }
    }
}
