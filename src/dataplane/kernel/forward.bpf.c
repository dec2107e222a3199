// rtpanchor's in-kernel fast path: one relay, two entry points. `anchor_forward` is a TC
// ingress program (every device, loopback included); `anchor_xdp` runs at the driver's XDP
// hook of real devices that have native XDP, before an skb exists. Both relay RTP of latched
// streams without waking the relay process, with the same map, parsing and tracking below;
// they differ only in how they rewrite and send the packet. What the XDP program passes on
// (XDP_PASS) reaches the TC program on the same device, which relays it or passes it up.
//
// The worker that owns a stream copies its RTP tracker into an entry of `anchor_dir` and keys
// it (`anchor_port`, or `anchor_fwd` beyond the address slots) by the relay socket a packet
// arrives on, once both ends are latched. From then on this program does what the worker
// would: checks the source, tracks sequence numbers, loss, duplicates, reordering
// and RFC 3550 jitter exactly as src/rtp/stats.rs does, rewrites the addresses and redirects
// the packet. Anything it cannot judge goes on unchanged (TC_ACT_UNSPEC: under TCX that is
// "next program", so other programs on the device, another relay's among them, still see
// it; TC_ACT_OK would end the chain) and so up to the worker's socket; when that is a packet
// the tracker or the latch must see (another source, SSRC or payload type, a big sequence
// jump) it also sets ANCHOR_HANDED_BACK and the reason's bit, so every later packet of the
// stream goes up as well and the worker takes the tracker back before it handles them.
// RTP with CSRCs, a header extension or padding is relayed here like any other.
//
// The XDP program decides where a packet leaves before it touches the tracker: a FIB lookup
// from the relay's outgoing address (which needs forwarding on for the device it names; the
// kernel refuses the lookup otherwise) with the neighbour's MAC, and a device in
// `anchor_egress`, the devices the relay found able to take redirected frames (ndo_xdp_xmit;
// a veth only when its peer runs XDP or GRO). Without either it passes the packet on
// untouched and the TC program relays it with bpf_redirect_neigh, which resolves neighbours.
//
// The value is updated without a lock: a direction's packets come from one endpoint, so
// two CPUs run this for the same entry at once only if that endpoint sends from two CPUs at
// once, and then a count may miss one packet (the packet itself is still relayed).
//
// Built by build.rs with clang (-target bpf); the field layout must match `FwdValue` in
// kernel/abi.rs.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>

// The UAPI headers' fallback is a plain `inline`; every helper here must be inlined (BPF calls
// take at most five arguments, and the verifier then sees one straight program).
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static long (*bpf_skb_load_bytes)(const struct __sk_buff *skb, __u32 offset, void *to, __u32 len) =
    (void *)BPF_FUNC_skb_load_bytes;
static long (*bpf_l4_csum_replace)(struct __sk_buff *skb, __u32 offset, __u64 from, __u64 to,
                                   __u64 flags) = (void *)BPF_FUNC_l4_csum_replace;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;
static __s64 (*bpf_csum_diff)(__be32 *from, __u32 from_size, __be32 *to, __u32 to_size,
                              __wsum seed) = (void *)BPF_FUNC_csum_diff;
static long (*bpf_redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
                                  __u64 flags) = (void *)BPF_FUNC_redirect_neigh;
static long (*bpf_xdp_load_bytes)(struct xdp_md *ctx, __u32 offset, void *buf, __u32 len) =
    (void *)BPF_FUNC_xdp_load_bytes;
static long (*bpf_fib_lookup)(void *ctx, struct bpf_fib_lookup *params, int plen, __u32 flags) =
    (void *)BPF_FUNC_fib_lookup;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;

#define ETH_OFF 0
#define IP_OFF 14
#define UDP_OFF (IP_OFF + 20)
#define RTP_OFF (UDP_OFF + 8)
#define IP_CSUM_OFF (IP_OFF + 10)
#define IP_SADDR_OFF (IP_OFF + 12)
#define IP_DADDR_OFF (IP_OFF + 16)
#define UDP_SPORT_OFF (UDP_OFF + 0)
#define UDP_DPORT_OFF (UDP_OFF + 2)
#define UDP_CSUM_OFF (UDP_OFF + 6)
// IPv6: a fixed 40-byte header, UDP right after it (no extension headers).
#define UDP6_OFF (IP_OFF + 40)
#define RTP6_OFF (UDP6_OFF + 8)
#define IP6_SADDR_OFF (IP_OFF + 8)
#define UDP6_SPORT_OFF (UDP6_OFF + 0)
#define UDP6_DPORT_OFF (UDP6_OFF + 2)
#define UDP6_CSUM_OFF (UDP6_OFF + 6)

