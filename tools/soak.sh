#!/usr/bin/env bash
# soak.sh MINUTES: a release relay under a steady, mixed load for MINUTES, judged on what it
# leaves behind. Exit 0 = pass; 1 = a check failed (each printed as "FAIL: ..."); 2 = setup.
#
# The load (fixed, so runs compare; see BENCHMARKS.md "Soak"):
# - CALLS (default 150) ng calls kept alive by target/release/soak (tools/rtpbench): each set
#   up with offer + answer like Kamailio's rtpengine module, RTP both ways at 50 packets/s per
#   stream (the sender skips 1% of sequence numbers and swaps 1% of pairs: loss and reordering
#   upstream of the relay), held 20-60 s, then deleted; every 20th call is abandoned instead
#   (media stops, no delete) and must be ended by the relay's media timeout (--timeout 10).
#   A stranger sends malformed datagrams to every relay port of every call, and a truncated
#   ng request and a SIP fragment every 5 s.
# - SIP calls through the built-in proxy with SIPp (tools/sipp/proxy_uac_cps.xml against
#   uas_rr_sdp.xml, the callee registered first): SIP_RATE calls/s (default 2), held 3 s each.
# Every 10 s: the relay's RSS and open descriptors (/proc), ports in use and calls
# (/metrics), and the driver's sent/received/lost counts, into $WORK/soak.csv.
# Fails when: a packet the relay should have forwarded is lost; an ng request or a SIPp call
# fails; an abandoned call is still there after its timeout; RSS, descriptors, ports or calls
# grow: the median of a later window more than 5% over the median of the first window after
# warm-up (WARMUP and WINDOW: 60 s each, or 300 s each for runs of 30 minutes and more;
# medians, so a transient of a minute is not growth and a leak is); any call or port is left
# when everything has ended.
#
# Ports (loopback only, all in 2000-2999): relay media 2000-2799, generator 2900-2916,
# ng 2950, SIP 2960, /metrics 2970, SIPp 2971-2990. User-space forwarding by default: other
# tests on a shared machine attach and detach TC programs on lo; KERNEL=1 lets the relay
# use its in-kernel path.
#
#   tools/soak.sh 3
#   nohup flock -n /tmp/rtpanchor-soak.lock tools/soak.sh 60 > soak60.txt 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${1:?usage: tools/soak.sh MINUTES}
CALLS=${CALLS:-150}
SIP_RATE=${SIP_RATE:-2}
THREADS=${THREADS:-2}
RELAY_TIMEOUT=10
if [ "$MINUTES" -ge 30 ]; then LONG=300; else LONG=60; fi
WARMUP=${WARMUP:-$LONG}
WINDOW=${WINDOW:-$LONG}
IP=127.0.0.1
MEDIA_MIN=2000 MEDIA_MAX=2799 GEN=2900
NG=2950 SIP=2960 HTTP=2970
UAS=2971 UAC=2972 REG=2973 UAS_CP=2974 UAC_CP=2975 REG_CP=2976
UAC_MP=2980 UAS_MP=2984 UAS_RTP=2988
BIN=target/release/rtpanchor SOAK=target/release/soak

command -v sipp >/dev/null || { echo "sipp not installed (apt-get install sip-tester)" >&2; exit 2; }
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --bin rtpanchor --bin soak -p rtpanchor -p rtpbench >&2
fi

WORK=$(mktemp -d /tmp/rtpanchor-soak.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "logs and samples in $WORK" >&2
}
trap cleanup EXIT

KERNEL_ARGS=(--no-kernel-forwarding)
[ -n "${KERNEL:-}" ] && KERNEL_ARGS=()
"$BIN" --interface $IP --listen-ng $IP:$NG --listen-sip $IP:$SIP --listen-http $IP:$HTTP \
  --port-min $MEDIA_MIN --port-max $MEDIA_MAX --num-threads "$THREADS" \
  --timeout $RELAY_TIMEOUT --log-level warn "${KERNEL_ARGS[@]}" >"$WORK/relay.log" 2>&1 &
