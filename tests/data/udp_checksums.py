# UDP checksums on loopback for tests/kernel_checksums.rs (python3, root).
#
# capture PORT_MIN PORT_MAX: reads every IPv4 UDP frame on lo from a source port in
# PORT_MIN..=PORT_MAX (the relay's) to a port outside it, until stdin closes (60 s at most):
# prints "ready" once it listens, then at the end one line per flow: "flow SPORT DPORT partial_ok N partial_bad N full_ok N
# full_bad N zero N ip_bad N". A frame whose checksum the stack left to the device
# (TP_STATUS_CSUMNOTREADY: CHECKSUM_PARTIAL) must carry the pseudo-header's sum in its UDP
# checksum field; any other must carry a whole checksum (or 0: none); the IP header's
# checksum must always hold.
#
# send SRC_IP SRC_PORT DST_IP DST_PORT SSRC FIRST COUNT: sends COUNT RTP packets (PCMU, seq
# FIRST.., 160 payload bytes) from SRC_IP:SRC_PORT through a raw socket (IP_HDRINCL), so they
# enter lo with a whole UDP checksum already computed (no CHECKSUM_PARTIAL); every fourth one
# carries none (0).
import select
import socket
import struct
import sys
import time

TP_STATUS_CSUMNOTREADY = 1 << 3
SOL_PACKET = 263
PACKET_AUXDATA = 8


def fold(s):
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words(b):
    if len(b) % 2:
        b += b"\0"
    return sum(struct.unpack("!%dH" % (len(b) // 2), b))


def pseudo(src, dst, udp_len):
    return words(src + dst) + socket.IPPROTO_UDP + udp_len


def same(a, b):
    # One's complement: 0 and 0xffff are both zero.
    return a == b or {a, b} == {0, 0xFFFF}


def capture(lo_port, hi_port):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind(("lo", 0))
    print("ready", flush=True)
    flows = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r, _, _ = select.select([s, sys.stdin], [], [], 0.5)
        if sys.stdin in r and not sys.stdin.buffer.read1(4096):
            break
        if s not in r:
            continue
        frame, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(32))
        status = 0
        for level, kind, data in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status = struct.unpack_from("I", data)[0]
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:34]
        if ip[0] != 0x45 or ip[9] != socket.IPPROTO_UDP:
            continue
        udp = frame[34:]
        sport, dport, ulen, check = struct.unpack_from("!HHHH", udp)
        if not (lo_port <= sport <= hi_port) or lo_port <= dport <= hi_port:
            continue
        f = flows.setdefault(
            (sport, dport),
            dict(partial_ok=0, partial_bad=0, full_ok=0, full_bad=0, zero=0, ip_bad=0),
        )
        if fold(words(ip)) != 0xFFFF:
            f["ip_bad"] += 1
        ps = pseudo(ip[12:16], ip[16:20], ulen)
        if status & TP_STATUS_CSUMNOTREADY:
            f["partial_ok" if same(check, fold(ps)) else "partial_bad"] += 1
        elif check == 0:
            f["zero"] += 1
        else:
            f["full_ok" if fold(ps + words(udp[:ulen])) == 0xFFFF else "full_bad"] += 1
    for (sport, dport), f in sorted(flows.items()):
        print("flow", sport, dport, " ".join("%s %d" % kv for kv in f.items()), flush=True)


def send(src_ip, src_port, dst_ip, dst_port, ssrc, first, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    for k in range(count):
        seq = (first + k) & 0xFFFF
        rtp = struct.pack("!BBHII", 0x80, 0, seq, (seq * 160) & 0xFFFFFFFF, ssrc) + bytes([seq & 0xFF]) * 160
        ulen = 8 + len(rtp)
        check = 0
        if k % 4 != 3:
            check = 0xFFFF - fold(pseudo(src, dst, ulen) + words(struct.pack("!HHHH", src_port, dst_port, ulen, 0) + rtp))
            check = check or 0xFFFF
        udp = struct.pack("!HHHH", src_port, dst_port, ulen, check) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, socket.IPPROTO_UDP, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", 0xFFFF - fold(words(ip))) + ip[12:]
        s.sendto(ip + udp, (dst_ip, 0))
        if k % 10 == 9:
            time.sleep(0.001)


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(int(sys.argv[2]), int(sys.argv[3]))
    else:
        a = sys.argv[2:]
        send(a[0], int(a[1]), a[2], int(a[3]), int(a[4]), int(a[5]), int(a[6]))