#define ANCHOR_HANDED_BACK 1u
// With it, why (one bit each, as `BACK_*` in abi.rs): another source, SSRC, payload type,
// or a sequence jump beyond the reorder window.
#define ANCHOR_BACK_SOURCE (1u << 8)
#define ANCHOR_BACK_SSRC (1u << 9)
#define ANCHOR_BACK_PT (1u << 10)
#define ANCHOR_BACK_JUMP (1u << 11)

// How a rewritten packet leaves. LOCAL: relay and both endpoints on loopback; the packet
// goes out of `ifindex` (lo) again and keeps its local route. ROUTED: the relay on a real
// address; the packet leaves by `ifindex`, the device the kernel routes the destination
// through (the worker asked it), with the next hop and MACs the kernel finds for it.
#define MODE_LOCAL 0
#define MODE_ROUTED 1

// Which program relayed a packet: the slots of `anchor_paths`.
#define PATH_TC 0
#define PATH_XDP 1

#define AF_INET 2
#define AF_INET6 10

// As in src/rtp/seq.rs and src/rtp/stats.rs.
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define MAX_JITTER_STEP (1u << 27)
#define NANOS_PER_SEC 1000000000ull

// Addresses are 16 bytes in network order: IPv6 as is, IPv4 mapped (::ffff:a.b.c.d), so
// one map serves both families.
// Directions the maps hold (`DIRECTIONS` in kernel/abi.rs): 2^17 (65,536 calls' RTP both
// ways); the array is allocated whole, 168 bytes each (22 MiB).
#define ANCHOR_DIRECTIONS (1 << 17)

struct fwd_key {
    __u8 addr[16];  // relay socket's address
    __u16 port;     // relay socket's port, network order
    __u16 pad;
};

struct fwd_value {
    // Set by the worker.
    __u8 src_addr[16];   // the latched endpoint
    __u8 out_saddr[16];  // the relay socket packets leave from
    __u8 out_daddr[16];  // the other side's latched endpoint
    __u16 src_port;      // network order, as the three below
    __u16 out_sport;
    __u16 out_dport;
    __u8 payload_type;
    __u8 mode;      // MODE_LOCAL or MODE_ROUTED
    __u32 ifindex;  // the device the rewritten packet is sent out of
    __u32 clock_hz;
    __u64 origin_ns;  // CLOCK_MONOTONIC of the relay's time origin
    // Set by this program.
    __u32 flags;
    __u32 ssrc;  // host order
    // The tracker (RtpStreamTracker and ExtendedSeq), host order.
    __u64 window0;
    __u64 window1;
    __u32 cycles;
    __u16 max_seq;
    __u16 pad1;
    __u64 packets;
    __u64 bytes;
    __u64 received;
    __u64 last_packet_ns;
    __u32 duplicates;
    __u32 reordered;
    __u32 jitter_q4;
    __u32 max_jitter_q4;
    __u32 last_transit;
    __u32 have_transit;
    // Which worker and slot handed the direction over (for bpftool; the worker knows).
    __u32 owner;
    __u32 slot;
};

_Static_assert(sizeof(struct fwd_value) == 168, "FwdValue in kernel/abi.rs has 168 bytes");
_Static_assert(sizeof(struct fwd_key) == 20, "FwdKey in kernel/abi.rs has 20 bytes");

// The directions: the relay socket to the direction's entry in `anchor_dir`, in one of two
// maps. `anchor_port` is an array with a slot per relay address (the first ANCHOR_SLOTS of
// each family, in the loader's `anchor_addrs4`/`anchor_addrs6`) and port of the relay's
// range: slot * ports + (port - anchor_port_min) holds the entry number + 1 (0: none). One
// load where a hash lookup hashed 20 bytes and walked a bucket, two cache lines more.
// Mapped into the relay's memory (BPF_F_MMAPABLE): a worker keys and unkeys a direction with
// one atomic store. `anchor_fwd`, a hash, keys the sockets of any further address. An entry
// number belongs to one worker (each takes numbers from ranges of its own), which writes the
// entry before it keys it and reads the entry back only after it removed the key.
#define ANCHOR_SLOTS 8

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);  // set by the loader: slots * ports
    __uint(map_flags, BPF_F_MMAPABLE);
    __type(key, __u32);
    __type(value, __u32);
} anchor_port SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ANCHOR_DIRECTIONS);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct fwd_key);
    __type(value, __u32);
} anchor_fwd SEC(".maps");

