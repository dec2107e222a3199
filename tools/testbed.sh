#!/usr/bin/env bash
# A test bed of several boxes on one machine: N network namespaces joined by a bridge, one
# relay (rtpanchor or rtpengine) to be started in each. Needs root and iproute2.
#
#   tools/testbed.sh up N      # namespaces PREFIX-n1..nN, box i at 10.222.0.(10+i)/24
#   tools/testbed.sh down      # deletes every namespace, veth and the bridge of PREFIX
#   ip netns exec ra22-n1 target/debug/rtpanchor --interface 10.222.0.11 ...
#
# The host side of the bridge is 10.222.0.1 (the SIP front, the phones): the boxes reach it
# and each other directly, nothing is routed. PREFIX (default ra22) starts every name, so
# several beds can coexist; names stay within Linux's 15 characters. NET (default 10.222.0)
# is the /24 used.
set -euo pipefail

PREFIX=${PREFIX:-ra22}
NET=${NET:-10.222.0}
BR="$PREFIX-br"

down() {
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PREFIX-n[0-9]+$" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  for l in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^$PREFIX-h[0-9]+$" || true); do
    ip link del "$l" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
}

up() {
  local n=$1
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || { echo "N must be 1..200" >&2; exit 2; }
  down
  ip link add "$BR" type bridge
  ip addr add "$NET.1/24" dev "$BR"
  ip link set "$BR" up
  for i in $(seq 1 "$n"); do
    local ns="$PREFIX-n$i" host="$PREFIX-h$i" peer="$PREFIX-v$i"
    ip netns add "$ns"
    ip link add "$host" type veth peer name "$peer"
    ip link set "$peer" netns "$ns"
    ip link set "$host" master "$BR"
    ip link set "$host" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$NET.$((10 + i))/24" dev "$peer"
    ip -n "$ns" link set "$peer" up
  done
  # Every port up (no STP on the bridge: a port forwards as soon as it is up); bounded.
  for _ in $(seq 50); do
    local all=1
    for i in $(seq 1 "$n"); do
      [ "$(cat "/sys/class/net/$PREFIX-h$i/operstate" 2>/dev/null)" = up ] || all=0
    done
    [ "$all" = 1 ] && return 0
    sleep 0.1
  done
  echo "testbed: veth ports not up" >&2
  exit 1
}

case "${1:-}" in
  up) up "${2:?usage: testbed.sh up N}" ;;
  down) down ;;
  *) echo "usage: $0 up N | down" >&2; exit 2 ;;
esac
