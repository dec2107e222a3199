#!/usr/bin/env bash
# bench-compare.sh: run the same rtpbench scenarios against every relay available here
# (the rtpanchor release binary relaying in user space (--no-kernel-forwarding) as
# "rtpanchor", with its fallback engine as "rtpanchor-mmsg", and as it runs by default, the
# in-kernel path relaying latched RTP, as "rtpanchor-kernel"; rtpengine-daemon in userspace
# mode; the reflector yardstick),
# one relay at a time on loopback, alternating relays between runs, and print ratios:
# highest rate held with <0.1% loss, relay CPU ns per forwarded packet, p99 latency.
#
# Usage: tools/bench-compare.sh [--full] [--reps N] [--out DIR] [--step-duration S]
#                               [--ladder R1,R2,...] [--budget SECS] [--only NAME,...]
#                               [--calls N1,N2,...] [--large-warmup S]
#   --full        also 10000 calls (needs ~40000 relay ports). rtpanchor --io-engine mmsg
#                 holds 4 descriptors per call and is skipped, said so, at a size that does
#                 not fit under the open-files limit; rtpanchor's io_uring engine keeps its
#                 sockets in fixed-file tables (the limit per ring; a worker thread drives
#                 as many rings as its calls need) instead;
#                 rtpengine and the reflector are sharded (below).
#   --calls N,... the call counts instead (above 1,000: the --full port plan; where 4 ports
#                 per call exceed the relay port range, above ~10,000 calls, each rtpengine
#                 or reflector shard binds an address of its own, 127.0.0.1+shard, and
#                 rtpanchor as many --interface addresses as its calls need)
#   --reps N      repetitions per scenario (default 1); medians are reported (of an even
#                 count, the upper middle value: with 2 reps, the higher one)
#   --budget S    stop starting new runs after S seconds (default 1500)
#   --large-warmup S  warm-up of each relay run above 5,000 calls (default 3 s: long enough
#                 for every flow to latch and go to the kernel). rtpanchor's first two sweep
#                 rounds after the media starts (10 s each above 12,500 calls) make each
#                 stream's quality record and take its first sample: one-time work that a
#                 3 s warm-up leaves in the first step. 25 measures the relay once every call
#                 has been through both. Runs without a relay keep 3 s.
#   --bpf-stats   sets kernel.bpf_stats_enabled=1 for the runs (back to what it was at exit),
#                 so rtpanchor-kernel runs report the in-kernel programs' own time per
#                 relayed packet in the step (ng statistics kernel_program_ns, in the run
#                 table below). The kernel then times every BPF program run on the machine
#                 (two clock reads a run), which adds to every relay's and the direct runs'
#                 machine CPU alike: for the decomposition, not for the machine comparisons.
#   rtpengine or the reflector too big for one process's open-files limit (4 and 2
#   descriptors per call) runs as several processes on the same core, the calls dealt round
#   robin over them and their CPU times added (reported under the relay's name, with one pid
#   and ng address per shard in the JSON). Each shard holds fewer calls than the whole, so
#   this flatters the sharded relay, if anything.
# Env: RELAY_CPU (default 1) pins the relay, GEN_CPUS (default 0) pins the generator;
#      RELAY_THREADS worker threads of rtpanchor, all on RELAY_CPU (default 1), each driving
#      the fewest io_uring rings whose fixed-file tables hold its calls' sockets (--uring-rings:
#      2 at 10,000 calls under a limit of 20,000; RELAY_RINGS overrides);
#      RTPENGINE_THREADS (default 1) rtpengine's --num-threads, per process. Each
#      relay gets one thread per core it is given: a second thread on the same core cost
#      rtpengine 7-26% and rtpanchor 20-39% more CPU per packet here (rtpengine's own default
#      is one thread per online CPU, 2 on these machines, whatever its affinity);
#      BIN_DIR overrides where rtpbench/reflector are (default target/release);
#      BURST (default 1) packets each flow sends back to back (rtpbench --burst: 1 is voice,
#      10-60 is like video frames);
#      WAKE_US (default 0) the sender's least sleep (rtpbench --wake-us: 1000 sends what came
#      due each millisecond together, for steadier machine CPU figures).
#      RELAY_LOG_LEVEL rtpanchor's --log-level (default: info, but warn for the session
#      manager's lines per call and per latch: ~20 lines a run at 25,000 calls); each run's
#      relay log is kept as OUT/NAME_CALLS_repN.log;
#      WEBRTC_EXT (unset by default): set to 1 to send WebRTC-like audio (rtpbench
#      --webrtc-ext: an RFC 8285 header extension with audio level and abs-send-time).
# Namespaces: a network namespace shares the host's UDP socket hash table unless
#      net.ipv4.udp_child_hash_entries was set when it was created. At 25,000 calls the relay's
#      ~100,000 sockets lengthen that table's chains (16,384 slots on the 24 GB machines), and
#      every packet delivered to the generator's sockets walks them (udp4_lib_lookup2: ~130 ns
#      a packet more than at 100 calls, BENCHMARKS-history.md §28a), which a relay with remote
#      endpoints never pays on the kernel path. For a namespace with a table of its own:
#      `sysctl -w net.ipv4.udp_child_hash_entries=65536; ip netns add NAME;
#      sysctl -w net.ipv4.udp_child_hash_entries=0`.
# Needs: jq; python3 for the paired summary at the end (tools/bench-paired.py, skipped
#      without it). Every process started here is stopped by pid on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
RTPBENCH=$BIN_DIR/rtpbench
REFLECTOR=$BIN_DIR/reflector
RTPANCHOR=${RTPANCHOR:-$ROOT/target/release/rtpanchor}
RELAY_CPU=${RELAY_CPU:-1}
RELAY_THREADS=${RELAY_THREADS:-1}
RELAY_RINGS=${RELAY_RINGS:-}
RTPENGINE_THREADS=${RTPENGINE_THREADS:-1}
RELAY_LOG_LEVEL=${RELAY_LOG_LEVEL:-info,rtpanchor::session::manager=warn}
GEN_CPUS=${GEN_CPUS:-0}

