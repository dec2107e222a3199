#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz + libFuzzer, nightly) for SECONDS each, one
# after the other, and prints per target the executions, coverage (libFuzzer's cov/ft) and
# time. New inputs go to fuzz/corpus-run/<target>/ (not committed); the committed seeds in
# fuzz/corpus/<target>/ are read only. A crash leaves its input in fuzz/artifacts/<target>/
# and makes the script fail: turn it into a named regression test, and copy the input into
# fuzz/corpus/<target>/ so tests/fuzz_corpus.rs replays it on stable.
#
#   tools/fuzz.sh SECONDS [TARGET...]      (default: every target)
#
# Built optimised with debug assertions and overflow checks on (-O -a): arithmetic that
# would wrap silently in a release build panics here.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Logs in
# fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: tools/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(sip_message sip_proxy sdp ng_request rtp ng_sequence digest_header)
fi
mkdir -p fuzz/logs
(cd fuzz && cargo +nightly fuzz build -O -a)
failed=()
printf '%-12s %12s %8s %8s %6s %s\n' target executions cov ft secs result
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus-run/$t"
    log="fuzz/logs/$t.log"
    status=ok
    (cd fuzz && cargo +nightly fuzz run -O -a "$t" "corpus-run/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) \
        >"$log" 2>&1 || status=FAILED
    [ "$status" = ok ] || failed+=("$t")
    runs=$(grep -oE 'Done [0-9]+ runs' "$log" | tail -1 | grep -oE '[0-9]+' || echo '?')
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo '?')
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo '?')
    [ "$runs" != '?' ] || runs=$(grep -oE '^#[0-9]+' <<<"$last" | tr -d '#' || echo '?')
    printf '%-12s %12s %8s %8s %6s %s\n' "$t" "$runs" "$cov" "$ft" "$secs" "$status"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/logs/)" >&2
    exit 1
fi