// Each direction's addresses and tracker, which the program updates per packet. Mapped into
// the relay's memory (BPF_F_MMAPABLE): a worker reads its directions' figures with plain
// loads, no system call, so an idle direction costs it one load a sync.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, ANCHOR_DIRECTIONS);
    __uint(map_flags, BPF_F_MMAPABLE);
    __type(key, __u32);
    __type(value, struct fwd_value);
} anchor_dir SEC(".maps");

// The relay's media port range, set by the loader: no relay socket has a port outside it.
// On loopback every packet the program relayed enters lo's ingress again on its way to the
// endpoint (whose port is outside the range, as a rule): this sends it on before any lookup.
volatile const __u16 anchor_port_min = 0;
volatile const __u16 anchor_port_max = 65535;
// The relay addresses that have slots in `anchor_port`: IPv4 ones (network order) first,
// slots 0..anchor_n4, then IPv6 ones, slots anchor_n4..anchor_n4 + anchor_n6.
volatile const __u32 anchor_n4 = 0;
volatile const __u32 anchor_n6 = 0;
volatile const __u32 anchor_addrs4[ANCHOR_SLOTS] = {0};
volatile const __u32 anchor_addrs6[ANCHOR_SLOTS * 4] = {0};

// The direction whose relay socket has `port` (network order) and the address of slot
// `slot` (-1: none; then `key` names it), or NULL.
static __always_inline struct fwd_value *direction(int slot, __u16 port_be, const struct fwd_key *key) {
    __u16 port = __builtin_bswap16(port_be);
    if (port < anchor_port_min || port > anchor_port_max)
        return 0;
    __u32 at;
    if (slot >= 0) {
        __u32 ports = (__u32)anchor_port_max - anchor_port_min + 1;
        __u32 i = (__u32)slot * ports + (port - anchor_port_min);
        __u32 *e = bpf_map_lookup_elem(&anchor_port, &i);
        if (!e || *e == 0)
            return 0;
        at = *e - 1;
    } else {
        __u32 *e = bpf_map_lookup_elem(&anchor_fwd, key);
        if (!e)
            return 0;
        at = *e;
    }
    return bpf_map_lookup_elem(&anchor_dir, &at);
}

// The slot of IPv4 relay address `addr` (network order), or -1.
static __always_inline int slot4(__u32 addr) {
#pragma unroll
    for (int i = 0; i < ANCHOR_SLOTS; i++)
        if (i < anchor_n4 && anchor_addrs4[i] == addr)
            return i;
    return -1;
}

// The slot of IPv6 relay address `addr` (16 bytes), or -1.
static __always_inline int slot6(const __u32 *addr) {
#pragma unroll
    for (int i = 0; i < ANCHOR_SLOTS; i++)
        if (i < anchor_n6 && anchor_addrs6[4 * i] == addr[0] && anchor_addrs6[4 * i + 1] == addr[1] &&
            anchor_addrs6[4 * i + 2] == addr[2] && anchor_addrs6[4 * i + 3] == addr[3])
            return anchor_n4 + i;
    return -1;
}

// The devices the XDP program may send a packet out of (ifindex to itself), kept by the
// relay: those where its XDP program runs and the driver takes redirected frames.
struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, struct bpf_devmap_val);
} anchor_egress SEC(".maps");

// Packets relayed, per program (PATH_TC, PATH_XDP), per CPU.
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} anchor_paths SEC(".maps");

static __always_inline void count_path(__u32 path) {
    __u64 *n = bpf_map_lookup_elem(&anchor_paths, &path);
    if (n)
        *n += 1;
}

static __always_inline __u16 load_be16(const __u8 *p) { return ((__u16)p[0] << 8) | p[1]; }