FULL=0
REPS=1
OUT=""
STEP_DUR=2.5
LADDER="20000,40000,60000,80000,100000,120000,150000,180000,210000,240000"
BUDGET=1500
LARGE_WARMUP=3
ONLY=""
CALLS_OVERRIDE=""
BPF_STATS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --full) FULL=1 ;;
        --reps) REPS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --step-duration) STEP_DUR=$2; shift ;;
        --ladder) LADDER=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        --large-warmup) LARGE_WARMUP=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --calls) CALLS_OVERRIDE=$2; shift ;;
        --bpf-stats) BPF_STATS=1 ;;
        -h|--help) sed -n '2,/^# Needs/p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-$(mktemp -d /tmp/bench-compare.XXXXXX)}
mkdir -p "$OUT"

for tool in "$RTPBENCH" "$REFLECTOR"; do
    [ -x "$tool" ] || { echo "missing $tool: cargo build --release -p rtpbench" >&2; exit 2; }
done
command -v jq >/dev/null || { echo "jq is required" >&2; exit 2; }

CALLS="1 100 1000"
[ "$FULL" = 1 ] && CALLS="$CALLS 10000"
[ -n "$CALLS_OVERRIDE" ] && CALLS=${CALLS_OVERRIDE//,/ }

# Port plan. Generator: 2 ports per call from GEN_BASE, below the ephemeral range.
# Relays run one at a time; each still gets its own range (4 ports per call for
# rtpengine/rtpanchor, 2 for the reflector). --full needs 40000 relay ports: then all relays
# share 22000-65000 (they never run concurrently).
# More than 1,000 calls (--full, or --calls with such a count) take the wide plan.
WIDE_PLAN=$FULL
for c in $CALLS; do [ "$c" -gt 1000 ] && WIDE_PLAN=1; done
if [ "$WIDE_PLAN" = 1 ]; then
    GEN_BASE=5000   # above the ng ports (2223-2225), below the relays (22000+)
    RANGE_rtpengine="22000 65000"; RANGE_rtpanchor="22000 65000"; RANGE_reflector="22000 65000"
    RANGE_rtpanchor_mmsg="22000 65000"; RANGE_rtpanchor_kernel="22000 65000"
else
    GEN_BASE=20000
    RANGE_rtpengine="40000 44999"; RANGE_rtpanchor="45000 49999"; RANGE_reflector="50000 54999"
    RANGE_rtpanchor_mmsg="45000 49999"; RANGE_rtpanchor_kernel="45000 49999"
fi
# Raise the fd limit for big call counts (generator: 2 per call, relay: up to 4 per call).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
NOFILE=$(ulimit -n)

# anchor_rings CALLS: io_uring rings per rtpanchor worker (RELAY_RINGS, or the fewest whose
# fixed-file tables, one open-files limit each, hold its share of 4 sockets per call; 1-8).
anchor_rings() {
    if [ -n "$RELAY_RINGS" ]; then
        echo "$RELAY_RINGS"
    else
        local cap=$(( RELAY_THREADS * NOFILE ))
        local r=$(( (4 * $1 + cap - 1) / cap ))
        echo $(( r < 1 ? 1 : (r > 8 ? 8 : r) ))
    fi
}

# fits NAME CALLS: whether the relay's sockets fit under the open-files limit (500 spare).
fits() {
    local per=4
    case "$1" in
        rtpanchor|rtpanchor-kernel) per=$(( 4 * $2 > RELAY_THREADS * $(anchor_rings "$2") * NOFILE ? 4 : 0 )) ;;
        rtpengine|reflector|direct) per=0 ;; # sharded below when they do not fit
    esac
    [ $(( per * $2 + 500 )) -le "$NOFILE" ]
}

