#!/usr/bin/env bash
# xdp-bench.sh: the in-kernel path's two programs on a real device, same traffic: the relay
# in one network namespace, rtpbench in another, joined by a veth pair; both of a call's
# endpoints sit behind the one veth, so every relayed packet comes in on the relay's veth and
# leaves by it again (XDP_TX for the XDP program, bpf_redirect_neigh for TC).
# Rounds alternate: `--kernel-mode xdp`, `--kernel-mode tc`, and the same traffic sent
# directly between the generator's sockets (`rtpbench --direct`, no relay). Reported per run:
# whole-machine busy CPU per delivered packet (rtpbench's machine_cpu_ns_per_pkt), the
# generator's own CPU per packet (the in-kernel path runs in the softirq of the sender's
# veth transmit, charged to the generator: BENCHMARKS.md, "How the cost is measured"), relay
# process CPU per packet, loss; and the medians, minus the direct run's.
#
# Usage: tools/xdp-bench.sh [--reps N] [--calls N] [--rate PPS] [--duration S] [--out DIR]
#        [--webrtc-ext]
# Both modes run under the same conditions: forwarding on for the relay's veth (XDP's FIB
# lookup needs it; TC ignores it) and an XDP program on the generator's veth (a veth takes
# XDP_TX frames only when its peer runs XDP or GRO; the program passes every packet).
# Names: namespaces ra31x-br/ra31x-bp, veths ra31xbr0/ra31xbp0, 10.31.0.1 (relay) and
# 10.31.0.2 (generator); ports 18000-18999. Needs root, jq. Everything started here is
# stopped by pid, and the namespaces deleted, on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN_DIR:-$ROOT/target/release}
REPS=3
CALLS=100
RATE=20000
DUR=5
OUT=""
EXT=()
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS=$2; shift ;;
        --calls) CALLS=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --out) OUT=$2; shift ;;
        --webrtc-ext) EXT=(--webrtc-ext) ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$CALLS" -gt 100 ]; then
    echo "at most 100 calls: the relay's 400 media ports must fit 18400-18899" >&2
    exit 2
fi
OUT=${OUT:-$(mktemp -d /tmp/xdp-bench.XXXXXX)}
mkdir -p "$OUT"
NSR=ra31x-br
NSP=ra31x-bp
RELAY_IP=10.31.0.1
PEER_IP=10.31.0.2
NG=$RELAY_IP:18900
OBJ=$(ls -t "$ROOT"/target/release/build/rtpanchor-*/out/forward.bpf.o | head -1)
RELAY_PID=""

cleanup() {
    if [ -n "$RELAY_PID" ]; then kill "$RELAY_PID" 2>/dev/null || true; wait "$RELAY_PID" 2>/dev/null || true; fi
    ip netns del "$NSR" 2>/dev/null || true
    ip netns del "$NSP" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$NSR"
ip netns add "$NSP"
ip link add ra31xbr0 type veth peer name ra31xbp0
ip link set ra31xbr0 netns "$NSR"
ip link set ra31xbp0 netns "$NSP"
ip -n "$NSR" addr add $RELAY_IP/24 dev ra31xbr0
ip -n "$NSP" addr add $PEER_IP/24 dev ra31xbp0
for ns in "$NSR" "$NSP"; do ip -n "$ns" link set lo up; done
ip -n "$NSR" link set ra31xbr0 up
ip -n "$NSP" link set ra31xbp0 up
ip netns exec "$NSR" sysctl -qw net.ipv4.conf.ra31xbr0.forwarding=1
ip -n "$NSP" link set dev ra31xbp0 xdpdrv obj "$OBJ" sec xdp
# The generator's veth computes UDP checksums in software, as packets from a wire carry them
# (with the offload a local socket's packet carries only the pseudo-header's sum, which the
# XDP program leaves to TC): `ethtool -K ra31xbp0 tx off`, as an ioctl (no ethtool here).
ip netns exec "$NSP" python3 -c "import ctypes, fcntl, socket, struct
data = ctypes.create_string_buffer(struct.pack('II', 0x17, 0))
ifr = struct.pack('16sP16x', b'ra31xbp0', ctypes.addressof(data))
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)"

bench() { # $1 label, then rtpbench arguments
    local label=$1; shift
    ip netns exec "$NSP" "$BIN/rtpbench" --local-ip $PEER_IP --local-port-base 18000 \
        --calls "$CALLS" --rate "$RATE" --duration "$DUR" --pin-cpus 0 "${EXT[@]}" \
        --label "$label" --json "$OUT/$label.json" "$@" >"$OUT/$label.txt" 2>&1
}

for r in $(seq 1 "$REPS"); do
    for mode in xdp tc direct; do
        label=$mode-$r
        if [ $mode = direct ]; then
            bench "$label" --direct
        else
            ip netns exec "$NSR" taskset -c 1 "$BIN/rtpanchor" --interface $RELAY_IP \
                --listen-ng "$NG" --ng-allow $PEER_IP/32 --no-sip --num-threads 1 \
                --port-min 18400 --port-max 18899 --kernel-mode $mode --log-level info \
                >"$OUT/relay-$label.log" 2>&1 &
            RELAY_PID=$!
            bench "$label" --ng "$NG" --relay-pid "$RELAY_PID" --warmup 3
            # Which program relayed the packets (the relay's own counts).
            ip netns exec "$NSP" "$BIN/rtpanchor" ctl --ng "$NG" --json stats \
                >"$OUT/stats-$label.json" 2>&1 || true
            kill "$RELAY_PID"; wait "$RELAY_PID" 2>/dev/null || true
            RELAY_PID=""
            grep -o 'mode="[a-z]*"' "$OUT/relay-$label.log" | head -1 >"$OUT/mode-$label.txt" || true
            grep -o '"kernel_\(tc\|xdp\)_forwarded":[0-9]*' "$OUT/stats-$label.json" | tr '\n' ' ' || true
        fi
        jq -c --arg l "$label" '{label: $l, machine_ns: .steps[-1].machine_cpu_ns_per_pkt,
            relay_ns: .steps[-1].relay_cpu_ns_per_pkt, gen_ns: .steps[-1].gen_cpu_ns_per_pkt,
            loss: .steps[-1].loss_pct,
            pps: .steps[-1].achieved_pps}' "$OUT/$label.json" | tee -a "$OUT/runs.jsonl"
    done
done

jq -s -r 'def med: sort | .[(length / 2 | floor)];
    group_by(.label | sub("-[0-9]+$"; "")) | map({mode: (.[0].label | sub("-[0-9]+$"; "")),
      machine: (map(.machine_ns) | med), gen: (map(.gen_ns) | med),
      relay: (map(.relay_ns // 0) | med)}) as $m
    | ($m | map(select(.mode == "direct"))[0]) as $d
    | $m[] | "\(.mode): machine \(.machine | floor) ns/pkt (minus direct \((.machine - $d.machine) | floor)), generator \(.gen | floor) (minus direct \((.gen - $d.gen) | floor)), relay process \(.relay | floor)"' \
    "$OUT/runs.jsonl"
echo "results in $OUT"