static __always_inline __u32 load_be32(const __u8 *p) {
    return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

// Arrival time in timestamp units, modulo 2^32 (ns_to_units in stats.rs).
static __always_inline __u32 ns_to_units(__u64 ns, __u32 hz) {
    __u64 secs = ns / NANOS_PER_SEC;
    __u64 rem = ns % NANOS_PER_SEC;
    return (__u32)(secs * hz + rem * hz / NANOS_PER_SEC);
}

// Whether the RTP packet of `len` bytes (at `off`, first byte `b0`) has a CSRC list, header
// extension and padding that fit it (0) or not (-1). The CSRC count (0..15) and the
// extension's length word (RFC 3550 5.3.1; the RFC 8285 one-byte 0xBEDE and two-byte
// 0x100x profiles use the same word) are skipped by arithmetic, the padding count read
// from the last byte: no loop, so the verifier sees a fixed number of instructions.
// Bytes beyond the first 12 of the RTP header, from either program's context (`xdp` is a
// constant at each call site, so each program keeps only its own helper).
static __always_inline long load_bytes(void *ctx, int xdp, __u32 off, void *to, __u32 len) {
    if (xdp)
        return bpf_xdp_load_bytes(ctx, off, to, len);
    return bpf_skb_load_bytes(ctx, off, to, len);
}

static __always_inline int check_rtp_layout(void *ctx, int xdp, __u32 off, __u8 b0, __u32 len) {
    __u32 header = 12 + 4 * (__u32)(b0 & 0x0f);
    if (header > len)
        return -1;
    if (b0 & 0x10) {
        __u8 ext[4];
        if (header + 4 > len || load_bytes(ctx, xdp, off + header, ext, 4) < 0)
            return -1;
        header += 4 + 4 * (__u32)load_be16(ext + 2);
        if (header > len)
            return -1;
    }
    if (b0 & 0x20) {
        __u8 pad = 0;
        if (load_bytes(ctx, xdp, off + len - 1, &pad, 1) < 0)
            return -1;
        // The count includes itself and may not reach into the header.
        if (pad == 0 || header + pad > len)
            return -1;
    }
    return 0;
}

// The tracker's part for the RTP packet `rtp` (its first 12 bytes in the linear data, `len`
// bytes in all, at `off`) of direction `v`: 0 when the program relays it, -1 when it goes up
// (with the flags set when the worker must take the direction back).
static __always_inline int track(void *ctx, int xdp, struct fwd_value *v, const __u8 *rtp, __u32 off,
                                 __u32 len) {
    __u8 b0 = rtp[0];
    __u8 b1 = rtp[1];
    // Not RTP version 2, or RTCP on a multiplexed port: the worker handles it; the tracker
    // is not involved, so the stream stays here.
    if ((b0 & 0xc0) != 0x80 || (b1 >= 192 && b1 <= 223))
        return -1;
    // CSRCs, a header extension and padding (RtpPacket::check_len in src/rtp/packet.rs):
    // the program relays the packet whole, so it only checks that they fit, with at most
    // two loads. A packet that fails goes up unmarked: the worker counts it as malformed,
    // as it would have, and the tracker never sees it.
    if (check_rtp_layout(ctx, xdp, off, b0, len) != 0)
        return -1;
    __u16 seq = load_be16(rtp + 2);
    __u32 ts = load_be32(rtp + 4);
    __u32 ssrc = load_be32(rtp + 8);
    if (ssrc != v->ssrc || (b1 & 0x7f) != v->payload_type) {
        v->flags |= ANCHOR_HANDED_BACK | (ssrc != v->ssrc ? ANCHOR_BACK_SSRC : ANCHOR_BACK_PT);
        return -1;
    }

    // Sequence state (ExtendedSeq::update). Duplicates and late packets are forwarded too.
    __u16 ahead = seq - v->max_seq;
    int received = 0;
    if (ahead == 0) {
        v->duplicates += 1;
    } else if (ahead < MAX_DROPOUT) {
        if (seq < v->max_seq)
            v->cycles += 1;
        v->max_seq = seq;
        if (ahead >= 128) {
            v->window0 = 0;
            v->window1 = 0;
        } else if (ahead >= 64) {
            v->window1 = v->window0 << (ahead - 64);
            v->window0 = 0;
        } else {
            v->window1 = (v->window1 << ahead) | (v->window0 >> (64 - ahead));
            v->window0 <<= ahead;
        }
        v->window0 |= 1;
        received = 1;
    } else {
        __u16 back = -ahead;
        if (back > MAX_MISORDER) {
            // A big jump: the worker's tracker waits for a second packet to confirm it.
            v->flags |= ANCHOR_HANDED_BACK | ANCHOR_BACK_JUMP;
            return -1;
        }
        __u64 bit;
        __u64 *half;
        if (back < 64) {
            bit = 1ull << back;
            half = &v->window0;
        } else {
            bit = 1ull << (back - 64);
            half = &v->window1;
        }
        if (*half & bit) {
            v->duplicates += 1;
        } else {
            *half |= bit;
            v->reordered += 1;
            received = 1;
        }
    }

    __u64 now = bpf_ktime_get_ns() - v->origin_ns;
    v->packets += 1;
    v->bytes += len;
    v->last_packet_ns = now;
    if (received) {
        v->received += 1;
        __u32 hz = v->clock_hz;
        if (hz != 0) {
            __u32 transit = ns_to_units(now, hz) - ts;
            if (v->have_transit) {
                __s32 d = (__s32)(transit - v->last_transit);
                __u32 ad = d < 0 ? (__u32)(-(__s64)d) : (__u32)d;
                if (ad > MAX_JITTER_STEP)
                    ad = MAX_JITTER_STEP;
                __u32 j = v->jitter_q4;
                j = j + ad - ((j + 8) >> 4);
                v->jitter_q4 = j;
                if (j > v->max_jitter_q4)
                    v->max_jitter_q4 = j;
            }
            v->last_transit = transit;
            v->have_transit = 1;
        }
    }
    return 0;
}

static __always_inline __u32 mapped_v4(const __u8 *a) { return *(const __u32 *)(a + 12); }

static __always_inline int same16(const __u8 *a, const __u8 *b) {
    const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

// Both programs' first step for an IPv4 packet (Ethernet frame at `data`): the direction
// whose relay socket it arrives on, when it comes from the latched source with lengths that
// agree; its RTP length in `rtp_len`. NULL: not ours, handed back, or (flagged) another
// source.
static __always_inline struct fwd_value *lookup_v4(void *data, void *end, __u32 *rtp_len) {
    if (data + RTP_OFF + 12 > end)
        return 0;
    struct iphdr *ip = data + IP_OFF;
    if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP || (ip->frag_off & __builtin_bswap16(0x3fff)))
        return 0;
    struct udphdr *udp = data + UDP_OFF;
    struct fwd_key key = {.port = udp->dest, .pad = 0};
    int slot = slot4(ip->daddr);
    if (slot < 0) {
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        *(__u32 *)(key.addr + 12) = ip->daddr;
    }
    struct fwd_value *v = direction(slot, udp->dest, &key);
    if (!v || (v->flags & ANCHOR_HANDED_BACK))
        return 0;
    if (ip->saddr != mapped_v4(v->src_addr) || udp->source != v->src_port) {
        v->flags |= ANCHOR_HANDED_BACK | ANCHOR_BACK_SOURCE;
        return 0;
    }
    __u16 udp_len = __builtin_bswap16(udp->len);
    __u16 ip_len = __builtin_bswap16(ip->tot_len);
    if (udp_len < 8 + 12 || ip_len != 20 + udp_len)
        return 0;
    *rtp_len = udp_len - 8;
    return v;
}

// The same for IPv6 (UDP right after the fixed header; extension headers and fragments go
// up).
static __always_inline struct fwd_value *lookup_v6(void *data, void *end, __u32 *rtp_len) {
    if (data + RTP6_OFF + 12 > end)
        return 0;
    struct ipv6hdr *ip6 = data + IP_OFF;
    if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
        return 0;
    struct udphdr *udp = data + UDP6_OFF;
    struct fwd_key key = {.port = udp->dest, .pad = 0};
    int slot = slot6((const __u32 *)&ip6->daddr);
    if (slot < 0)
        __builtin_memcpy(key.addr, &ip6->daddr, 16);
    struct fwd_value *v = direction(slot, udp->dest, &key);
    if (!v || (v->flags & ANCHOR_HANDED_BACK))
        return 0;
    if (!same16((const __u8 *)&ip6->saddr, v->src_addr) || udp->source != v->src_port) {
        v->flags |= ANCHOR_HANDED_BACK | ANCHOR_BACK_SOURCE;
        return 0;
    }
    __u16 udp_len = __builtin_bswap16(udp->len);
    if (udp_len < 8 + 12 || __builtin_bswap16(ip6->payload_len) != udp_len)
        return 0;
    *rtp_len = udp_len - 8;
    return v;
}

// The relay's ports as they sit in the UDP header's first word.
static __always_inline __u32 ports_word(__u16 sport, __u16 dport) {
    union {
        __u16 p[2];
        __u32 w;
    } u = {.p = {sport, dport}};
    return u.w;
}

// ---- TC ----------------------------------------------------------------------------------

// Sends the rewritten packet on: LOCAL out of `ifindex` again (loopback delivers it to the
// local endpoint's socket; the packet keeps its local route), ROUTED by the route and next
// hop the relay's own send from this address would take (an output route lookup bound to
// the device the worker found for the destination), with the next hop's MAC from the
// neighbour cache, resolved if need be.
static __always_inline int send_on(const struct fwd_value *v) {
    count_path(PATH_TC);
    if (v->mode == MODE_ROUTED)
        return bpf_redirect_neigh(v->ifindex, 0, 0, 0);
    return bpf_redirect(v->ifindex, 0);
}

// One's complement arithmetic as the kernel's csum_add and csum_fold (include/net/checksum.h):
// the address difference below goes to its checksum helper as a __wsum.
static __always_inline __u32 csum_add(__u32 a, __u32 b) {
    __u32 r = a + b;
    return r + (r < b);
}

static __always_inline __u16 csum_fold(__u32 s) {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)~s;
}