# shards NAME CALLS: how many processes run the relay (rtpengine and the reflector: as many
# as their 4 and 2 descriptors per call need under the open-files limit, 500 spare each;
# rtpanchor: 1).
shards() {
    local per
    case "$1" in
        rtpengine) per=4 ;;
        reflector) per=2 ;;
        *) echo 1; return ;;
    esac
    local per_proc=$(( (NOFILE - 500) / per ))
    echo $(( ($2 + per_proc - 1) / per_proc ))
}

warmup() { if [ "$1" -gt 5000 ]; then echo 3; else echo 1; fi; }
relay_warmup() { if [ "$1" -gt 5000 ]; then echo "$LARGE_WARMUP"; else warmup "$1"; fi; }

RELAYS=()
if [ -z "$ONLY" ] || [[ ",$ONLY," == *,rtpanchor,* ]]; then
    [ -x "$RTPANCHOR" ] && RELAYS+=(rtpanchor) || echo "note: $RTPANCHOR not built, skipped" >&2
fi
# The same relay with its fallback engine forced (recvmmsg/sendmmsg instead of io_uring).
if [ -z "$ONLY" ] || [[ ",$ONLY," == *,rtpanchor-mmsg,* ]]; then
    [ -x "$RTPANCHOR" ] && RELAYS+=(rtpanchor-mmsg)
fi
# The same relay as it runs by default, with the in-kernel fast path (a TC program relays
# latched RTP; needs root and Linux 6.6+). Its work runs in the sender's softirq context,
# so its cost is read from the generator's and the whole machine's CPU time (see the
# summary below).
if [ -z "$ONLY" ] || [[ ",$ONLY," == *,rtpanchor-kernel,* ]]; then
    [ -x "$RTPANCHOR" ] && RELAYS+=(rtpanchor-kernel)
fi
if [ -z "$ONLY" ] || [[ ",$ONLY," == *,rtpengine,* ]]; then
    command -v rtpengine >/dev/null && RELAYS+=(rtpengine) || echo "note: rtpengine not installed, skipped" >&2
fi
if [ -z "$ONLY" ] || [[ ",$ONLY," == *,reflector,* ]]; then
    RELAYS+=(reflector)
fi
# No relay: the generator's sockets send to each other. The whole machine's CPU per packet
# of a relay minus this one's, same calls and rate, is what relaying adds (issue 19's measure).
if [ -z "$ONLY" ] || [[ ",$ONLY," == *,direct,* ]]; then
    RELAYS+=(direct)
fi

