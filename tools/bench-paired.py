#!/usr/bin/env python3
"""bench-paired.py OUT: issue 19's measure from a bench-compare.sh results directory, paired
by round.

bench-compare.sh runs, in each repetition and at each call count, every relay and the direct
run (no relay) one after the other. The whole machine's CPU per packet moves by hundreds of
ns between rounds on a shared VM, far more than between two relays of one round, so what
relaying adds is taken round by round: a relay run's machine ns/packet (first ladder step)
minus the direct run's of the same round and call count. Printed per relay and call count:
the median of those differences with their range; the relay process's ns/packet; with
`--bpf-stats`, the in-kernel programs' own ns/packet. With two or more call counts, per
relay: the ratio of the medians (of an even count, the mean of the middle two) at the
largest and the smallest count, with a 90% bootstrap interval (rounds resampled, a fixed
seed, so a rerun prints the same), and, where both parts were read, how much the relay
process and the programs grew between the two, round by round: the part of the growth that
depends on the relay, each run read to a few ns. Where rtpengine ran: each relay's added
against rtpengine's at the same call count. Without direct runs only the parts.

Reads only the JSON files rtpbench wrote (NAME_CALLS_repN.json).
"""

import glob
import json
import os
import random
import re
import statistics
import sys

FILE = re.compile(r"^(?P<name>[a-z-]+)_(?P<calls>\d+)_rep(?P<rep>\d+)\.json$")
BOOTSTRAP_DRAWS = 4000


def first_step(path):
    """The first ladder step's figures of one run, or None if it has none."""
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except (OSError, ValueError):
        return None
    steps = run.get("steps") or []
    if not steps:
        return None
    step = steps[0]
    program = None
    after = (step.get("relay_kernel") or {}).get("kernel_program_ns")
    before = (run.get("warmup_relay_kernel") or {}).get("kernel_program_ns")
    received = step.get("received") or 0
    if after is not None and before is not None and after > before and received > 0:
        program = (after - before) / received
    return {
        "machine": step.get("machine_cpu_ns_per_pkt"),
        "relay": step.get("relay_cpu_ns_per_pkt"),
        "program": program,
    }


def load(out):
    """runs[(name, calls)][rep] = first-step figures."""
    runs = {}
    for path in glob.glob(os.path.join(out, "*.json")):
        m = FILE.match(os.path.basename(path))
        if not m:
            continue
        fig = first_step(path)
        if fig is None or fig["machine"] is None:
            continue
        key = (m["name"], int(m["calls"]))
        runs.setdefault(key, {})[int(m["rep"])] = fig
    return runs


def added(runs, name, calls):
    """Per round: the relay run's machine ns/packet minus the direct run's."""
    relay = runs.get((name, calls), {})
    direct = runs.get(("direct", calls), {})
    return {r: relay[r]["machine"] - direct[r]["machine"] for r in relay if r in direct}


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def bootstrap(small, large):
    """The 5th and 95th percentiles of median(large) / median(small), rounds resampled
    (`small` is the baseline: the smaller call count, or rtpengine)."""
    rng = random.Random(19)
    ratios = []
    for _ in range(BOOTSTRAP_DRAWS):
        s = statistics.median(rng.choices(small, k=len(small)))
        l = statistics.median(rng.choices(large, k=len(large)))
        if s > 0:
            ratios.append(l / s)
    if not ratios:
        return None
    ratios.sort()
    return ratios[int(0.05 * len(ratios))], ratios[int(0.95 * len(ratios)) - 1]


def ratio_text(base, other, digits):
    """median(other) / median(base) with its 90% bootstrap interval, or why there is none."""
    m_base = statistics.median(base.values())
    if m_base <= 0:
        return "- (the baseline's added is not above 0)"
    text = f"{statistics.median(other.values()) / m_base:.{digits}f}x"
    interval = bootstrap(list(base.values()), list(other.values()))
    if interval:
        text += f" (90% bootstrap {interval[0]:.{digits}f}-{interval[1]:.{digits}f}x)"
    return text


def fmt(x):
    return "-" if x is None else f"{x:,.0f}"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench-paired.py OUT (a bench-compare.sh results directory)")
    runs = load(sys.argv[1])
    if not runs:
        sys.exit("no runs with figures in " + sys.argv[1])
    relays = sorted({n for n, _ in runs if n != "direct"})
    counts = sorted({c for _, c in runs})
    if not any(name == "direct" for name, _ in runs):
        print("no direct runs (add direct to --only): no added figures, only the parts")
    else:
        print("added = machine ns/packet minus the same round's direct run (first ladder step)")
    print(f"{'relay':<18}{'calls':>7}{'rounds':>8}{'added, median':>15}  {'min-max':<15}"
          f"{'relay ns':>10}{'program ns':>12}")
    for name in relays:
        for calls in counts:
            a = added(runs, name, calls)
            own = runs.get((name, calls), {})
            if not own:
                continue
            spread = f"{min(a.values()):,.0f}-{max(a.values()):,.0f}" if a else "-"
            middle = statistics.median(a.values()) if a else None
            print(f"{name:<18}{calls:>7}{len(a) or len(own):>8}{fmt(middle):>15}  "
                  f"{spread:<15}{fmt(median_of(f['relay'] for f in own.values())):>10}"
                  f"{fmt(median_of(f['program'] for f in own.values())):>12}")
    # Against rtpengine at each call count, where it ran: the ratio of the paired medians.
    for calls in counts:
        base = added(runs, "rtpengine", calls)
        if not base or statistics.median(base.values()) <= 0:
            continue
        for name in relays:
            a = added(runs, name, calls)
            if name == "rtpengine" or not a:
                continue
            # Three decimals: the goals against rtpengine are 0.07x and 0.10x.
            print(f"{name}: added against rtpengine's at {calls} calls: {ratio_text(base, a, 3)}")
    if len(counts) < 2:
        return
    small, large = counts[0], counts[-1]
    for name in relays:
        a_small, a_large = added(runs, name, small), added(runs, name, large)
        m_small = None
        if a_small and a_large:
            m_small = statistics.median(a_small.values())
            print(f"{name}: added at {large} against {small} calls: "
                  f"{ratio_text(a_small, a_large, 2)}")
        # Growth of the parts read per run, paired by round.
        own_small = runs.get((name, small), {})
        own_large = runs.get((name, large), {})
        growth = []
        for r in sorted(set(own_small) & set(own_large)):
            s, l = own_small[r], own_large[r]
            if None in (s["relay"], l["relay"], s["program"], l["program"]):
                continue
            growth.append((l["relay"] - s["relay"], l["program"] - s["program"]))
        if growth:
            both = [g[0] + g[1] for g in growth]
            share = ""
            if m_small is not None and m_small > 0:
                share = f", {statistics.median(both) / m_small:.1%} of the added at {small}"
            print(f"{name}: relay process and programs, grown from {small} to {large} calls "
                  f"by round: relay "
                  f"{statistics.median(g[0] for g in growth):+,.0f}, programs "
                  f"{statistics.median(g[1] for g in growth):+,.0f}, both "
                  f"{statistics.median(both):+,.0f} ns/packet (rounds {min(both):+,.0f} to "
                  f"{max(both):+,.0f}, n={len(growth)}){share}")


if __name__ == "__main__":
    main()
