//! Replays every file of every fuzz corpus (`fuzz/corpus/<target>/`) through its target's
//! check (`rtpanchor::fuzzing`) on stable, so what the fuzzers found keeps being tested.
//! A corpus file that makes a check panic fails the test named after its target; the
//! panic message names the invariant and the test output the file.

use std::path::{Path, PathBuf};

use rtpanchor::fuzzing::{target, TARGETS};

fn corpus_files(name: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(name: &str) {
    let check = target(name).unwrap_or_else(|| panic!("no target {name}"));
    let files = corpus_files(name);
    assert!(!files.is_empty(), "{name}: empty corpus");
    for f in &files {
        let data = std::fs::read(f).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{name}: {} fails its check", f.display());
    }
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for t in TARGETS {
        assert!(
            root.join("fuzz_targets")
                .join(format!("{}.rs", t.name))
                .is_file(),
            "fuzz/fuzz_targets/{}.rs missing",
            t.name
        );
        assert!(!corpus_files(t.name).is_empty(), "{}: empty corpus", t.name);
    }
}

#[test]
fn sip_message_corpus() {
    replay("sip_message");
}

#[test]
fn sip_proxy_corpus() {
    replay("sip_proxy");
}

#[test]
fn sdp_corpus() {
    replay("sdp");
}

#[test]
fn ng_request_corpus() {
    replay("ng_request");
}

#[test]
fn rtp_corpus() {
    replay("rtp");
}

#[test]
fn ng_sequence_corpus() {
    replay("ng_sequence");
}