// The checksum `check` after bytes whose sum was `diff`'s negative part became its positive
// part (the kernel's csum_replace_by_diff): the IPv4 header checksum, which is always whole.
static __always_inline __u16 csum_by_diff(__u16 check, __u32 diff) {
    return csum_fold(csum_add(diff, ~(__u32)check));
}

// The UDP checksum after the packet's addresses and ports changed: `addr_diff`, the
// pseudo-header's part (the addresses), `old_ports`/`new_ports` the UDP header's first word.
// What the field holds depends on the skb's checksum state, which only the kernel's helper
// knows: a whole checksum over everything, or (CHECKSUM_PARTIAL, a local socket's packet on
// loopback or a veth) only the pseudo-header's sum, to which the ports do not belong; with
// CHECKSUM_COMPLETE the skb's own sum must follow the pseudo-header's change as well. So the
// ports go through one helper call (it leaves a partial checksum alone), and the addresses
// through a second only when they change the sum at all (relay and endpoints on one address,
// as on loopback, do not). A UDP checksum of 0 (IPv4: none) stays 0 (BPF_F_MARK_MANGLED_0).
// The helpers invalidate the packet pointers: the caller loads them again.
static __always_inline void udp_csum_update(struct __sk_buff *skb, __u32 off, __u32 addr_diff,
                                            __u32 old_ports, __u32 new_ports) {
    // 0 and 0xffff: a sum that does not move.
    __u16 moved = csum_fold(addr_diff);
    if (moved != 0 && moved != 0xffff)
        bpf_l4_csum_replace(skb, off, 0, addr_diff, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0);
    if (old_ports != new_ports)
        bpf_l4_csum_replace(skb, off, old_ports, new_ports, BPF_F_MARK_MANGLED_0 | 4);
}

