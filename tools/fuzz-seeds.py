#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*).

Sources: the RFC 4475 torture messages (tests/data/rfc4475), the golden SDPs
(tests/golden/sdp/*.in.sdp), ng requests as Kamailio's rtpengine module sends them, RTP and
RTCP packets, and fixed pseudo-random byte strings for the structured ng_sequence target.
Deterministic: running it again writes the same files.
"""
import os
import random
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in v.items()) + b"e"
    raise TypeError(v)


def sip():
    src = os.path.join(ROOT, "tests", "data", "rfc4475")
    msgs = {}
    for f in sorted(os.listdir(src)):
        if f.endswith(".dat"):
            with open(os.path.join(src, f), "rb") as fh:
                msgs[f[:-4]] = fh.read()
    for name, data in msgs.items():
        put("sip_message", name, data)
        # One message from alice over UDP, and over TCP a second later.
        put("sip_proxy", name, b"\x00" + data + b"\n%%\n" + bytes([4 | (10 << 3)]) + data)
    sep = b"\n%%\n"
    reg = (b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKr1\r\n"
           b"Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1\r\nTo: <sip:bob@example.com>\r\n"
           b"Call-ID: reg1\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@127.0.0.1:5062>\r\nExpires: 60\r\n"
           b"Content-Length: 0\r\n\r\n")
    body = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 0\r\n")
    inv = (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKi1;rport\r\n"
           b"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n"
           b"Call-ID: call1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5061>\r\n"
           b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    cancel = (b"CANCEL sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKi1;rport\r\n"
              b"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n"
              b"Call-ID: call1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n")
    opts = (b"OPTIONS sip:127.0.0.1:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKo1\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a2\r\nTo: <sip:bob@example.com>\r\n"
            b"Call-ID: opt1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    put("sip_proxy", "register-invite-cancel", b"\x01" + reg + sep + b"\x08" + inv + sep + b"\x10" + cancel)
    put("sip_proxy", "register-invite-timeout", b"\x01" + reg + sep + b"\x00" + inv + sep + bytes([0xf8]) + b"\r\n\r\n")
    put("sip_proxy", "options-forward", b"\x00" + opts + sep + b"\x18" + opts)
    put("sip_proxy", "via-port-zero",
        b"\x00OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a:0\r\n\r\n" + sep
        + b"\x00OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;rport=0\r\n\r\n")
    put("sip_message", "via-port-zero", b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a:0\r\n\r\n")


def sdp():
    src = os.path.join(ROOT, "tests", "golden", "sdp")
    for f in sorted(os.listdir(src)):
        if f.endswith(".in.sdp"):
            with open(os.path.join(src, f), "rb") as fh:
                put("sdp", f[:-7], fh.read())
    put("sdp", "duplicate-session-c",
        b"v=0\r\nc=IN IP4 192.0.2.1\r\nc=IN IP4 10.9.9.9\r\nm=audio 5004 RTP/AVP 0\r\n")
    put("sdp", "lf-only-unterminated", b"v=0\nc=IN IP6 ::1\nm=audio 0 RTP/AVP 0\nm=video 6000/2 RTP/AVP 96")


def ng():
    sdp_ = ("v=0\r\no=- 1545997027 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
    reqs = {
        "ping": {"command": "ping"},
        "offer": {"sdp": sdp_, "flags": ["trust-address"], "replace": ["origin", "session-connection"],
                  "ICE": "remove", "rtcp-mux": ["demux"], "call-id": "c1", "received-from": ["IP4", "10.0.0.1"],
                  "from-tag": "a1", "via-branch": "z9hG4bK1", "command": "offer"},
        "answer": {"sdp": sdp_, "call-id": "c1", "from-tag": "a1", "to-tag": "b1", "command": "answer"},
        "delete": {"call-id": "c1", "from-tag": "a1", "delete-delay": 0, "command": "delete"},
        "query": {"call-id": "c1", "command": "query"},
        "list": {"command": "list", "limit": 10},
        "statistics": {"command": "statistics"},
        "terminate-all": {"command": "terminate", "flags": ["all"]},
        "set": {"command": "set", "max-sessions": 10},
        "offer-direction": {"command": "offer", "call-id": "c2", "from-tag": "x", "sdp": sdp_,
                            "direction": ["pub", "priv"], "transport-protocol": "RTP/SAVP"},
    }
    for name, r in reqs.items():
        put("ng_request", name, b"cookie_1 " + bencode(r))
    put("ng_request", "json-offer", b"c2 {\"command\":\"offer\",\"call-id\":\"j1\",\"from-tag\":\"a\",\"sdp\":"
        + b"\"v=0\\r\\nc=IN IP4 10.0.0.1\\r\\nm=audio 4000 RTP/AVP 0\\r\\n\",\"flags\":[\"symmetric\"],\"n\":1.5}")
    put("ng_request", "bencode-bare", bencode({"a": [1, -2, "x"], "b": {"c": ""}}))
    put("ng_request", "truncated", b"c3 d7:command5:offer7:call-id")


def rtp():
    def pkt(seq, ts, ssrc=0x1234, pt=0, payload=b"\xff" * 160, marker=False, csrc=(), ext=None, pad=0):
        b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext else 0) | len(csrc)
        out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xffff, ts & 0xffffffff, ssrc)
        for c in csrc:
            out += struct.pack("!I", c)
        if ext:
            prof, data = ext
            out += struct.pack("!HH", prof, len(data) // 4) + data
        out += payload
        if pad:
            out += b"\x00" * (pad - 1) + bytes([pad])
        return out

    def framed(pkts):
        return b"".join(bytes([len(p) & 0xff, d]) + p for p, d in pkts)

    small = b"\xff" * 20
    flow = [(pkt(100 + i, 160 * i, payload=small), 20) for i in range(10)]
    put("rtp", "flow", framed(flow))
    lossy = [(pkt(s, 160 * s, payload=small), 20) for s in [1, 2, 4, 3, 3, 7, 65535 & 9, 8]]
    put("rtp", "loss-reorder-dup", framed(lossy))
    put("rtp", "ssrc-change", framed([(pkt(5, 0, payload=small), 20), (pkt(9000, 5, ssrc=9, pt=8, payload=small), 20)]))
    put("rtp", "ext-csrc-pad", framed([(pkt(1, 1, csrc=(1, 2), ext=(0xBEDE, b"\x10\xaa\x00\x00"), pad=4,
                                         payload=b"ab"), 0)]))
    put("rtp", "wrap", framed([(pkt(65534 + i, 160 * i, pt=96, payload=small), 10) for i in range(4)]))
    sr = struct.pack("!BBH", 0x81, 200, 12) + struct.pack("!IQIII", 0x1234, 0xe0000000_80000000, 1600, 10, 1600)
    sr += struct.pack("!IIIIII", 0x5678, 0x01000002, 100, 30, 0xe0008000, 65536)
    sdes = struct.pack("!BBH", 0x81, 202, 2) + struct.pack("!I", 0x1234) + b"\x01\x02ab\x00\x00"[:4]
    rr = struct.pack("!BBH", 0x81, 201, 7) + struct.pack("!I", 0x9) + struct.pack("!IIIIII", 1, 2, 3, 4, 5, 6)
    put("rtp", "rtcp-sr-sdes", framed([(sr + sdes, 5)]))
    put("rtp", "rtcp-rr", framed([(rr, 5), (sr, 5)]))


def ng_sequence():
    rng = random.Random(21)
    for i in range(16):
        put("ng_sequence", "random-%02d" % i, bytes(rng.randrange(256) for _ in range(rng.randrange(24, 160))))
    # offer, answer, query, time, delete: a call set up and torn down.
    put("ng_sequence", "offer-answer-delete",
        bytes([0, 0, 0, 0xff, 0, 1, 7, 1, 3, 0xff, 3, 0, 1, 0, 1, 7, 1, 6, 0, 9, 10, 5, 0, 0]))


if __name__ == "__main__":
    sip()
    sdp()
    ng()
    rtp()
    ng_sequence()
    sys.exit(0)
