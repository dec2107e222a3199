#!/usr/bin/env bash
# Calls per second through rtpanchor's built-in SIP proxy, measured with SIPp.
#
# Each call: INVITE (SDP) -> 100 -> 180 -> 200 (SDP) -> ACK -> BYE -> 200 through the proxy,
# i.e. SIP handling plus one media offer, one answer (two relay port pairs opened, SDP
# rewritten both ways) and one delete. No RTP (tools/sipp/proxy_uac_cps.xml).
#
# Ramp: for each rate R in RATES, run R calls/s for STEP_SECS; a step passes when SIPp exits 0
# and reports zero failed calls. Then the highest passing rate is held for HOLD_SECS, stepping
# down (by 10%) until a full hold passes. Prints one "RESULT" line.
#
#   tools/sip-cps.sh                       # release build, defaults below
#   RATES="500 1000 2000" STEP_SECS=10 HOLD_SECS=60 tools/sip-cps.sh
#   KEEP=30 tools/sip-cps.sh              # keep the relay up 30 s after the run (ng on 127.0.0.1:20022)
#   AUTH=1 tools/sip-cps.sh               # digest authentication on (--sip-users): the callee
#                                         # registers after a 401, every call is challenged (407)
#                                         # and re-sent with credentials (tools/sipp/auth_*.xml);
#                                         # flood control off (one generator address)
#
# Loopback only; SIP and SIPp on 20000-21000, relay media on 30000-59999 (15,000 pairs, two
# per call: each call holds its ports for its 0.5 s plus set-up, ~1,500 calls at 2,500/s, and
# offered twice the capacity the calls admitted wait longer; a range of 5,000 pairs ran out
# at 5,000 calls/s offered). Needs sipp. Each step also prints the 503s SIPp received and
# the INVITE retransmissions it sent.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/sipp/stat.sh

RATES=${RATES:-"250 500 1000 1500 2000 2500 3000 3500 4000 4500 5000"}
STEP_SECS=${STEP_SECS:-10}
HOLD_SECS=${HOLD_SECS:-60}
BIN=${BIN:-target/release/rtpanchor}
THREADS=${THREADS:-1}
IP=127.0.0.1
NG=20022 SIP=20060 UAS=20070 UAC=20080 REG=20085 UAS_CP=20091 UAC_CP=20090 REG_CP=20092
UAC_MP=21000   # unused by RTP, but SIPp writes it into the SDP ([auto_media_port]): < 31000
MEDIA_MIN=30000 MEDIA_MAX=59999
# SIPp's socket buffers (-buff_size; the kernel caps them at net.core.rmem_max/wmem_max).
# With its default (~200 KB), the UAC dropped ~70,000 responses at its own socket in 14 s at
# 5,000 calls/s offered, then retransmitted those INVITEs: the generator's drops, not the
# relay's, drove the retransmission storm. Per-socket drops are printed at each step.
SIPP_BUF=${SIPP_BUF:-4194304}

command -v sipp >/dev/null || { echo "sipp not installed (apt-get install sip-tester)" >&2; exit 2; }
if [ ! -x "$BIN" ]; then
  cargo build --release --bin rtpanchor
fi

WORK=$(mktemp -d /tmp/rtpanchor-cps.XXXXXX)
AUTH_ARGS=()
if [ -n "${AUTH:-}" ]; then
  { echo caller-pw | "$BIN" passwd alice $IP; echo callee-pw | "$BIN" passwd uas $IP; } >"$WORK/users.toml"
  AUTH_ARGS=(--sip-users "$WORK/users.toml" --sip-max-rate 0 --sip-max-auth-failures 0)
fi
PIDS=()
cleanup() {
  [ -n "${KEEP:-}" ] && sleep "$KEEP"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "logs in $WORK" >&2
}
trap cleanup EXIT

"$BIN" --interface $IP --listen-ng $IP:$NG --listen-sip $IP:$SIP \
  --port-min $MEDIA_MIN --port-max $MEDIA_MAX --num-threads "$THREADS" --log-level warn \
  "${AUTH_ARGS[@]}" >"$WORK/relay.log" 2>&1 &
RELAY=$!
PIDS+=("$RELAY")
for _ in $(seq 50); do
  grep -q ":$(printf '%04X' $SIP) " /proc/net/udp 2>/dev/null && break
  sleep 0.1
done