RELAY_PID=""
RELAY_PIDS=()
RELAY_NOTE=""
cleanup() {
    local p
    for p in "${RELAY_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    RELAY_PIDS=()
}
BPF_STATS_WAS=""
if [ "$BPF_STATS" = 1 ]; then
    BPF_STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
    sysctl -qw kernel.bpf_stats_enabled=1 || { echo "--bpf-stats: cannot set kernel.bpf_stats_enabled" >&2; exit 2; }
fi
trap 'cleanup; if [ -n "$BPF_STATS_WAS" ]; then sysctl -qw kernel.bpf_stats_enabled="$BPF_STATS_WAS"; fi' EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

start_relay() { # name calls [shards] -> RELAY_PIDS, NG (comma-separated with several shards)
    local name=$1 calls=$2 n=${3:-1} lo hi range s addrs=()
    range="RANGE_${name//-/_}"; read -r lo hi <<<"${!range}"
    RELAY_PIDS=()
    RELAY_NOTE=""
    case "$name" in
        rtpanchor|rtpanchor-kernel) RELAY_NOTE=", $RELAY_THREADS worker(s) x $(anchor_rings "$calls") ring(s)" ;;
        rtpanchor-mmsg) RELAY_NOTE=", $RELAY_THREADS worker(s)" ;;
        rtpengine) RELAY_NOTE=", $RTPENGINE_THREADS thread(s) per process" ;;
    esac
    # Shard s: ng port (the relay's own) + 10 s, an even-sized slice of the port range (the
    # last one runs to its end). Where the calls need more relay ports than the range holds
    # on one address (4 per call; above ~10,000 calls), each shard gets an address of its
    # own (127.0.0.1+s) and the whole range, and one rtpanchor process as many addresses
    # (--interface, repeated) as its calls need.
    local span=$(( ((hi - lo + 1) / n) & ~1 )) wide=0 iface=(--interface 127.0.0.1) a
    if [ $(( 4 * calls )) -gt $(( hi - lo + 1 )) ]; then
        wide=1 span=0
        iface=()
        for a in $(seq 1 $(( (4 * calls + hi - lo) / (hi - lo + 1) ))); do
            iface+=(--interface "127.0.0.$a")
        done
        if [ "$n" -gt 1 ]; then
            RELAY_NOTE="$RELAY_NOTE, an address each"
        else
            RELAY_NOTE="$RELAY_NOTE, $(( ${#iface[@]} / 2 )) addresses"
        fi
    fi
    for s in $(seq 0 $((n - 1))); do
        local slo=$((lo + s * span)) shi=$((lo + (s + 1) * span - 1)) log="$OUT/$RUN.log" ng
        local ip=127.0.0.1
        [ "$s" -eq $((n - 1)) ] && shi=$hi
        if [ "$wide" = 1 ]; then slo=$lo shi=$hi ip=127.0.0.$((1 + s)); fi
        [ "$n" -gt 1 ] && log="$OUT/$RUN.$s.log"
        case "$name" in
            rtpanchor|rtpanchor-mmsg|rtpanchor-kernel)
                ng=127.0.0.1:$((2223 + 10 * s))
                local engine=(--io-engine uring --uring-rings "$(anchor_rings "$calls")")
                [ "$name" = rtpanchor-mmsg ] && engine=(--io-engine mmsg)
                # The in-kernel path is on by default; "rtpanchor" and "rtpanchor-mmsg" are
                # the user-space relay.
                [ "$name" = rtpanchor-kernel ] || engine+=(--no-kernel-forwarding)
                taskset -c "$RELAY_CPU" "$RTPANCHOR" --listen-ng "$ng" "${iface[@]}" \
                    --port-min "$slo" --port-max "$shi" --num-threads "$RELAY_THREADS" \
                    "${engine[@]}" --no-sip --log-level "$RELAY_LOG_LEVEL" >"$log" 2>&1 &
                ;;
            rtpengine)
                ng=127.0.0.1:$((2224 + 10 * s))
                taskset -c "$RELAY_CPU" rtpengine --config-file=none --foreground --log-stderr \
                    --num-threads="$RTPENGINE_THREADS" \
                    --table=-1 --interface="$ip" --listen-ng="$ng" --port-min="$slo" \
                    --port-max="$shi" --delete-delay=0 --log-level=4 >"$log" 2>&1 &
                ;;
            reflector)
                ng=127.0.0.1:$((2225 + 10 * s))
                taskset -c "$RELAY_CPU" "$REFLECTOR" --listen-ng "$ng" --interface "$ip" \
                    --port-min "$slo" --port-max "$shi" >"$log" 2>&1 &
                ;;
        esac
        RELAY_PIDS+=($!)
        addrs+=("$ng")
    done
    NG=$(IFS=,; echo "${addrs[*]}")
    RELAY_PID=$(IFS=,; echo "${RELAY_PIDS[*]}")
}

