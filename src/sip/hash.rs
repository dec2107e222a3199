//! A seeded FNV-1a hash over several parts, for the tokens SIP elements mint (branches,
//! tags, entity tags, Call-IDs): cheap and stable, and with a per-process seed not
//! predictable from outside. Not a cryptographic hash.
#![forbid(unsafe_code)]

/// FNV-1a over `parts`, each followed by a separator byte so `["a", "b"]` and `["ab"]`
/// differ; `seed` is mixed into the offset basis.
pub fn fnv(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
