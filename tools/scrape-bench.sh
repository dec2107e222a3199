#!/usr/bin/env bash
# scrape-bench.sh: what a Prometheus scrape of /metrics costs with many calls held and media
# flowing. One rtpanchor (release build, pinned to RELAY_CPU, --listen-http on) holds CALLS
# calls that rtpbench sets up and sends RATE packets/s through for DURATION seconds; the runs
# alternate between "quiet" (no scrape) and "scraped" (SCRAPES scrapes of /metrics, one every
# GAP seconds, while the media flows), so the loss of the two kinds is compared in the same
# sitting. Prints each scrape's answer time (curl's time_total), their median and maximum,
# the exposition's size, and per run rtpbench's loss.
#
# Usage: tools/scrape-bench.sh [--calls N] [--rate PPS] [--duration S] [--scrapes N]
#                              [--gap S] [--reps N] [--kernel] [--out DIR]
#   --calls N     calls held (default 10000; 4 relay ports each, from 22000)
#   --rate PPS    packets/s over all calls and both directions (default 40000)
#   --duration S  seconds of media measured per run (default 20)
#   --scrapes N   scrapes per scraped run (default 50), --gap S apart (default 0.25)
#   --reps N      quiet/scraped pairs (default 2; the order alternates)
#   --kernel      the relay as it runs by default (in-kernel fast path); default: user space
# Env: RELAY_CPU (default 1), GEN_CPUS (default 0; the scraper runs there too), RTPANCHOR,
#      BIN_DIR (rtpbench, default target/release), GEN_BASE (generator ports, default 5000).
# Run it under the bench lock: flock /tmp/rtpanchor-bench.lock tools/scrape-bench.sh
# Needs: curl, jq. Every process started here is stopped by pid on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
RTPBENCH=$BIN_DIR/rtpbench
RTPANCHOR=${RTPANCHOR:-$ROOT/target/release/rtpanchor}
RELAY_CPU=${RELAY_CPU:-1}
GEN_CPUS=${GEN_CPUS:-0}
NG=127.0.0.1:2223
HTTP=127.0.0.1:2280
GEN_BASE=${GEN_BASE:-5000}

CALLS=10000
RATE=40000
DURATION=20
SCRAPES=50
GAP=0.25
REPS=2
KERNEL=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) CALLS=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --scrapes) SCRAPES=$2; shift ;;
        --gap) GAP=$2; shift ;;
        --reps) REPS=$2; shift ;;
        --kernel) KERNEL=1 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,/^# Needs/p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-$(mktemp -d /tmp/scrape-bench.XXXXXX)}
mkdir -p "$OUT"
for tool in "$RTPBENCH" "$RTPANCHOR"; do
    [ -x "$tool" ] || { echo "missing $tool: cargo build --release --workspace" >&2; exit 2; }
done
command -v jq >/dev/null && command -v curl >/dev/null || { echo "needs jq and curl" >&2; exit 2; }

ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
NOFILE=$(ulimit -n)
# io_uring rings for one worker: the fewest whose fixed-file tables (one open-files limit
# each) hold 4 sockets per call.
RINGS=$(( (4 * CALLS + NOFILE - 1) / NOFILE ))
[ "$RINGS" -lt 1 ] && RINGS=1