stop_relay() {
    local p
    for p in "${RELAY_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${RELAY_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    RELAY_PIDS=()
    RELAY_PID=""
}

echo "results in $OUT; relays: ${RELAYS[*]}; calls: $CALLS; reps: $REPS" >&2
n_relays=${#RELAYS[@]}
for rep in $(seq "$REPS"); do
    for calls in $CALLS; do
        # Alternate the order between repetitions so no relay always runs first.
        for k in $(seq 0 $((n_relays - 1))); do
            if [ "$SECONDS" -ge "$BUDGET" ]; then
                echo "time budget of ${BUDGET}s used up: skipping the remaining runs" >&2
                break 3
            fi
            name=${RELAYS[$(((k + rep - 1) % n_relays))]}
            if ! fits "$name" "$calls"; then
                echo "== $name, $calls calls: skipped, its sockets exceed the open-files limit $NOFILE" >&2
                continue
            fi
            if [ "$name" = direct ]; then
                echo "== direct (no relay), $calls calls, rep $rep" >&2
                timeout 600 "$RTPBENCH" --direct --calls "$calls" --find-max --ladder "$LADDER" \
                    --step-duration "$STEP_DUR" --pin-cpus "$GEN_CPUS" \
                    --local-port-base "$GEN_BASE" --label direct --burst "${BURST:-1}" --wake-us "${WAKE_US:-0}" \
                    --warmup "$(warmup "$calls")" \
                    ${WEBRTC_EXT:+--webrtc-ext} \
                    --json "$OUT/direct_${calls}_rep${rep}.json" \
                    >"$OUT/direct_${calls}_rep${rep}.txt" 2>"$OUT/direct_${calls}_rep${rep}.err" \
                    || echo "   rtpbench exited $? (see $OUT/direct_${calls}_rep${rep}.err)" >&2
                tail -n 1 "$OUT/direct_${calls}_rep${rep}.txt" >&2 || true
                sleep 1
                continue
            fi
            nshards=$(shards "$name" "$calls")
            RUN="${name}_${calls}_rep${rep}"
            # rtpanchor's in-kernel figures (directions in the kernel, hand-overs, take-backs,
            # user-space packets by reason) after the warm-up and each step, in the JSON.
            STATS=()
            case "$name" in rtpanchor*) STATS=(--relay-stats) ;; esac
            start_relay "$name" "$calls" "$nshards"
            if [ "$nshards" -gt 1 ]; then
                echo "== $name, $calls calls, rep $rep: $nshards processes (pids $RELAY_PID$RELAY_NOTE), $(( (calls + nshards - 1) / nshards )) calls or fewer each: one cannot hold all its descriptors under the limit $NOFILE" >&2
            else
                echo "== $name, $calls calls, rep $rep (pid $RELAY_PID$RELAY_NOTE)" >&2
            fi
            # 10000 calls take a while to set up; everything else is bounded by the ladder.
            # Above 5,000 calls a flow sends a few packets a second: warm up 3 s, not 1, so
            # every flow has latched (and, by default, gone to the kernel) before measuring.
            timeout 600 "$RTPBENCH" --ng "$NG" --calls "$calls" --find-max --ladder "$LADDER" \
                --step-duration "$STEP_DUR" --relay-pid "$RELAY_PID" --pin-cpus "$GEN_CPUS" \
                --local-port-base "$GEN_BASE" --wait-ready 10 --label "$name" --burst "${BURST:-1}" --wake-us "${WAKE_US:-0}" \
                --warmup "$(relay_warmup "$calls")" "${STATS[@]}" \
                ${WEBRTC_EXT:+--webrtc-ext} \
                --json "$OUT/${name}_${calls}_rep${rep}.json" \
                --plot "$OUT/${name}_${calls}_rep${rep}.svg" \
                >"$OUT/${name}_${calls}_rep${rep}.txt" 2>"$OUT/${name}_${calls}_rep${rep}.err" \
                || echo "   rtpbench exited $? (see $OUT/${name}_${calls}_rep${rep}.err)" >&2
            tail -n 1 "$OUT/${name}_${calls}_rep${rep}.txt" >&2 || true
            stop_relay
            sleep 1
        done
    done
