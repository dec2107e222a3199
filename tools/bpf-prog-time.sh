#!/usr/bin/env bash
# bpf-prog-time.sh BIN LABEL OUTDIR [CALLS]: the TC program's own time per relayed packet.
# Runs the relay BIN (in-kernel path on, 2 workers pinned to CPU1, media ports 45000-49999 on
# 127.0.0.1; above 1,000 calls, as tools/bench-compare.sh does, ports 22000-65000 on as many
# addresses 127.0.0.1, .2, ... as 4 ports per call need, the generator from port 5000 and a
# 3 s warm-up) and rtpbench (CALLS calls, default 100, 50,000 packets/s, pinned to CPU0) in the
# network namespace $NS (it must exist with lo up: every port there is the caller's), waits for
# steady traffic, and prints three 5-second windows of the program's bpf_stats (run_time_ns
# and run_cnt of this relay's `anchor_forward`, found through the relay's descriptors) and
# the packets it relayed (`anchor_paths`): ns per run and ns per relayed packet (on loopback
# the program runs twice per relayed packet: the relayed packet enters lo's ingress again).
# Needs root, bpftool, jq and `sysctl -w kernel.bpf_stats_enabled=1` (set it back to 0 after).
# Env: NS (default rtpanchor-bench), RTPBENCH (default target/release/rtpbench).
set -u
BIN=$1 LABEL=$2 OUT=$3 CALLS=${4:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NS=${NS:-rtpanchor-bench}
RB=${RTPBENCH:-$ROOT/target/release/rtpbench}
mkdir -p "$OUT"
ulimit -n 200000 2>/dev/null || true
NOFILE=$(ulimit -n)
# io_uring rings per worker as bench-compare.sh sizes them: fixed-file tables (one open-files
# limit each) for the 2 workers' share of 4 sockets per call.
RINGS=$(( (4 * CALLS + 2 * NOFILE - 1) / (2 * NOFILE) )); [ $RINGS -lt 1 ] && RINGS=1; [ $RINGS -gt 8 ] && RINGS=8
PLO=45000 PHI=49999 GEN=20000 WARM=1 IFACE=(--interface 127.0.0.1)
if [ "$CALLS" -gt 1000 ]; then
  PLO=22000 PHI=65000 GEN=5000 WARM=3 IFACE=()
  for a in $(seq 1 $(( (4 * CALLS + PHI - PLO) / (PHI - PLO + 1) ))); do IFACE+=(--interface "127.0.0.$a"); done
fi
ip netns exec "$NS" taskset -c 1 "$BIN" --listen-ng 127.0.0.1:2223 "${IFACE[@]}" \
   --port-min $PLO --port-max $PHI --num-threads 2 --io-engine uring --uring-rings $RINGS --no-sip \
   --log-level warn >"$OUT/$LABEL.relay.log" 2>&1 &
RP=$!
trap 'kill $RP 2>/dev/null' EXIT
sleep 0.5
ip netns exec "$NS" timeout 180 "$RB" --ng 127.0.0.1:2223 --calls "$CALLS" --find-max --ladder 50000 \
   --step-duration 25 --relay-pid "$RP" --pin-cpus 0 --local-port-base $GEN --wait-ready 10 \
   --label "$LABEL" --warmup $WARM --json "$OUT/$LABEL.json" >"$OUT/$LABEL.txt" 2>"$OUT/$LABEL.err" &
BP=$!
# The relay's program and counter map, by the ids its descriptors name.
ids() { # KIND NAME
  grep -h "^$1_id:" /proc/$RP/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -u | while read -r i; do
    bpftool "$1" show id "$i" -j 2>/dev/null | jq -r --arg n "$2" 'select(.name==$n) | .id'
  done | head -1
}
sample() { # -> "run_time_ns run_cnt relayed"
  local rel=0
  [ -n "$M" ] && rel=$(bpftool map lookup id "$M" key 0 0 0 0 -j 2>/dev/null | jq '[.formatted.values[].value] | add')
  bpftool prog show id "$ID" -j | jq -r --arg r "$rel" '"\(.run_time_ns // 0) \(.run_cnt // 0) \($r)"'
}
ID=; M=
for _ in $(seq 40); do ID=$(ids prog anchor_forward); [ -n "$ID" ] && break; sleep 0.5; done
M=$(ids map anchor_paths)
[ -n "$ID" ] || { echo "no anchor_forward program for pid $RP" >&2; exit 1; }
# Steady traffic: more than 80,000 runs a second, twice in a row.
prev=$(sample); ok=0
for _ in $(seq 120); do
  sleep 1; cur=$(sample)
  d=$(( $(echo "$cur" | cut -d' ' -f2) - $(echo "$prev" | cut -d' ' -f2) ))
  prev=$cur
  if [ "$d" -gt 80000 ]; then ok=$((ok + 1)); else ok=0; fi
  [ $ok -ge 2 ] && break
done
for w in 1 2 3; do
  a=$(sample); sleep 5; b=$(sample)
  read -r ta ca ra <<<"$a"; read -r tb cb rb <<<"$b"
  dt=$((tb - ta)); dc=$((cb - ca)); dr=$((rb - ra))
  echo "$LABEL win$w run_time_ns=$dt runs=$dc relayed=$dr ns/run=$((dc > 0 ? dt / dc : 0)) ns/relayed=$((dr > 0 ? dt / dr : 0))"
done
wait $BP
