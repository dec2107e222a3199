#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the real peers the end-to-end tests
# use (Debian packages: Kamailio with its rtpengine module, SIPp, rtpengine, redis-server,
# Prometheus, baresip; clang for the in-kernel fast path, bpftool to detach it in a test;
# iproute2 for the tests that build network namespaces) when they are missing and we are
# root, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
# rtpengine is the reference of tests/differential.rs and of the MOS scale in
# tests/kamailio_mos.rs (run in userspace, no kernel module).
command -v rtpengine >/dev/null 2>&1 || need+=(rtpengine-daemon)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# build.rs compiles the in-kernel fast path with clang (without it the relay builds anyway,
# and the fast path's tests check that it says why it is unavailable).
command -v clang >/dev/null 2>&1 || need+=(clang)
# A real Prometheus scrapes the relay in tests/ops_metrics.rs (promtool ships with it).
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# baresip: two clients (its presence module) watch each other in tests/sip_presence_e2e.rs;
# phones call over TLS (tests/sip_tls_e2e.rs; Debian's SIPp has no TLS) and with passwords
# (tests/sip_baresip_auth.rs).
command -v baresip >/dev/null 2>&1 || need+=(baresip)
# bpftool: tests/kernel_detach.rs detaches the relay's in-kernel program as an outsider would.
command -v bpftool >/dev/null 2>&1 || need+=(bpftool)
# Kamailio's presence modules: the reference presence server of tests/presence_kamailio.rs.
dpkg -s kamailio-presence-modules >/dev/null 2>&1 || need+=(kamailio-presence-modules)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${RTPANCHOR_APT_UPDATED:-}" ]; then apt-get update -qq; fi
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "note: ${need[*]} missing and cannot be installed here; the tests that need them will say so" >&2
  fi
fi

# RTPANCHOR_TEST_LOCK=FILE: build first, then run the tests holding that lock (flock), for
# machines where several checkouts run the suite and would collide on its loopback ports.
if [ -n "${RTPANCHOR_TEST_LOCK:-}" ]; then
  cargo test --workspace --all-targets --no-run "$@"
  exec flock "$RTPANCHOR_TEST_LOCK" cargo test --workspace --all-targets "$@"
fi
cargo test --workspace --all-targets "$@"
