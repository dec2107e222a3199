#!/usr/bin/env bash
# SIP calls per second through the built-in proxy, media on its embedded relay (mode
# "embedded") against media on three remote rtpanchor relays (mode "set": --media-relay
# 'ng:BOX:PORT' x3), each process in a network namespace of tools/testbed.sh. Needs root,
# iproute2, sipp, python3.
#
#   tools/relayset-bench.sh                      # embedded, set, embedded, set
#   MODES="set" RATES="500 1000" tools/relayset-bench.sh
#   flock /tmp/rtpanchor-bench.lock nice -n -10 tools/relayset-bench.sh   # how BENCHMARKS.md ran it
#
# Layout (PREFIX ra30d, NET 10.230.0): the front (SIP proxy) in ra30d-n1 at .11, the relays in
# ra30d-n2..n4 at .12-.14, SIPp (UAC, UAS) on the host side of the bridge at .1. The front
# sits in a namespace in both modes, so the two differ only in where the media set-up goes.
# Each call: INVITE (SDP) -> 100 -> 180 -> 200 (SDP) -> ACK -> BYE -> 200 through the proxy,
# i.e. one offer, one answer, one delete on the relay that anchors it (no RTP:
# tools/sipp/proxy_uac_cps.xml, as tools/sip-cps.sh).
#
# Per mode run: ramp RATES (STEP_SECS each; a step passes when SIPp exits 0 with every call
# successful), then hold the highest passing rate HOLD_SECS, stepping down 10% (at most
# HOLD_TRIES holds). Then one "RESULT" line: the rate held, CPU seconds of the front and (set
# mode) of the three relays from the first step to the last (start-up left out) divided by the
# calls that succeeded in those steps, and in
# set mode the ng round trip of the calls' requests (offer/answer/delete) to the relays, median
# and p99 as the front's `statistics` reports them (mediarelays: requestrttmedianus,
# requestrttp99us; a log-linear histogram, within 12.5%).
#
# Host ports 6500-6699 (SIPp), namespaces' ports their own. Every process started here is
# stopped by pid and the namespaces deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/sipp/stat.sh

MODES=${MODES:-"embedded set embedded set"}
RATES=${RATES:-"250 500 750 1000 1250 1500 2000 2500 3000"}
STEP_SECS=${STEP_SECS:-10}
HOLD_SECS=${HOLD_SECS:-30}
HOLD_TRIES=${HOLD_TRIES:-3}
BIN=${BIN:-target/release/rtpanchor}
export PREFIX=${PREFIX:-ra30d} NET=${NET:-10.230.0}
HOST=$NET.1 FRONT=$NET.11
NG=6522 SIP=6560 BOX_NG=6522
UAS=6570 UAC=6580 UAC_CP=6590 UAS_CP=6591 REG_CP=6592 UAC_MP=6600 UAS_MP=6610

[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
command -v sipp >/dev/null || { echo "sipp not installed (apt-get install sip-tester)" >&2; exit 2; }
[ -x "$BIN" ] || cargo build --release --bin rtpanchor

WORK=$(mktemp -d /tmp/rtpanchor-rsbench.XXXXXX)
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  tools/testbed.sh down
  echo "logs in $WORK" >&2
}
trap cleanup EXIT
tools/testbed.sh up 4

# utime+stime of PID in seconds (clock ticks / 100).
cpu_of() {
  awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null || echo 0
}

wait_udp() { # NS PORT: the port bound inside namespace NS (bounded: 10 s)
  for _ in $(seq 100); do
    ip netns exec "$1" grep -q ":$(printf '%04X' "$2") " /proc/net/udp 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing bound on udp $2 in $1" >&2
  return 1
}

common_args=(--num-threads 1 --no-kernel-forwarding --log-level warn --ng-allow "$NET.0/24"
  --port-min 30000 --port-max 59999)

start_run() { # MODE RUN
  local mode=$1 run=$2 relays=()
  BOXES=()
  if [ "$mode" = set ]; then
    for i in 2 3 4; do
      ip netns exec "$PREFIX-n$i" "$BIN" --interface "$NET.$((10 + i))" --no-sip \
        --listen-ng "$NET.$((10 + i)):$BOX_NG" "${common_args[@]}" \
        >"$WORK/box$i-$run.log" 2>&1 &
      PIDS+=("$!") BOXES+=("$!")
      relays+=(--media-relay "ng:$NET.$((10 + i)):$BOX_NG")
    done
    for i in 2 3 4; do wait_udp "$PREFIX-n$i" $BOX_NG; done
  fi
  ip netns exec "$PREFIX-n1" "$BIN" --interface "$FRONT" --listen-ng "$FRONT:$NG" \
    --listen-sip "$FRONT:$SIP" --sip-open --sip-max-rate 0 "${common_args[@]}" "${relays[@]}" >"$WORK/front-$run.log" 2>&1 &
  FRONT_PID=$!
  PIDS+=("$FRONT_PID")
  wait_udp "$PREFIX-n1" $SIP
  # The callee registers from its own port: its Contact host is private (10/8), which the
  # proxy takes as NAT evidence and then reaches the binding at the REGISTER's source.
  (cd "$WORK" && timeout 15 sipp -sf "$OLDPWD/tools/sipp/proxy_register.xml" "$FRONT:$SIP" -i "$HOST" \
    -p $UAS -cp $REG_CP -m 1 -nostdin -recv_timeout 5000 \
    -key aor_user uas -key aor_host "$FRONT" -key contact_host "$HOST" -key contact_port $UAS \
    -key via_host "$HOST" -key via_port $UAS -key expires 3600 >"$WORK/register-$run.out" 2>&1) \
    || { echo "REGISTER failed" >&2; tail -20 "$WORK/register-$run.out" >&2; exit 1; }
  (cd "$WORK" && exec sipp -sf "$OLDPWD/tools/sipp/uas_rr_sdp.xml" -i "$HOST" -mi "$HOST" -p $UAS \
    -mp $UAS_MP -key rtp_port $((UAS_MP + 4)) -cp $UAS_CP -nostdin -bind_local \
    >"$WORK/uas-$run.out" 2>&1) &
  PIDS+=("$!")
  sleep 1
}

