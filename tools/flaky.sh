#!/usr/bin/env bash
# tools/flaky.sh N [TEST...]
#
# Runs test binaries N times each and prints, per test, how many runs failed. TEST is the
# name of an integration test file under tests/ (without .rs), or `lib` for the library's
# unit tests; by default every integration test. The binaries are built once (debug, as
# `cargo test` builds them) and then run directly, one at a time, from the package root, so
# a run sees the same machine load as CI: whatever else is running.
#
# Environment: FLAKY_TIMEOUT (seconds per binary run, default 900); FLAKY_LOAD=1 keeps every
# core busy with a spinning process at nice 19 meanwhile (a loaded machine), FLAKY_LOAD=2 the
# same at nice 0 (the tests get about half the CPU); FLAKY_ARGS (extra arguments for every
# test binary, e.g. a test name filter).
#
# Exit status: 0 when no run failed, 1 otherwise, 2 on a usage or build error.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: tools/flaky.sh N [TEST...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
runs=$1
shift
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || usage

tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  for f in tests/*.rs; do tests+=("$(basename "$f" .rs)"); done
fi

# Build once; map each test name to its executable.
declare -A exe
for t in "${tests[@]}"; do
  if [ "$t" = lib ]; then
    sel=(--lib)
  elif [ -f "tests/$t.rs" ]; then
    sel=(--test "$t")
  else
    echo "flaky: no test named $t (tests/$t.rs or lib)" >&2
    exit 2
  fi
  out=$(cargo test -p rtpanchor "${sel[@]}" --no-run --message-format=json 2>/dev/null) || {
    echo "flaky: building $t failed; run 'cargo test ${sel[*]} --no-run' to see why" >&2
    exit 2
  }
  # The test harness of that target (cargo also reports the relay binary it builds).
  path=$(printf '%s\n' "$out" | python3 -c '
import json, sys
want = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target", {})
    if m.get("executable") and m.get("profile", {}).get("test") and (
        (want == "lib" and "lib" in t.get("kind", [])) or t.get("name") == want
    ):
        print(m["executable"])
' "$t" | tail -n 1)
  if [ -z "$path" ] || [ ! -x "$path" ]; then
    echo "flaky: no executable for $t" >&2
    exit 2
  fi
  exe[$t]=$path
done

load_pids=()
stop_load() { for p in "${load_pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap stop_load EXIT
case "${FLAKY_LOAD:-0}" in
  0) ;;
  1 | 2)
    level=19
    [ "$FLAKY_LOAD" = 2 ] && level=0
    for _ in $(seq "$(nproc)"); do
      nice -n "$level" bash -c 'while :; do :; done' &
      load_pids+=($!)
    done
    echo "flaky: ${#load_pids[@]} spinning loaders at nice $level"
    ;;
  *) echo "flaky: FLAKY_LOAD is 0, 1 or 2" >&2; exit 2 ;;
esac

logdir=$(mktemp -d "${TMPDIR:-/tmp}/flaky-XXXXXX")
declare -A failed ran
any_failed=0
extra=()
# shellcheck disable=SC2206
[ -n "${FLAKY_ARGS:-}" ] && extra=(${FLAKY_ARGS})
for t in "${tests[@]}"; do
  for i in $(seq "$runs"); do
    log="$logdir/$t.$i.log"
    start=$(date +%s)
    timeout --kill-after=10 "${FLAKY_TIMEOUT:-900}" "${exe[$t]}" "${extra[@]}" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    # Per test: every "test NAME ... ok|FAILED" line of libtest's output.
    while read -r name verdict; do
      ran[$t::$name]=$(( ${ran[$t::$name]:-0} + 1 ))
      if [ "$verdict" = FAILED ]; then
        failed[$t::$name]=$(( ${failed[$t::$name]:-0} + 1 ))
      else
        failed[$t::$name]=${failed[$t::$name]:-0}
      fi
    done < <(sed -n 's/^test \(.*\) \.\.\. \(ok\|FAILED\)$/\1 \2/p' "$log")
    if [ $rc -ne 0 ]; then
      any_failed=1
      # A crash or a timeout leaves no FAILED line: count the binary itself.
      if ! grep -q '\.\.\. FAILED$' "$log"; then
        failed[$t::(binary: exit $rc)]=$(( ${failed[$t::(binary: exit $rc)]:-0} + 1 ))
        ran[$t::(binary: exit $rc)]=$(( ${ran[$t::(binary: exit $rc)]:-0} + 1 ))
      fi
      echo "flaky: $t run $i failed (exit $rc, ${secs}s): $log"
    else
      echo "flaky: $t run $i ok (${secs}s)"
      rm -f "$log"
    fi
  done
done

echo
echo "failures per test over $runs run(s):"
total=0
for key in $(printf '%s\n' "${!ran[@]}" | sort); do
  f=${failed[$key]:-0}
  total=$((total + f))
  if [ "$f" -gt 0 ]; then
    printf '  %-70s %d of %d\n' "$key" "$f" "${ran[$key]}"
  fi
done
printf '  %d test(s) seen, %d failure(s) in all\n' "${#ran[@]}" "$total"
for t in "${tests[@]}"; do
  n=0
  for key in "${!ran[@]}"; do [[ $key == "$t::"* ]] && n=$((n + ${failed[$key]:-0})); done
  printf '  %-30s %d failure(s)\n' "$t" "$n"
done
[ "$any_failed" = 0 ] && rmdir "$logdir" 2>/dev/null
[ "$any_failed" = 0 ]