RELAY=$!
PIDS+=("$RELAY")
for _ in $(seq 50); do
  grep -q ":$(printf '%04X' $SIP) " /proc/net/udp 2>/dev/null && break
  sleep 0.1
done
kill -0 "$RELAY" 2>/dev/null || { echo "relay did not start:" >&2; cat "$WORK/relay.log" >&2; exit 2; }

(cd "$WORK" && timeout 15 sipp -sf "$OLDPWD/tools/sipp/proxy_register.xml" $IP:$SIP -i $IP -p $REG \
  -cp $REG_CP -m 1 -nostdin -recv_timeout 5000 \
  -key aor_user uas -key aor_host $IP -key contact_host $IP -key contact_port $UAS \
  -key via_host $IP -key via_port $REG -key expires 86400 >"$WORK/register.out" 2>&1) \
  || { echo "REGISTER failed" >&2; tail -20 "$WORK/register.out" >&2; exit 2; }
(cd "$WORK" && exec sipp -sf "$OLDPWD/tools/sipp/uas_rr_sdp.xml" -i $IP -mi $IP -p $UAS \
  -mp $UAS_MP -key rtp_port $UAS_RTP -cp $UAS_CP -nostdin -bind_local \
  >"$WORK/uas.out" 2>&1) &
PIDS+=("$!")
sleep 1

# SIPp places its calls over the run minus 30 s, so they are over before the final check.
SIP_CALLS=$(( SIP_RATE * (MINUTES * 60 - 30) ))
(cd "$WORK" && exec timeout $(( MINUTES * 60 + 60 )) sipp -sf "$OLDPWD/tools/sipp/proxy_uac_cps.xml" \
  $IP:$SIP -s uas -i $IP -mi $IP -p $UAC -mp $UAC_MP -cp $UAC_CP -r "$SIP_RATE" -m "$SIP_CALLS" \
  -d 3000 -recv_timeout 10000 -nostdin -trace_stat -stf "$WORK/sipp.csv" -fd 10 \
  >"$WORK/uac.out" 2>&1) &
UAC_PID=$!
PIDS+=("$UAC_PID")

echo "soak: $MINUTES min, $CALLS ng calls at 50 pps per stream, SIP $SIP_RATE calls/s, warm-up ${WARMUP}s, windows ${WINDOW}s, relay pid $RELAY ($THREADS workers), $(nproc) cores (shared machine)"
set +e
"$SOAK" --ng $IP:$NG --http $IP:$HTTP --sip $IP:$SIP --relay-pid "$RELAY" --calls "$CALLS" \
  --minutes "$MINUTES" --warmup-secs "$WARMUP" --window-secs "$WINDOW" --local-base $GEN \
  --relay-timeout $RELAY_TIMEOUT \
  --csv "$WORK/soak.csv"
rc=$?
wait "$UAC_PID"
sipp_rc=$?
set -e
col() { awk -F';' -v n="$1" 'NR==1{for(i=1;i<=NF;i++)if($i==n)c=i}END{if(c)print $c; else print "?"}' "$WORK/sipp.csv" 2>/dev/null || echo "?"; }
ok=$(col "SuccessfulCall(C)") failed=$(col "FailedCall(C)")
echo "soak: SIPp through the proxy: $ok successful of $SIP_CALLS, $failed failed (exit $sipp_rc)"
if [ "$sipp_rc" != 0 ] || [ "$failed" != 0 ] || [ "$ok" != "$SIP_CALLS" ]; then
  echo "FAIL: SIP calls through the proxy: $ok of $SIP_CALLS successful, $failed failed"
  [ "$rc" = 0 ] && rc=1
fi
if ! kill -0 "$RELAY" 2>/dev/null; then
  echo "FAIL: the relay exited"; rc=1
fi
grep -iE "panic|error" "$WORK/relay.log" | head -5 || true
cp "$WORK/soak.csv" "${SOAK_CSV:-/dev/null}" 2>/dev/null || true
echo "samples: $WORK/soak.csv"
if [ "$rc" = 0 ]; then echo "SOAK RESULT: PASS"; else echo "SOAK RESULT: FAIL"; fi
exit "$rc"
