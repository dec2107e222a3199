//! The `digest_header` fuzz target's checks (`rtpanchor::sip::auth::fuzz`) on stable, under
//! `cargo test`: every checked-in seed in `fuzz/corpus/digest_header/` (and any crash
//! reproducer saved in `fuzz/regressions/digest_header/`), then a bounded, deterministic
//! pass of byte mutations of each seed, so CI exercises the parser without nightly.

use std::path::Path;

use rtpanchor::sip::auth::fuzz::digest_header;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn corpus_replays_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = inputs(&root.join("corpus/digest_header"));
    assert!(seeds.len() >= 10, "the seed corpus is missing");
    for (name, data) in seeds
        .iter()
        .chain(inputs(&root.join("regressions/digest_header")).iter())
    {
        eprintln!("{name}");
        digest_header(data);
    }
}

#[test]
fn mutated_seeds_keep_the_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/digest_header");
    // xorshift64: deterministic, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"\"\\,= \t\r\nabcAUTHauthDigest0123456789fF;:@";
    for (_, seed) in inputs(&root) {
        for _ in 0..2000 {
            let mut d = seed.clone();
            for _ in 0..1 + next() % 4 {
                let r = next();
                let at = (r >> 8) as usize % (d.len() + 1);
                let byte = alphabet[(r >> 40) as usize % alphabet.len()];
                match r % 3 {
                    0 if at < d.len() => d[at] = byte,
                    1 => d.insert(at, byte),
                    _ if at < d.len() => {
                        d.remove(at);
                    }
                    _ => d.push(byte),
                }
            }
            digest_header(&d);
        }
    }
}