# run_step RUN RATE SECS -> 0 when every call succeeded; adds the successful calls to OK_CALLS
run_step() {
  local run=$1 rate=$2 secs=$3 calls=$(( $2 * $3 ))
  local csv="$WORK/step-$run-${rate}x$secs.csv" out="$WORK/uac-$run-${rate}x$secs.out"
  set +e
  (cd "$WORK" && timeout $(( secs + 60 )) sipp -sf "$OLDPWD/tools/sipp/proxy_uac_cps.xml" "$FRONT:$SIP" \
    -s uas -i "$HOST" -mi "$HOST" -p $UAC -mp $UAC_MP -cp $UAC_CP -r "$rate" -m "$calls" \
    -l $(( rate * 4 )) -d 0 -recv_timeout 5000 -nostdin -trace_stat -stf "$csv" -fd 5 -trace_err \
    >"$out" 2>&1)
  local rc=$?
  set -e
  local ok failed
  ok=$(sipp_stat "$csv" "SuccessfulCall(C)" 0)
  failed=$(sipp_stat "$csv" "FailedCall(C)")
  OK_CALLS=$(( OK_CALLS + ${ok:-0} ))
  echo "  $rate/s for ${secs}s: rc=$rc successful=$ok failed=$failed"
  [ "$rc" = 0 ] && [ "$failed" = 0 ] && [ "$ok" = "$calls" ]
}

# The front's mediarelays figures: "median p99 samples" over the three relays (the median and
# p99 of the relay with the most samples, and the samples summed).
rtt_figures() {
  ip netns exec "$PREFIX-n1" "$BIN" ctl --ng "$FRONT:$NG" --json stats 2>/dev/null | python3 -c '
import json, sys
def find(v):
    if isinstance(v, dict):
        if "mediarelays" in v:
            return v["mediarelays"]
        for x in v.values():
            r = find(x)
            if r is not None:
                return r
    return None
rs = find(json.load(sys.stdin)) or []
if not rs:
    print("- - 0"); sys.exit()
top = max(rs, key=lambda r: int(r.get("requestrtts", 0)))
meds = "/".join(str(r.get("requestrttmedianus")) for r in rs)
p99s = "/".join(str(r.get("requestrttp99us")) for r in rs)
print(meds, p99s, sum(int(r.get("requestrtts", 0)) for r in rs))
' || echo "? ? ?"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $(git rev-parse --short HEAD)"
run=0
for mode in $MODES; do
  run=$(( run + 1 ))
  echo "run $run: $mode"
  OK_CALLS=0
  start_run "$mode" "$run"
  # CPU from here on (start-up and registration left out).
  front_cpu0=$(cpu_of "$FRONT_PID") boxes_cpu0=0
  for b in "${BOXES[@]}"; do boxes_cpu0=$(awk -v a="$boxes_cpu0" -v b="$(cpu_of "$b")" 'BEGIN{print a + b}'); done
  best=0
  for r in $RATES; do
    if run_step "$run" "$r" "$STEP_SECS"; then best=$r; else break; fi
  done
  held=0 rate=$best tries=0
  while [ "$rate" -gt 0 ] && [ "$tries" -lt "$HOLD_TRIES" ]; do
    tries=$(( tries + 1 ))
    if run_step "$run" "$rate" "$HOLD_SECS"; then held=$rate; break; fi
    rate=$(( rate * 9 / 10 ))
  done
  front_cpu=$(awk -v a="$(cpu_of "$FRONT_PID")" -v b="$front_cpu0" 'BEGIN{print a - b}') boxes_cpu=0
  for b in "${BOXES[@]}"; do boxes_cpu=$(awk -v a="$boxes_cpu" -v b="$(cpu_of "$b")" 'BEGIN{print a + b}'); done
  boxes_cpu=$(awk -v a="$boxes_cpu" -v b="$boxes_cpu0" 'BEGIN{print a - b}')
  per_call() { awk -v s="$1" -v n="$OK_CALLS" 'BEGIN{ if (n > 0) printf "%.0f", s * 1e6 / n; else print "-" }'; }
  line="RESULT run $run $mode: held ${held}/s for ${HOLD_SECS}s (ramp passed ${best}/s); $OK_CALLS calls;"
  line+=" front CPU ${front_cpu}s = $(per_call "$front_cpu") us/call"
  if [ "$mode" = set ]; then
    read -r med p99 n <<<"$(rtt_figures)"
    line+="; relays CPU ${boxes_cpu}s = $(per_call "$boxes_cpu") us/call"
    line+="; ng request round trip per relay median ${med} us, p99 ${p99} us ($n requests)"
  fi
  echo "$line"
  stop_all
  sleep 2
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
