#!/usr/bin/env bash
# xdp-bench.sh: the in-kernel path's two programs on a real device, same traffic: the relay
# in one network namespace, rtpbench in another, joined by a veth pair; both of a call's
# endpoints sit behind the one veth, so every relayed packet comes in on the relay's veth and
# leaves by it again (XDP_TX for the XDP program, bpf_redirect_neigh for TC).
# Rounds alternate over the modes (default `xdp tc user direct`): `--kernel-mode xdp`,
# `--kernel-mode tc`, `auto` (the default), `--no-kernel-forwarding` (user space), and the
# same traffic sent
# directly between the generator's sockets (`rtpbench --direct`, no relay). Reported per run:
# whole-machine busy CPU per delivered packet (rtpbench's machine_cpu_ns_per_pkt), the
# generator's own CPU per packet (the in-kernel path runs in the softirq of the sender's
# veth transmit, charged to the generator: BENCHMARKS.md, "How the cost is measured"), the
# ksoftirqd threads' (softirq work deferred there is charged to them, not to the generator),
# relay process CPU per packet, loss; and the medians, minus the direct run's. On a shared
# machine the whole-machine figure carries the other sessions' work; "attributable" (generator
# + ksoftirqd + relay process) does not.
#
# Usage: tools/xdp-bench.sh [--reps N] [--calls N] [--rate PPS] [--duration S] [--out DIR]
#        [--webrtc-ext] [--peer-napi xdp|gro|none] [--modes "xdp tc user direct"]
#        [--relay-bin PATH (several, comma-separated: alternated as "xdp@1", "tc@1", ...)]
# How the generator's veth gets NAPI (a veth takes XDP_TX and redirected frames only then):
# `--peer-napi xdp` (default) attaches an XDP program there that passes every packet; `gro`
# turns GRO on (the veth then reports that it takes frames, yet dropped every XDP_TX frame on
# Linux 6.18 here: no use for XDP); `none` leaves it as created (XDP cannot send: `xdp` passes
# all to TC, `auto` takes XDP off). A mode may name its own: "tc:none" runs TC with none.
# The peer's XDP program makes every packet coming back to the generator an XDP buffer first,
# copied when it was an skb (as TC's are): it charges TC a copy that "tc:none" does not pay.
# Forwarding is on for the relay's veth in every mode (XDP's FIB lookup needs it).
# Names: NS_PREFIX (default ra31x): namespaces PREFIX-br/PREFIX-bp, veths PREFIXbr0/PREFIXbp0,
# 10.31.0.1 (relay) and 10.31.0.2 (generator); ports 18000-18999 inside them. Needs root,
# jq. Everything started here is stopped by pid, and the namespaces deleted, on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN_DIR:-$ROOT/target/release}
REPS=3
CALLS=100
RATE=20000
DUR=5
OUT=""
EXT=()
PEER_NAPI=xdp
MODES="xdp tc user direct"
RELAY_BINS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS=$2; shift ;;
        --calls) CALLS=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --out) OUT=$2; shift ;;
        --webrtc-ext) EXT=(--webrtc-ext) ;;
        --peer-napi) PEER_NAPI=$2; shift ;;
        --modes) MODES=$2; shift ;;
        --relay-bin) RELAY_BINS=$2; shift ;;
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
P=${NS_PREFIX:-ra31x}
NSR=$P-br
NSP=$P-bp
VR=${P}br0
VP=${P}bp0
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

ethtool_set() { # $1 device in the generator's namespace, $2 ethtool command, $3 value
    ip netns exec "$NSP" python3 -c "import ctypes, fcntl, socket, struct, sys
data = ctypes.create_string_buffer(struct.pack('II', int(sys.argv[2], 16), int(sys.argv[3])))
ifr = struct.pack('16sP16x', sys.argv[1].encode(), ctypes.addressof(data))
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)" "$1" "$2" "$3"
}

ip netns add "$NSR"
ip netns add "$NSP"
ip link add $VR type veth peer name $VP
ip link set $VR netns "$NSR"
ip link set $VP netns "$NSP"
ip -n "$NSR" addr add $RELAY_IP/24 dev $VR
ip -n "$NSP" addr add $PEER_IP/24 dev $VP
for ns in "$NSR" "$NSP"; do ip -n "$ns" link set lo up; done
ip -n "$NSR" link set $VR up
ip -n "$NSP" link set $VP up
ip netns exec "$NSR" sysctl -qw net.ipv4.conf.$VR.forwarding=1
PEER_NOW=none
peer_napi() { # $1: how the generator's veth gets NAPI for the next run (xdp, gro, none)
    [ "$1" = "$PEER_NOW" ] && return 0
    case "$PEER_NOW" in
        xdp) ip -n "$NSP" link set dev $VP xdpdrv off ;;
        gro) ethtool_set $VP 0x2c 0 ;;
    esac
    case "$1" in
        xdp) ip -n "$NSP" link set dev $VP xdpdrv obj "$OBJ" sec xdp ;;
        gro) ethtool_set $VP 0x2c 1 ;; # ETHTOOL_SGRO
        none) ;;
        *) echo "peer NAPI: xdp, gro or none, not $1" >&2; exit 2 ;;
    esac
    PEER_NOW=$1
}
peer_napi "$PEER_NAPI"
# The generator's veth computes UDP checksums in software, as packets from a wire carry them
# (with the offload a local socket's packet carries only the pseudo-header's sum, which the
# XDP program leaves to TC): `ethtool -K $VP tx off` (ETHTOOL_STXCSUM), as an ioctl.
ethtool_set $VP 0x17 0