static __always_inline int tc_v4(struct __sk_buff *skb, void *data, void *end) {
    __u32 len = 0;
    struct fwd_value *v = lookup_v4(data, end, &len);
    if (!v || data + RTP_OFF + 12 > end)
        return TC_ACT_UNSPEC;
    if (track(skb, 0, v, data + RTP_OFF, RTP_OFF, len) != 0)
        return TC_ACT_UNSPEC;
    struct iphdr *ip = data + IP_OFF;
    struct udphdr *udp = data + UDP_OFF;

    // Rewrite: from the relay's other socket to the other side's endpoint. The addresses
    // (adjacent in the IP header) and ports (the UDP header's first word) are written in
    // place; the checksums follow by one difference over the old and new words.
    __u32 old_saddr = ip->saddr, old_daddr = ip->daddr;
    __u32 old_ports = *(__u32 *)udp;
    __u32 new_saddr = mapped_v4(v->out_saddr), new_daddr = mapped_v4(v->out_daddr);
    __u32 new_ports = ports_word(v->out_sport, v->out_dport);
    __u32 diff = csum_add(csum_add(~old_saddr, ~old_daddr), csum_add(new_saddr, new_daddr));
    ip->check = csum_by_diff(ip->check, diff);
    ip->saddr = new_saddr;
    ip->daddr = new_daddr;
    if (udp->check != 0) {
        udp_csum_update(skb, UDP_CSUM_OFF, diff, old_ports, new_ports);
        data = (void *)(long)skb->data;
        end = (void *)(long)skb->data_end;
        if (data + RTP_OFF > end)
            return TC_ACT_SHOT;
        udp = data + UDP_OFF;
    }
    *(__u32 *)udp = new_ports;
    return send_on(v);
}