# The callee: a registration (third-party, or its own with a password), then the UAS.
if [ -n "${AUTH:-}" ]; then
  (cd "$WORK" && timeout 15 sipp -sf "$OLDPWD/tools/sipp/auth_register.xml" $IP:$SIP -i $IP -p $REG \
    -cp $REG_CP -m 1 -nostdin -recv_timeout 5000 -au uas -ap callee-pw -trace_logs \
    -key aor_user uas -key aor_host $IP -key from_user uas -key contact_port $UAS -key expires 3600 \
    >"$WORK/register.out" 2>&1) && grep -q "REGISTER-RESULT 200" "$WORK"/*_logs.log 2>/dev/null \
    || { echo "REGISTER failed" >&2; tail -20 "$WORK/register.out" >&2; exit 1; }
else (cd "$WORK" && timeout 15 sipp -sf "$OLDPWD/tools/sipp/proxy_register.xml" $IP:$SIP -i $IP -p $REG \
  -cp $REG_CP -m 1 -nostdin -recv_timeout 5000 \
  -key aor_user uas -key aor_host $IP -key contact_host $IP -key contact_port $UAS \
  -key via_host $IP -key via_port $REG -key expires 3600 >"$WORK/register.out" 2>&1) \
  || { echo "REGISTER failed" >&2; tail -20 "$WORK/register.out" >&2; exit 1; }
fi

(cd "$WORK" && exec sipp -sf "$OLDPWD/tools/sipp/uas_rr_sdp.xml" -i $IP -mi $IP -p $UAS -buff_size $SIPP_BUF \
  -mp 20500 -key rtp_port 20504 -cp $UAS_CP -nostdin -bind_local \
  >"$WORK/uas.out" 2>&1) &
UAS_PID=$!
PIDS+=("$UAS_PID")
sleep 1

# socket_drops PORT: datagrams dropped at full receive queues of the UDP sockets bound to PORT.
socket_drops() {
  awk -v p=":$(printf '%04X' "$1")" '$2 ~ p"$" {n += $NF} END {print n+0}' /proc/net/udp
}

# run_step RATE SECS -> 0 when every call succeeded
run_step() {
  local rate=$1 secs=$2 calls=$(( $1 * $2 )) csv="$WORK/step_$1_$2.csv"
  set +e
  local scenario=proxy_uac_cps.xml uac_auth=()
  if [ -n "${AUTH:-}" ]; then
    scenario=auth_uac.xml
    uac_auth=(-au alice -ap caller-pw -key from_user alice -key domain $IP)
  fi
  local udp_drops_before
  udp_drops_before=$(awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp)
  local relay_drops_before uas_drops_before
  relay_drops_before=$(socket_drops $SIP)
  uas_drops_before=$(socket_drops $UAS)
  local TIMEFORMAT='%U %S'
  { time (cd "$WORK" && timeout $(( secs + 60 )) sipp -sf "$OLDPWD/tools/sipp/$scenario" $IP:$SIP "${uac_auth[@]}" -buff_size $SIPP_BUF \
    -s uas -i $IP -mi $IP -p $UAC -mp $UAC_MP -cp $UAC_CP -r "$rate" -m "$calls" -l $(( rate * 4 )) \
    -d 0 -recv_timeout 5000 -nostdin -trace_stat -stf "$csv" -fd 5 -trace_err \
    >"$WORK/uac_$1_$2.out" 2>&1) ; } 2>"$WORK/uac_$1_$2.time"
  local rc=$?
  # The generator's own figures: the UAC's CPU seconds for this step, the UAS's so far, and
  # datagrams the kernel dropped at full receive queues on the machine (any socket) meanwhile.
  local uac_cpu uas_cpu udp_drops
  uac_cpu=$(awk '{printf "%.1f", $1 + $2}' "$WORK/uac_$1_$2.time" 2>/dev/null || echo '?')
  uas_cpu=$(ps -o times= -p "$UAS_PID" 2>/dev/null | tr -d ' ' || echo '?')
  udp_drops=$(( $(awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp) - udp_drops_before ))
  local relay_drops=$(( $(socket_drops $SIP) - relay_drops_before ))
  local uas_drops=$(( $(socket_drops $UAS) - uas_drops_before ))
  set -e
  local ok failed
  ok=$(sipp_stat "$csv" "SuccessfulCall(C)" 0)
  failed=$(sipp_stat "$csv" "FailedCall(C)")
  local cpu
  cpu=$(ps -o times= -p "$RELAY" | tr -d ' ')
  # From SIPp's final screen: 503s received (first copies; a refused call is ACKed by
  # auth_uac.xml), and INVITE retransmissions sent.
  local refused retrans
  refused=$(awk '$1=="503" && $2 ~ /^</ {n+=$3} END{print n+0}' "$WORK/uac_$1_$2.out")
  retrans=$(awk '$1=="INVITE" && $2 ~ /^-/ {n+=$4} END{print n+0}' "$WORK/uac_$1_$2.out")
  echo "rate $rate/s for ${secs}s: rc=$rc successful=$ok failed=$failed refused-503=$refused invite-retrans=$retrans (relay CPU so far ${cpu}s; SIPp UAC ${uac_cpu}s, UAS so far ${uas_cpu}s; UDP receive-queue drops $udp_drops: relay $relay_drops, UAS $uas_drops, the rest (UAC) $(( udp_drops - relay_drops - uas_drops )))"
  [ "$rc" = 0 ] && [ "$failed" = 0 ] && [ "$ok" = "$calls" ]
}

best=0
for r in $RATES; do
  if run_step "$r" "$STEP_SECS"; then best=$r; else break; fi
done
[ "$best" -gt 0 ] || { echo "RESULT: no rate passed (lowest tried: ${RATES%% *}/s)"; exit 1; }

rate=$best
while [ "$rate" -gt 0 ]; do
  if run_step "$rate" "$HOLD_SECS"; then
    echo "RESULT: $rate calls/s held for ${HOLD_SECS}s with no failed call (relay --num-threads $THREADS, $(nproc) cores)"
    exit 0
  fi
  rate=$(( rate * 9 / 10 ))
done
echo "RESULT: no rate held for ${HOLD_SECS}s"
exit 1