RELAY_PID=""
SCRAPER_PID=""
cleanup() {
    [ -n "$SCRAPER_PID" ] && kill "$SCRAPER_PID" 2>/dev/null || true
    if [ -n "$RELAY_PID" ]; then
        kill "$RELAY_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$RELAY_PID" 2>/dev/null || true
        wait "$RELAY_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

mode=(--no-kernel-forwarding)
[ "$KERNEL" = 1 ] && mode=()
taskset -c "$RELAY_CPU" "$RTPANCHOR" --listen-ng "$NG" --interface 127.0.0.1 --no-sip \
    --listen-http "$HTTP" --port-min 22000 --port-max 65000 --num-threads 1 \
    --io-engine uring --uring-rings "$RINGS" "${mode[@]}" --log-level warn \
    >"$OUT/relay.log" 2>&1 &
RELAY_PID=$!
for _ in $(seq 100); do curl -sf "http://$HTTP/health" >/dev/null && break; sleep 0.1; done

metric() { # name -> value in the current exposition (0 if absent)
    curl -s "http://$HTTP/metrics" | awk -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}

# scraper FILE: waits until every call is up and the warm-up is over, then scrapes (nothing
# when the calls never come up within 120 s).
scraper() {
    local file=$1 i up=0
    for _ in $(seq 1200); do
        [ "$(metric rtpanchor_sessions)" -ge "$CALLS" ] 2>/dev/null && { up=1; break; }
        sleep 0.1
    done
    [ "$up" = 1 ] || return 0
    sleep 2
    for i in $(seq "$SCRAPES"); do
        curl -s -o "$OUT/exposition.txt" -w '%{time_total} %{size_download}\n' \
            "http://$HTTP/metrics" >>"$file"
        sleep "$GAP"
    done
}

echo "results in $OUT; relay pid $RELAY_PID ($([ "$KERNEL" = 1 ] && echo kernel path || echo user space), $RINGS ring(s)); $CALLS calls at $RATE pps, ${DURATION}s per run" >&2
for rep in $(seq "$REPS"); do
    kinds="quiet scraped"
    [ $((rep % 2)) = 0 ] && kinds="scraped quiet"
    for kind in $kinds; do
        run="$OUT/${kind}_rep${rep}"
        # A generator port taken by another process fails the run at once: tried again.
        for attempt in 1 2 3; do
            rm -f "$run.scrapes" "$run.json"
            if [ "$kind" = scraped ]; then
                taskset -c "${GEN_CPUS%%,*}" bash -c "$(declare -f metric scraper); \
                    HTTP=$HTTP CALLS=$CALLS SCRAPES=$SCRAPES GAP=$GAP OUT=$OUT scraper $run.scrapes" &
                SCRAPER_PID=$!
            fi
            # rtpbench exits non-zero also when its verdict is "fail" (loss, tail, generator
            # short): that run counts; only a run that wrote no results is tried again.
            timeout 900 "$RTPBENCH" --ng "$NG" --calls "$CALLS" --rate "$RATE" --duration "$DURATION" \
                --relay-pid "$RELAY_PID" --pin-cpus "$GEN_CPUS" --local-port-base "$GEN_BASE" \
                --wait-ready 10 --label "rtpanchor-$kind" --json "$run.json" \
                >"$run.txt" 2>"$run.err" || true
            ok=0
            [ -s "$run.json" ] && ok=1
            if [ -n "$SCRAPER_PID" ]; then
                [ "$ok" = 1 ] && wait "$SCRAPER_PID" || kill "$SCRAPER_PID" 2>/dev/null || true
                wait "$SCRAPER_PID" 2>/dev/null || true
                SCRAPER_PID=""
            fi
            [ "$ok" = 1 ] && break
            echo "   $kind rep $rep, attempt $attempt: rtpbench failed: $(tail -n 1 "$run.err")" >&2
            rm -f "$run.scrapes" "$run.json"
            sleep 3
        done
        if [ -f "$run.scrapes" ]; then
            n=$(wc -l <"$run.scrapes")
            [ "$n" -lt "$SCRAPES" ] && echo "   only $n scrapes during the run" >&2
        fi
        jq -r --arg k "$kind" --arg r "$rep" \
            '.steps[0] | "\($k) rep \($r): sent \(.sent), lost \(.lost) (\(.loss_pct)%), p99 \(.latency.p99_us) µs, relay \(.relay_cpu_pct)% CPU: \(.verdict)"' \
            "$run.json" >&2 || true
        sleep 2
    done
done

shopt -s nullglob
scrapes=("$OUT"/scraped_rep*.scrapes)
[ ${#scrapes[@]} -gt 0 ] || { echo "no scrapes" >&2; exit 1; }
echo "== /metrics answer time with $CALLS calls held, media flowing (ms):"
cat "${scrapes[@]}" | awk '{ print $1 * 1000 }' | sort -n | awk '
    { v[NR] = $1 } END { printf "scrapes %d, median %.2f, max %.2f, min %.2f\n", NR, v[int((NR + 1) / 2)], v[NR], v[1] }'
echo "exposition: $(awk '{ s = $2 } END { print s }' "${scrapes[0]}") bytes"
echo "== loss per run:"
for f in "$OUT"/*_rep*.json; do
    jq -r '.label + ": sent " + (.steps[0].sent | tostring) + ", lost " + (.steps[0].lost | tostring) + " (" + (.steps[0].loss_pct | tostring) + "%)"' "$f"
done