static __always_inline int tc_v6(struct __sk_buff *skb, void *data, void *end) {
    __u32 len = 0;
    struct fwd_value *v = lookup_v6(data, end, &len);
    if (!v || data + RTP6_OFF + 12 > end)
        return TC_ACT_UNSPEC;
    if (track(skb, 0, v, data + RTP6_OFF, RTP6_OFF, len) != 0)
        return TC_ACT_UNSPEC;
    struct ipv6hdr *ip6 = data + IP_OFF;
    struct udphdr *udp = data + UDP6_OFF;

    // Both addresses (32 bytes, the pseudo-header's part of the UDP checksum: IPv6 has no
    // header checksum) and both ports, written in place as for IPv4.
    __u32 *addrs = (__u32 *)&ip6->saddr;
    const __u32 *to = (const __u32 *)v->out_saddr;
    __u32 diff = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        diff = csum_add(diff, ~addrs[i]);
        diff = csum_add(diff, to[i]);
        addrs[i] = to[i];
    }
    __u32 old_ports = *(__u32 *)udp;
    __u32 new_ports = ports_word(v->out_sport, v->out_dport);
    if (udp->check != 0) {
        udp_csum_update(skb, UDP6_CSUM_OFF, diff, old_ports, new_ports);
        data = (void *)(long)skb->data;
        end = (void *)(long)skb->data_end;
        if (data + RTP6_OFF > end)
            return TC_ACT_SHOT;
        udp = data + UDP6_OFF;
    }
    *(__u32 *)udp = new_ports;
    return send_on(v);
}

SEC("classifier")
int anchor_forward(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    if (data + IP_OFF > end)
        return TC_ACT_UNSPEC;
    struct ethhdr *eth = data;
    if (eth->h_proto == __builtin_bswap16(ETH_P_IP))
        return tc_v4(skb, data, end);
    if (eth->h_proto == __builtin_bswap16(ETH_P_IPV6))
        return tc_v6(skb, data, end);
    return TC_ACT_UNSPEC;
}

// ---- XDP ---------------------------------------------------------------------------------

// One's complement checksum `check` after the `size` bytes at `from` became those at `to`
// (RFC 1624: ~(~HC + ~m + m')), both on the stack, `size` a multiple of 4.
static __always_inline __u16 csum_replace(__u16 check, __u32 *from, __u32 *to, __u32 size) {
    __s64 sum = bpf_csum_diff(from, size, to, size, (__u16)~check);
    __u32 s = (__u32)sum;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)~s;
}

// The folded one's complement sum of `size` bytes at `words` (on the stack).
static __always_inline __u16 csum_words(__u32 *words, __u32 size) {
    __u32 s = (__u32)bpf_csum_diff(0, 0, words, size, 0);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)s;
}

// Whether the UDP checksum field `check` is a CHECKSUM_PARTIAL one: the sender's stack left
// the sum over the datagram to the device and wrote only the pseudo-header's (`pseudo`,
// folded, not inverted). Packets from a wire always carry the whole checksum; a packet a
// local socket sent into a veth does not, and the XDP program cannot finish it (the frame
// it sends carries no checksum state), so such packets go on to the TC program, whose skb
// keeps that state. A whole checksum equal to the pseudo-header's sum by chance (1 in
// 65,536) goes to TC as well, which relays it as any other.
static __always_inline int csum_partial(__u16 check, __u16 pseudo) { return check != 0 && check == pseudo; }

// Where the XDP program sends direction `v`'s packet of `tot_len` L3 bytes: the FIB's answer
// from the relay's outgoing address (the worker's device; `fib` holds the family and both
// addresses), when it found the neighbour's MAC and names a device of `anchor_egress`.
// 0 with `fib` holding the device and both MACs; -1: the packet goes on to the TC program.
static __always_inline int xdp_egress(struct xdp_md *ctx, const struct fwd_value *v,
                                      struct bpf_fib_lookup *fib, __u16 tot_len) {
    if (v->mode != MODE_ROUTED)
        return -1;
    fib->l4_protocol = IPPROTO_UDP;
    fib->sport = v->out_sport;
    fib->dport = v->out_dport;
    fib->tot_len = tot_len;
    fib->ifindex = v->ifindex;
    if (bpf_fib_lookup(ctx, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT) != 0)
        return -1;
    __u32 out = fib->ifindex;
    if (!bpf_map_lookup_elem(&anchor_egress, &out))
        return -1;
    return 0;
}

// Sends the rewritten frame out of `fib`'s device with its MACs: back out of the device it
// came in on (XDP_TX) or redirected to another.
static __always_inline int xdp_send(struct xdp_md *ctx, struct ethhdr *eth,
                                    const struct bpf_fib_lookup *fib) {
    __builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
    count_path(PATH_XDP);
    if (fib->ifindex == ctx->ingress_ifindex)
        return XDP_TX;
    return bpf_redirect_map(&anchor_egress, fib->ifindex, 0);
}

