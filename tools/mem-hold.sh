#!/usr/bin/env bash
# mem-hold.sh: resident memory per call of one or more rtpanchor binaries, measured the
# same way in one sitting. For each binary in turn (and again, REPS times, alternating):
# start it on loopback with a 43,000-port range, read its idle RSS, set up CALLS calls over
# ng (offer + answer, one audio line each), hold them HOLD seconds so the ng reply cache
# forgets the set-up replies, read RSS again, delete the calls, stop the relay by pid.
#
# Usage: tools/mem-hold.sh [BINARY...]        (default: target/release/rtpanchor)
# Env: CALLS (default 10000), HOLD (default 65), REPS (default 1), THREADS (default 2),
#      NG_PORT (default 2298), ADDRS (default 1: media on ADDRS loopback addresses from
#      ${ADDR_PREFIX}FIRST_ADDR on, FIRST_ADDR default 1, ADDR_PREFIX default 127.0.0., one
#      --interface each; 25,000 calls need 3 with the default 43,000-port range),
#      PORT_MIN/PORT_MAX (media port range, default 22000-65000; a call takes four ports
#      of an address, so a small range needs many addresses), MUX (1: both ends offer and answer
#      a=rtcp-mux), RELAY_ARGS (more flags for the relay, e.g. "--io-engine mmsg"),
#      WARM (default 0: calls set up and held HOLD seconds first, and kept; the figures are
#      then what CALLS more calls add on top of a relay that has settled: startup memory the
#      allocator returns late no longer hides in the idle figure).
#      Needs target/release/ngbench. Prints RSS and descriptors per call.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NGBENCH=$ROOT/target/release/ngbench
CALLS=${CALLS:-10000}
HOLD=${HOLD:-65}
REPS=${REPS:-1}
THREADS=${THREADS:-2}
NG_PORT=${NG_PORT:-2298}
ADDRS=${ADDRS:-1}
FIRST_ADDR=${FIRST_ADDR:-1}
ADDR_PREFIX=${ADDR_PREFIX:-127.0.0.}
PORT_MIN=${PORT_MIN:-22000}
PORT_MAX=${PORT_MAX:-65000}
MUX=${MUX:-0}
WARM=${WARM:-0}
read -r -a EXTRA <<<"${RELAY_ARGS:-}"
IFACE_ARGS=()
for k in $(seq "$FIRST_ADDR" $((FIRST_ADDR + ADDRS - 1))); do IFACE_ARGS+=(--interface "$ADDR_PREFIX$k"); done
MUX_ARG=()
[ "$MUX" = 1 ] && MUX_ARG=(--mux)
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
        "$bin" "${IFACE_ARGS[@]}" --listen-ng "127.0.0.1:$NG_PORT" --num-threads "$THREADS" \
            --port-min "$PORT_MIN" --port-max "$PORT_MAX" --log-level warn --no-sip "${EXTRA[@]}" >/dev/null 2>&1 &
        RELAY_PID=$!
        sleep 2
        kill -0 "$RELAY_PID" || { echo "$bin did not start" >&2; exit 1; }
        echo "== rep $rep: $bin (pid $RELAY_PID)"
        if [ "$WARM" -gt 0 ]; then
            "$NGBENCH" --ng "127.0.0.1:$NG_PORT" --hold "$WARM" --hold-secs "$HOLD" "${MUX_ARG[@]}" \
                --keep --relay-pid "$RELAY_PID" --label warm-up >/dev/null
        fi
        "$NGBENCH" --ng "127.0.0.1:$NG_PORT" --hold "$CALLS" --hold-secs "$HOLD" "${MUX_ARG[@]}" \
            --relay-pid "$RELAY_PID" --label "$(basename "$(dirname "$(dirname "$(dirname "$bin")")")")"
        stop_relay
    done
done