done

shopt -s nullglob
files=("$OUT"/*_rep*.json)
[ ${#files[@]} -gt 0 ] || { echo "no results" >&2; exit 1; }

# Per relay and call count (medians over repetitions):
#   max_pps     highest ladder rate held cleanly
#   ns_light    relay process CPU ns/packet at the first ladder step (light load)
#   ns_max      relay process CPU ns/packet at max_pps
#   p99_light   p99 one-way latency (µs) at the first ladder step
#   mach_light  the whole machine's busy CPU ns/packet at the first ladder step
#   gen_light   the generator process's CPU ns/packet at the first ladder step
#   cost_light  what the relay costs per packet: its process time, except for
#               rtpanchor-kernel, whose work runs in the sender's softirq context and is
#               charged to the generator: there it is its process time plus what the
#               generator's time per packet grew by against user-space rtpanchor in the same
#               sitting (gen_light - gen_light of rtpanchor). Ratios use it.
#   added_light the whole machine's ns/packet at the first step minus the direct run's (no
#               relay) at the same calls: what relaying adds, attribution-free; its ratio
#               to rtpengine's is issue 19's measure.
jq -rs '
  def median: sort | if length == 0 then null else .[(length / 2 | floor)] end;
  def r(x): if x == null then "-" else (x * 100 | round / 100 | tostring) end;
  def ratio(a; b): if a == null or b == null or b == 0 then "-" else r(a / b) end;
  map({label: .label, calls: .calls,
       max_pps: .max_pass_pps,
       ns_light: (.steps[0].relay_cpu_ns_per_pkt // null),
       mach_light: (.steps[0].machine_cpu_ns_per_pkt // null),
       gen_light: (.steps[0].gen_cpu_ns_per_pkt // null),
       p99_light: (.steps[0].latency.p99_us // null),
       ns_max: ((.max_pass_pps) as $m | [.steps[] | select(.target_pps == $m) | .relay_cpu_ns_per_pkt] | first // null)})
  | group_by([.calls, .label])
  | map({label: .[0].label, calls: .[0].calls,
         max_pps: (map(.max_pps // 0) | median),
         ns_light: (map(.ns_light | select(. != null)) | median),
         mach_light: (map(.mach_light | select(. != null)) | median),
         gen_light: (map(.gen_light | select(. != null)) | median),
         ns_max: (map(.ns_max | select(. != null)) | median),
         p99_light: (map(.p99_light | select(. != null)) | median)})
  | group_by(.calls)
  | map(. as $g
        | ($g | map(select(.label == "rtpanchor")) | first) as $u
        | $g
        | map(. + {cost_light: (if .label == "rtpanchor-kernel"
                                then (if $u == null or $u.gen_light == null or .gen_light == null
                                         or .ns_light == null then null
                                      else .ns_light + ([.gen_light - $u.gen_light, 0] | max) end)
                                else .ns_light end)}))
  | map(. as $g
        | ($g | map(select(.label == "direct")) | first) as $d
        | $g
        | map(. + {added_light: (if $d == null or $d.mach_light == null or .mach_light == null
                                    or .label == "direct" then null
                                 else .mach_light - $d.mach_light end)}))
  | map(. as $g
        | ($g | map(select(.label == "rtpengine")) | first) as $e
        | ($g | map(select(.label == "reflector")) | first) as $f
        | $g[]
        | [(.calls | tostring), .label, r(.max_pps), r(.ns_light), r(.ns_max), r(.p99_light),
           r(.mach_light), r(.gen_light), r(.cost_light), r(.added_light), ratio(.added_light; $e.added_light),
           ratio(.max_pps; $e.max_pps), ratio(.cost_light; $e.cost_light), ratio(.p99_light; $e.p99_light),
           ratio(.max_pps; $f.max_pps), ratio(.cost_light; $f.cost_light), ratio(.p99_light; $f.p99_light)]
        | @tsv)
  | (["calls","relay","max_pps","ns/pkt@first","ns/pkt@max","p99us@first","mach_ns@first","gen_ns@first","cost@first","added@first","added/rtpengine",
      "pps/rtpengine","cost/rtpengine","p99/rtpengine","pps/reflector","cost/reflector","p99/reflector"]
     | @tsv), .[]
' "${files[@]}" | column -t -s $'\t'
echo "(first ladder step = ${LADDER%%,*} pps; details, plots and logs in $OUT)"

# The in-kernel path run by run: RTP directions in the kernel after the warm-up and after the
# first step, of the 2 per call (under 90% after the step: flagged, its figures are mostly user
# space's); the relay process's ns per packet at the first step (above 5,000 on the kernel path:
# flagged, the relay is busy with something) and its busiest thread during that step (CPU ms,
# from /proc); the in-kernel programs' own ns per received packet in that step (with
# --bpf-stats; "-" without); take-backs and the user-space packets by reason.
kfiles=("$OUT"/rtpanchor-kernel_*_rep*.json)
if [ ${#kfiles[@]} -gt 0 ]; then
    echo "rtpanchor-kernel runs: in-kernel directions after warm-up / step 1, relay ns/packet, busiest thread in step 1, programs' ns/packet, take-backs, user-space packets by reason:"
    { printf 'run\twarm-up\tstep 1\trelay ns\tbusiest thread (ms)\tprogram ns\ttake-backs\t\tuser-space packets by reason\n'
      jq -r '
      def g(k): (. // {})[k] // 0;
      def reasons: (. // {}) | to_entries | map(select((.key | startswith("user_")) and .value > 0)
                   | "\(.key | ltrimstr("user_"))=\(.value)") | join(" ");
      (.warmup_relay_threads_ms // {}) as $w
      | (.steps[0].relay_threads_ms // {}) as $s
      | ($s | to_entries | map({k: .key, v: (.value - ($w[.key] // 0))}) | max_by(.v)) as $top
      | (.steps[0].relay_cpu_ns_per_pkt // 0) as $ns
      | [(input_filename | sub(".*/"; "") | sub("\\.json$"; "")),
       (.warmup_relay_kernel | g("kernel_streams") | tostring),
       (.steps[0].relay_kernel | g("kernel_streams") | tostring),
       ($ns | round | tostring),
       (if $top == null then "-" else "\($top.k) \($top.v)" end),
       (((.steps[0].relay_kernel | g("kernel_program_ns")) - (.warmup_relay_kernel | g("kernel_program_ns"))) as $p
        | if $p > 0 and (.steps[0].received // 0) > 0 then ($p / .steps[0].received | round | tostring) else "-" end),
       (.steps[0].relay_kernel | g("kernel_takebacks") | tostring),
       ([(if .warmup_relay_kernel == null then "no figures"
          elif (.steps[0].relay_kernel | g("kernel_streams")) < 0.9 * 2 * .calls
          then "MOSTLY USER SPACE" else empty end),
         (if $ns > 5000 then "RELAY BUSY" else empty end)] | if length == 0 then "ok" else join(", ") end),
       (.steps[0].relay_kernel | reasons)] | @tsv' "${kfiles[@]}"; } | column -t -s $'\t'
fi

# Issue 19's measure paired by round (each relay run against the direct run of its round),
# and, with several call counts, how it and the relay's own parts grew between them.
if command -v python3 >/dev/null; then
    echo
    python3 "$ROOT/tools/bench-paired.py" "$OUT" || true
fi