static __always_inline int xdp_v4(struct xdp_md *ctx, void *data, void *end) {
    __u32 len = 0;
    struct fwd_value *v = lookup_v4(data, end, &len);
    if (!v || data + RTP_OFF + 12 > end)
        return XDP_PASS;
    struct iphdr *ip = data + IP_OFF;
    struct udphdr *udp = data + UDP_OFF;
    union {
        __u16 h[6];
        __u32 w[3];
    } pseudo = {.h = {0, 0, 0, 0, __builtin_bswap16(IPPROTO_UDP), udp->len}};
    pseudo.w[0] = ip->saddr;
    pseudo.w[1] = ip->daddr;
    if (csum_partial(udp->check, csum_words(pseudo.w, 12)))
        return XDP_PASS;
    struct bpf_fib_lookup fib = {.family = AF_INET};
    fib.ipv4_src = mapped_v4(v->out_saddr);
    fib.ipv4_dst = mapped_v4(v->out_daddr);
    if (xdp_egress(ctx, v, &fib, __builtin_bswap16(ip->tot_len)) != 0)
        return XDP_PASS;
    if (track(ctx, 1, v, data + RTP_OFF, RTP_OFF, len) != 0)
        return XDP_PASS;

    // Addresses and ports, and both checksums over them (a UDP checksum of 0 means none).
    __u32 old[3] = {ip->saddr, ip->daddr, *(__u32 *)udp};
    __u32 new[3] = {mapped_v4(v->out_saddr), mapped_v4(v->out_daddr),
                    ports_word(v->out_sport, v->out_dport)};
    ip->check = csum_replace(ip->check, old, new, 8);
    if (udp->check) {
        __u16 c = csum_replace(udp->check, old, new, 12);
        udp->check = c ? c : 0xffff;
    }
    ip->saddr = new[0];
    ip->daddr = new[1];
    udp->source = v->out_sport;
    udp->dest = v->out_dport;
    return xdp_send(ctx, data, &fib);
}

static __always_inline int xdp_v6(struct xdp_md *ctx, void *data, void *end) {
    __u32 len = 0;
    struct fwd_value *v = lookup_v6(data, end, &len);
    if (!v || data + RTP6_OFF + 12 > end)
        return XDP_PASS;
    struct ipv6hdr *ip6 = data + IP_OFF;
    struct udphdr *udp = data + UDP6_OFF;
    __u32 pseudo[10];
    __builtin_memcpy(pseudo, &ip6->saddr, 32);
    pseudo[8] = __builtin_bswap32(len + 8);
    pseudo[9] = __builtin_bswap32(IPPROTO_UDP);
    if (csum_partial(udp->check, csum_words(pseudo, 40)))
        return XDP_PASS;
    struct bpf_fib_lookup fib = {.family = AF_INET6};
    __builtin_memcpy(fib.ipv6_src, v->out_saddr, 16);
    __builtin_memcpy(fib.ipv6_dst, v->out_daddr, 16);
    if (xdp_egress(ctx, v, &fib, 40 + __builtin_bswap16(ip6->payload_len)) != 0)
        return XDP_PASS;
    if (track(ctx, 1, v, data + RTP6_OFF, RTP6_OFF, len) != 0)
        return XDP_PASS;

    // Both addresses (the pseudo-header's part of the UDP checksum) and both ports.
    __u32 old[9], new[9];
    __builtin_memcpy(old, &ip6->saddr, 32);
    old[8] = *(__u32 *)udp;
    __builtin_memcpy(new, v->out_saddr, 32);
    new[8] = ports_word(v->out_sport, v->out_dport);
    __u16 c = csum_replace(udp->check, old, new, 36);
    udp->check = c ? c : 0xffff;
    __builtin_memcpy(&ip6->saddr, new, 32);
    udp->source = v->out_sport;
    udp->dest = v->out_dport;
    return xdp_send(ctx, data, &fib);
}

SEC("xdp")
int anchor_xdp(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (data + IP_OFF > end)
        return XDP_PASS;
    struct ethhdr *eth = data;
    if (eth->h_proto == __builtin_bswap16(ETH_P_IP))
        return xdp_v4(ctx, data, end);
    if (eth->h_proto == __builtin_bswap16(ETH_P_IPV6))
        return xdp_v6(ctx, data, end);
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
