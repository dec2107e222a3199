#!/usr/bin/env bash
# mem-hold.sh: resident memory per call of one or more rtpanchor binaries, measured the
# same way in one sitting. For each binary in turn (and again, REPS times, alternating):
# start it on loopback with a 43,000-port range, read its idle RSS, set up CALLS calls over
# ng (offer + answer, one audio line each), hold them HOLD seconds so the ng reply cache
# forgets the set-up replies, read RSS again, delete the calls, stop the relay by pid.
#
# Usage: tools/mem-hold.sh [BINARY...]        (default: target/release/rtpanchor)
# Env: CALLS (default 10000), HOLD (default 65), REPS (default 1), THREADS (default 2),
#      NG_PORT (default 2298). Needs target/release/ngbench.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NGBENCH=$ROOT/target/release/ngbench
CALLS=${CALLS:-10000}
HOLD=${HOLD:-65}
REPS=${REPS:-1}
THREADS=${THREADS:-2}
NG_PORT=${NG_PORT:-2298}
[ $# -gt 0 ] || set -- "$ROOT/target/release/rtpanchor"
[ -x "$NGBENCH" ] || { echo "build first: cargo build --release -p rtpbench" >&2; exit 2; }

RELAY_PID=""
stop_relay() {
    if [ -n "$RELAY_PID" ]; then
        kill "$RELAY_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$RELAY_PID" 2>/dev/null || true
        RELAY_PID=""
    fi
}
trap stop_relay EXIT

for rep in $(seq "$REPS"); do
    for bin in "$@"; do
        "$bin" --interface 127.0.0.1 --listen-ng "127.0.0.1:$NG_PORT" --num-threads "$THREADS" \
            --port-min 22000 --port-max 65000 --log-level warn >/dev/null 2>&1 &
        RELAY_PID=$!
        sleep 2
        kill -0 "$RELAY_PID" || { echo "$bin did not start" >&2; exit 1; }
        echo "== rep $rep: $bin (pid $RELAY_PID)"
        "$NGBENCH" --ng "127.0.0.1:$NG_PORT" --hold "$CALLS" --hold-secs "$HOLD" \
            --relay-pid "$RELAY_PID" --label "$(basename "$(dirname "$(dirname "$(dirname "$bin")")")")"
        stop_relay
    done
done