bench() { # $1 label, then rtpbench arguments
    local label=$1; shift
    ip netns exec "$NSP" "$BIN/rtpbench" --local-ip $PEER_IP --local-port-base 18000 \
        --calls "$CALLS" --rate "$RATE" --duration "$DUR" --pin-cpus 0 "${EXT[@]}" \
        --softirq-pid "$SOFTIRQD" --label "$label" --json "$OUT/$label.json" "$@" \
        >"$OUT/$label.txt" 2>&1 || echo "$label: rtpbench exit $? (see $OUT/$label.txt)" >&2
}
SOFTIRQD=$(pgrep -x 'ksoftirqd/[0-9]*' | paste -sd, -)
IFS=, read -r -a BINS <<<"${RELAY_BINS:-$BIN/rtpanchor}"

for r in $(seq 1 "$REPS"); do
    for run in $MODES; do
        mode=${run%%:*}
        peer=$PEER_NAPI
        [ "$run" != "$mode" ] && peer=${run#*:}
        peer_napi "$peer"
        bins=("${BINS[@]}")
        [ "$mode" = direct ] && bins=(direct)
        for b in "${!bins[@]}"; do
        label=${run/:/.}-$r
        [ ${#bins[@]} -gt 1 ] && label=${run/:/.}@$((b + 1))-$r
        if [ "$mode" = direct ]; then
            bench "$label" --direct
        else
            case $mode in
                user) kmode=(--no-kernel-forwarding) ;;
                auto) kmode=() ;;
                *) kmode=(--kernel-mode "$mode") ;;
            esac
            ip netns exec "$NSR" taskset -c 1 "${bins[$b]}" --interface $RELAY_IP \
                --listen-ng "$NG" --ng-allow $PEER_IP/32 --no-sip --num-threads 1 \
                --port-min 18400 --port-max 18899 "${kmode[@]}" --log-level info \
                >"$OUT/relay-$label.log" 2>&1 &
            RELAY_PID=$!
            bench "$label" --ng "$NG" --relay-pid "$RELAY_PID" --warmup 3
            # Which program relayed the packets (the relay's own counts).
            ip netns exec "$NSP" "$BIN/rtpanchor" ctl --ng "$NG" --json stats \
                >"$OUT/stats-$label.json" 2>&1 || true
            kill "$RELAY_PID"; wait "$RELAY_PID" 2>/dev/null || true
            RELAY_PID=""
            grep 'in-kernel path\|XDP sends\|redirected frames' "$OUT/relay-$label.log" \
                | sed 's/^.*INFO //' >"$OUT/mode-$label.txt" || true
            grep -o '"kernel_\(tc\|xdp\)_forwarded":[0-9]*' "$OUT/stats-$label.json" | tr '\n' ' ' || true
        fi
        # Where packets went missing, if they did: both veths' counters and the generator's UDP.
        { ip -s -n "$NSR" link show $VR; ip -s -n "$NSP" link show $VP
          ip netns exec "$NSP" grep Udp: /proc/net/snmp; } >"$OUT/counters-$label.txt" 2>&1 || true
        jq -c --arg l "$label" '{label: $l, machine_ns: .steps[-1].machine_cpu_ns_per_pkt,
            relay_ns: .steps[-1].relay_cpu_ns_per_pkt, gen_ns: .steps[-1].gen_cpu_ns_per_pkt,
            softirqd_ns: .steps[-1].softirqd_cpu_ns_per_pkt, loss: .steps[-1].loss_pct,
            pps: .steps[-1].achieved_pps}' "$OUT/$label.json" | tee -a "$OUT/runs.jsonl"
        done
    done
done

jq -s -r 'def med: sort | .[(length / 2 | floor)];
    group_by(.label | sub("-[0-9]+$"; "")) | map({mode: (.[0].label | sub("-[0-9]+$"; "")),
      machine: (map(.machine_ns) | med), gen: (map(.gen_ns) | med),
      softirqd: (map(.softirqd_ns // 0) | med), relay: (map(.relay_ns // 0) | med),
      attributable: (map(.gen_ns + (.softirqd_ns // 0) + (.relay_ns // 0)) | med)}) as $m
    | ($m | map(select(.mode == "direct"))[0] // {machine: 0, gen: 0, attributable: 0}) as $d
    | $m[] | "\(.mode): machine \(.machine | floor) ns/pkt (minus direct \((.machine - $d.machine) | floor)), generator \(.gen | floor) (minus direct \((.gen - $d.gen) | floor)), ksoftirqd \(.softirqd | floor), relay process \(.relay | floor), attributable \(.attributable | floor) (minus direct \((.attributable - $d.attributable) | floor))"' \
    "$OUT/runs.jsonl"
echo "results in $OUT"
