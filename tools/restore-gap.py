#!/usr/bin/env python3
"""The media gap on restore after kill -9: rtpanchor --redis against rtpengine --redis.

Each round starts a fresh redis-server, starts the relay with it, sets up CALLS calls over ng
(both sides on 127.0.0.1: phone A on one socket, phone B on another, every call), sends RTP
both ways every 20 ms, kills the relay with SIGKILL after 3 s, starts it again at once with
the same flags, and keeps sending 5 s more. A stream's gap is the longest pause between two
packets arriving on it around the kill; a stream that never resumes counts as the whole
remaining time. Rounds alternate between the relays (same machine, same minutes).

    tools/restore-gap.py --rtpanchor target/release/rtpanchor [--rounds 5] [--calls 10]

Ports: Redis 15450, ng 15451, phones 15452/15453, relay media 15460-15499.
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

REDIS, NG, PHONE_A, PHONE_B = 15450, 15451, 15452, 15453
MEDIA_MIN, MEDIA_MAX = 15460, 15499
EVERY = 0.020


def benc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(benc(v) for v in x) + b"e"
    if isinstance(x, dict):
        return b"d" + b"".join(benc(k) + benc(v) for k, v in sorted(x.items())) + b"e"
    raise TypeError(x)


def bdec(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c in (b"l", b"d"):
        i += 1
        out = [] if c == b"l" else {}
        while b[i:i + 1] != b"e":
            v, i = bdec(b, i)
            if c == b"l":
                out.append(v)
            else:
                w, i = bdec(b, i)
                out[v.decode()] = w
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


class Ng:
    def __init__(self):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.settimeout(1.0)
        self.n = 0

    def __call__(self, req):
        self.n += 1
        cookie = b"c%d_%d" % (os.getpid(), self.n)
        self.s.sendto(cookie + b" " + benc(req), ("127.0.0.1", NG))
        while True:
            data = self.s.recv(65536)
            if data.startswith(cookie + b" "):
                return bdec(data, len(cookie) + 1)[0]

    def ready(self, limit=15.0):
        end = time.time() + limit
        while time.time() < end:
            try:
                if self({"command": "ping"}).get("result") == b"pong":
                    return True
            except (socket.timeout, ConnectionRefusedError):
                time.sleep(0.05)
        return False


def sdp(port, sess):
    return ("v=0\r\no=- %d %d IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n") % (sess, sess, port)


def relay_port(s):
    for line in s.decode().splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise ValueError(s)


def command(kind, binary, db):
    if kind == "rtpanchor":
        return [binary, "--interface", "127.0.0.1", "--listen-ng", "127.0.0.1:%d" % NG,
                "--port-min", str(MEDIA_MIN), "--port-max", str(MEDIA_MAX), "--no-sip",
                "--num-threads", "1", "--log-level", "warn",
                "--redis", "redis://127.0.0.1:%d/%d" % (REDIS, db)]
    return ["rtpengine", "--table=-1", "--foreground", "--log-stderr", "--log-level=4",
            "--interface=127.0.0.1", "--listen-ng=127.0.0.1:%d" % NG,
            "--port-min=%d" % MEDIA_MIN, "--port-max=%d" % MEDIA_MAX,
            "--redis=127.0.0.1:%d/%d" % (REDIS, db)]


def rtp(seq, ssrc):
    return bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") \
        + ssrc.to_bytes(4, "big") + b"\xff" * 160


def one_round(kind, binary, calls, logdir, n):
    log = open(os.path.join(logdir, "%s-%d.log" % (kind, n)), "w")
    redis = subprocess.Popen(["redis-server", "--port", str(REDIS), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay = None
    try:
        time.sleep(0.3)
        cmd = command(kind, binary, 1)
        relay = subprocess.Popen(cmd, stdout=log, stderr=log)
        ng = Ng()
        if not ng.ready():
            raise RuntimeError("%s did not answer ping" % kind)
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", PHONE_A))
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b.bind(("127.0.0.1", PHONE_B))
        dests = []
        for i in range(calls):
            cid = "gap-%d-%d" % (n, i)
            o = ng({"command": "offer", "call-id": cid, "from-tag": "ta", "sdp": sdp(PHONE_A, 1)})
            r = ng({"command": "answer", "call-id": cid, "from-tag": "ta", "to-tag": "tb",
                    "sdp": sdp(PHONE_B, 2)})
            dests.append(("127.0.0.1", relay_port(o["sdp"])))
            dests.append(("127.0.0.1", relay_port(r["sdp"])))
        arrivals = [[] for _ in dests]
        stop = threading.Event()

        def receive(s):
            s.settimeout(0.05)
            while not stop.is_set():
                try:
                    d = s.recv(2048)
                except socket.timeout:
                    continue
                k = int.from_bytes(d[8:12], "big") - 1
                if 0 <= k < len(arrivals):
                    arrivals[k].append(time.monotonic())

        def send():
            seq = 0
            nxt = time.monotonic()
            while not stop.is_set():
                for k, d in enumerate(dests):
                    (a if k % 2 == 0 else b).sendto(rtp(seq, k + 1), d)
                seq = (seq + 1) & 0xffff
                nxt += EVERY
                time.sleep(max(0.0, nxt - time.monotonic()))

        threads = [threading.Thread(target=receive, args=(s,)) for s in (a, b)]
        threads.append(threading.Thread(target=send))
        for t in threads:
            t.start()
        time.sleep(3.0)
        t_kill = time.monotonic()
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        relay = subprocess.Popen(cmd, stdout=log, stderr=log)
        time.sleep(5.0)
        t_end = time.monotonic()
        stop.set()
        for t in threads:
            t.join()
        gaps = []
        for arr in arrivals:
            window = [t for t in arr if t >= t_kill - 1.0]
            if not window or window[-1] < t_kill:
                gaps.append(t_end - t_kill)
                continue
            points = [t_kill - 1.0] + window + [t_end]
            gaps.append(max(y - x for x, y in zip(points, points[1:])))
        a.close()
        b.close()
        return gaps
    finally:
        if relay is not None:
            relay.kill()
            relay.wait()
        redis.kill()
        redis.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rtpanchor", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--logs", default="/tmp/restore-gap")
    args = p.parse_args()
    os.makedirs(args.logs, exist_ok=True)
    results = {"rtpanchor": [], "rtpengine": []}
    for n in range(args.rounds):
        for kind in ("rtpanchor", "rtpengine"):
            gaps = one_round(kind, args.rtpanchor, args.calls, args.logs, n)
            med = statistics.median(gaps)
            results[kind].append(med)
            print("round %d %-9s median gap %7.1f ms, max %7.1f ms, streams %d" %
                  (n, kind, med * 1000, max(gaps) * 1000, len(gaps)), flush=True)
    for kind, meds in results.items():
        print("%-9s median of round medians: %.1f ms (rounds: %s)" %
              (kind, statistics.median(meds) * 1000, ", ".join("%.0f" % (m * 1000) for m in meds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
