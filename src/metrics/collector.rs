//! The `prometheus-client` collector over one [`MetricsSnapshot`]: every metric family, its
//! help text and its labels. Counter names are given without `_total` (the encoder appends
//! it); rtpengine's `packets_lost`, `rtp_duplicates` and `rtp_reordered` keep their names and
//! are therefore gauges (they only ever grow).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{KernelPathState, MetricsSnapshot, LATENCY_BUCKETS_SECS};
use crate::dataplane::kernel::reasons::{Back, UserReason};

type Res = Result<(), std::fmt::Error>;

#[derive(Debug)]
pub(super) struct SnapshotCollector(pub(super) MetricsSnapshot);

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Res {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn counter_f(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Res {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, f64>(&v, None)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Res {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// One counter family with a single label `key`, one series per `(value, count)`.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &str,
    series: &[(&str, u64)],
) -> Res {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in series {
        m.encode_family(&[(key, *value)])?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &str,
    series: &[(&str, u64)],
) -> Res {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, v) in series {
        m.encode_family(&[(key, *value)])?.encode_gauge(v)?;
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Res {
        let s = &self.0;
        sessions(&mut enc, s)?;
        packets(&mut enc, s)?;
        dataplane(&mut enc, s)?;
        kernel(&mut enc, s)?;
        requests(&mut enc, s)?;
        for t in &s.samples {
            let stem2 = format!("{}2", t.name);
            let samples = format!("{}_samples", t.name);
            counter_f(&mut enc, t.name, t.help, t.total)?;
            counter_f(&mut enc, &stem2, "Sum of squares of the samples.", t.total2)?;
            counter(&mut enc, &samples, "Samples taken.", t.samples)?;
        }
        sip(&mut enc, s)?;
        media_relays(&mut enc, s)
    }
}

/// The relay set's figures (`--media-relay`), one series per relay (`relay="ng:ADDR"`).
fn media_relays(enc: &mut DescriptorEncoder, s: &MetricsSnapshot) -> Res {
    if s.media_relays.is_empty() {
        return Ok(());
    }
    type Pick = fn(&crate::relayset::RelaySnapshot) -> u64;
    let families: [(&str, &str, bool, Pick); 15] = [
        (
            "media_relay_up",
            "1 while the relay answers, 0 while it is skipped.",
            false,
            |r| u64::from(r.up),
        ),
        (
            "media_relay_weight",
            "The relay's weight in the set.",
            false,
            |r| u64::from(r.weight),
        ),
        (
            "media_relay_active_calls",
            "Calls anchored on the relay now.",
            false,
            |r| r.active_calls,
        ),
        (
            "media_relay_calls",
            "Calls whose first offer chose the relay.",
            true,
            |r| r.counters.calls,
        ),
        (
            "media_relay_offers",
            "Offers sent to the relay.",
            true,
            |r| r.counters.offers,
        ),
        (
            "media_relay_answers",
            "Answers sent to the relay.",
            true,
            |r| r.counters.answers,
        ),
        (
            "media_relay_deletes",
            "Deletes sent to the relay.",
            true,
            |r| r.counters.deletes,
        ),
        (
            "media_relay_errors",
            "Requests the relay answered with an error.",
            true,
            |r| r.counters.errors,
        ),
        (
            "media_relay_timeouts",
            "Requests given up without a reply.",
            true,
            |r| r.counters.timeouts,
        ),
        (
            "media_relay_failovers",
            "Offers moved to another relay after no reply.",
            true,
            |r| r.counters.failovers,
        ),
        (
            "media_relay_downs",
            "Times the relay was found not answering.",
            true,
            |r| r.counters.downs,
        ),
        (
            "media_relay_stranded_calls",
            "Calls the relay held when it went down (summed).",
            true,
            |r| r.counters.calls_stranded,
        ),
        (
            "media_relay_rtt_microseconds",
            "The last ng round trip to the relay.",
            false,
            |r| r.counters.last_rtt_us,
        ),
        (
            "media_relay_request_rtt_median_microseconds",
            "Median ng round trip of the calls' requests (offer, answer, delete) to the relay.",
            false,
            |r| r.counters.request_rtt_median_us,
        ),
        (
            "media_relay_request_rtt_p99_microseconds",
            "99th percentile ng round trip of the calls' requests to the relay.",
            false,
            |r| r.counters.request_rtt_p99_us,
        ),
    ];
    for (name, help, is_counter, pick) in families {
        let series: Vec<(&str, u64)> = s
            .media_relays
            .iter()
            .map(|r| (r.name.as_str(), pick(r)))
            .collect();
        if is_counter {
            counters(enc, name, help, "relay", &series)?;
        } else {
            gauges(enc, name, help, "relay", &series)?;
        }
    }
    Ok(())
}

fn sessions(enc: &mut DescriptorEncoder, s: &MetricsSnapshot) -> Res {
    gauge(
        enc,
        "uptime_seconds",
        "Seconds since the relay started.",
        s.uptime_secs,
    )?;
    gauge(enc, "sessions", "Calls now.", s.sessions)?;
    counter(
        enc,
        "sessions",
        "Calls set up since start.",
        s.sessions_total,
    )?;
    counters(
        enc,
        "closed_sessions",
        "Calls ended, by reason.",
        "reason",
        &[
            ("rejected", s.closed.rejected),
            ("timeout", s.closed.timeout),
            ("terminated", s.closed.terminated),
        ],
    )?;
    gauges(
        enc,
        "mediastreams",
        "Media directions (one per stream side) relayed now, by where they are relayed.",
        "type",
        &[
            (
                "userspace",
                s.directions.saturating_sub(s.kernel_directions),
            ),
            ("kernel", s.kernel_directions),
        ],
    )?;
    gauge(
        enc,
        "ports_used",
        "Relay media ports in use (RTP and RTCP).",
        s.ports_used,
    )?;
    gauge(
        enc,
        "ports_free",
        "Relay media ports free (RTP and RTCP).",
        s.ports_free,
    )?;
    gauge(
        enc,
        "draining",
        "1 while draining (no new sessions).",
        u64::from(s.draining),
    )
}

fn packets(enc: &mut DescriptorEncoder, s: &MetricsSnapshot) -> Res {
    let d = &s.dataplane;
    let user_packets = d.rx_packets.saturating_sub(d.kernel_forwarded);
    let user_bytes = d.rx_bytes.saturating_sub(d.kernel_bytes);
    counters(
        enc,
        "packets",
        "Packets received on relay ports (RTP and RTCP), by the path that handled them.",
        "type",
        &[("userspace", user_packets), ("kernel", d.kernel_forwarded)],
    )?;
    counters(
        enc,
        "bytes",
        "Bytes (UDP payload) received on relay ports, by the path that handled them.",
        "type",
        &[("userspace", user_bytes), ("kernel", d.kernel_bytes)],
    )?;
    counters(
        enc,
        "packet_errors",
        "Packets received and not relayed (every drop reason).",
        "type",
        &[("userspace", d.dropped())],
    )?;
    gauge(
        enc,
        "packets_lost",
        "RTP packets lost before reaching the relay (all streams).",
        s.quality.lost,
    )?;
    gauge(
        enc,
        "rtp_duplicates",
        "Duplicate RTP packets seen (all streams).",
        s.quality.duplicates,
    )?;
    gauge(
        enc,
        "rtp_reordered",
        "RTP packets that arrived out of order (all streams).",
        s.quality.reordered,
    )
}

fn dataplane(enc: &mut DescriptorEncoder, s: &MetricsSnapshot) -> Res {
    let d = &s.dataplane;
    counters(
        enc,
        "dataplane_drops",
        "Packets dropped by the data plane, by reason (statistics.dataplane names).",
        "reason",
        &[
            ("strict", d.drop_strict),
            ("source", d.drop_source),
            ("no_destination", d.drop_no_destination),
            ("send_failed", d.drop_send_failed),
            ("overload", d.drop_overload),
            ("stale", d.drop_stale),
            ("panic", d.drop_panic),
        ],
    )?;
    counter(
        enc,
        "worker_panics",
        "Panics caught in data-plane workers (packets, commands, housekeeping); each worker went on.",
        d.worker_panics,
    )?;
    counter(
        enc,
        "worker_restarts",
        "Data-plane worker loops restarted after a panic in their I/O code; the sockets and streams were kept.",
        d.worker_restarts,
    )?;
    counters(
        enc,
        "dataplane_noted",
        "Packets noted but relayed (forwarded unless strict), by kind.",
        "kind",
        &[
            ("malformed_rtp", d.malformed_rtp),
            ("non_rtp", d.non_rtp),
            ("malformed_rtcp", d.malformed_rtcp),
            ("truncated", d.truncated),
        ],
    )?;
    counter(
        enc,
        "receive_queue_drops",
        "Datagrams the kernel dropped because a relay socket's receive queue was full.",
        d.drop_rcvbuf,
    )?;
    counter(
        enc,
        "rtcp_packets",
        "RTCP packets received on relay ports.",
        d.rtcp_packets,
    )?;
    counter(
        enc,
        "gso_sends",
        "UDP GSO sends carrying several datagrams.",
        d.gso_sends,
    )?;
    counter(
        enc,
        "gso_segments",
        "Datagrams carried by UDP GSO sends.",
        d.gso_segments,
    )?;
    counter(
        enc,
        "gso_failed",
        "UDP GSO sends the kernel refused (resent one by one).",
        d.gso_failed,
    )?;
    counter(
        enc,
        "events_lost",
        "Latching events lost (event queue full).",
        d.events_lost,
    )?;
    counter(
        enc,
        "spares_short",
        "RTP trackers and RTCP records allocated on the packet path (a worker's spares had run out).",
        d.spares_short,
    )?;
    counter(
        enc,
        "recv_stalls",
        "io_uring multishot receives found stalled and re-armed.",
        d.recv_stalls,
    )?;
    let workers: Vec<(String, u64)> = s
        .worker_packets
        .iter()
        .enumerate()
        .map(|(i, p)| (i.to_string(), *p))
        .collect();
    let series: Vec<(&str, u64)> = workers.iter().map(|(w, p)| (w.as_str(), *p)).collect();
    counters(
        enc,
        "worker_packets",
        "Packets received per data-plane worker (ring), kernel-relayed ones included.",
        "worker",
        &series,
    )
}

fn kernel(enc: &mut DescriptorEncoder, s: &MetricsSnapshot) -> Res {
    let d = &s.dataplane;
    counter(
        enc,
        "kernel_handovers",
        "Media directions handed to the in-kernel fast path.",
        d.kernel_handovers,
    )?;
    counter(
        enc,
        "kernel_takebacks",
        "Media directions taken back from the kernel by a worker (new source, SSRC, payload type, RTCP...).",
        d.kernel_takebacks,
    )?;
    counter(
        enc,
        "kernel_reattached",
        "Times the in-kernel program was attached again after someone else detached it.",
        d.kernel_reattached,
    )?;
    counter(
        enc,
        "kernel_xdp_forwarded",
        "Packets the XDP program relayed at the driver (of kernel_forwarded; the rest went through the TC program).",
        d.kernel_xdp_forwarded,
    )?;
    gauge(
        enc,
        "kernel_xdp_devices",
        "Devices whose driver runs the XDP program (the others relay through the TC program only).",
        d.kernel_xdp_devices,
    )?;
    counter_f(
        enc,
        "kernel_program_seconds",
        "CPU time the in-kernel programs ran (counted by the kernel only while sysctl kernel.bpf_stats_enabled is 1).",
        d.kernel_program_ns as f64 / 1e9,
    )?;
    counter(
        enc,
        "kernel_program_runs",
        "Times the in-kernel programs ran (counted by the kernel only while sysctl kernel.bpf_stats_enabled is 1).",
        d.kernel_program_runs,
    )?;
    let user: Vec<(&str, u64)> = UserReason::ALL
        .iter()
        .map(|r| (r.name(), d.reasons.user_packets(*r)))
        .collect();
    counters(
        enc,
        "kernel_path_user_packets",
        "Packets a worker received instead of the in-kernel path, by why (statistics.dataplane user_*).",
        "reason",
        &user,
    )?;
    let back: Vec<(&str, u64)> = Back::ALL
        .iter()
        .map(|b| (b.name(), d.reasons.taken_back(*b)))
        .collect();
    counters(
        enc,
        "kernel_path_takebacks",
        "Media directions taken back from the kernel, by why (statistics.dataplane kernel_back_*).",
        "reason",
        &back,
    )?;
    // Why directions are in user space: with the fast path off, every direction under that
    // one reason; while it runs, each direction under the reason its worker last found.
    let user = s.directions.saturating_sub(s.kernel_directions);
    let (disabled, unavailable) = match &s.kernel {
        KernelPathState::Running => (0, 0),
        KernelPathState::Disabled => (user, 0),
        KernelPathState::Unavailable(_) => (0, user),
    };
    let running = s.kernel == KernelPathState::Running;
    let mut excluded = vec![("disabled", disabled), ("unavailable", unavailable)];
    excluded.extend(
        s.kernel_status
            .iter()
            .filter(|(name, _)| *name != "in_kernel")
            .map(|(name, n)| (*name, if running { *n } else { 0 })),
    );
    gauges(
        enc,
        "kernel_path_excluded",
        "Media directions relayed in user space, by why they are not in the kernel.",
        "reason",
        &excluded,
    )?;
    let reason = match &s.kernel {
        KernelPathState::Running => "running",
        KernelPathState::Disabled => "disabled",
        KernelPathState::Unavailable(_) => "unavailable",
    };
    gauges(
        enc,
        "kernel_path",
        "The in-kernel fast path's state (1 for the current one).",
        "state",
        &[
            ("running", u64::from(reason == "running")),
            ("disabled", u64::from(reason == "disabled")),
            ("unavailable", u64::from(reason == "unavailable")),
        ],
    )
}

fn requests(enc: &mut DescriptorEncoder, s: &MetricsSnapshot) -> Res {
    let counts: Vec<(&str, u64)> = s.requests.iter().map(|r| (r.request, r.count)).collect();
    counters(
        enc,
        "requests",
        "ng requests handled, by command.",
        "request",
        &counts,
    )?;
    let mut m = enc.encode_descriptor(
        "request_seconds",
        "Seconds spent handling ng requests, by command.",
        None,
        MetricType::Counter,
    )?;
    for r in &s.requests {
        m.encode_family(&[("request", r.request)])?
            .encode_counter::<NoLabelSet, _, f64>(&r.seconds, None)?;
    }
    let mut h = enc.encode_descriptor(
        "request_duration_seconds",
        "ng request handling latency, by command.",
        None,
        MetricType::Histogram,
    )?;
    for r in &s.requests {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_SECS
            .iter()
            .copied()
            .zip(r.buckets.iter().copied())
            .collect();
        h.encode_family(&[("request", r.request)])?
            .encode_histogram::<NoLabelSet>(r.seconds, r.count, &buckets, None)?;
    }
    counter(
        enc,
        "errors",
        "ng replies with result error (malformed requests included).",
        s.ng_errors,
    )?;
    counter(
        enc,
        "ng_received",
        "ng messages received (UDP and TCP).",
        s.ng_received,
    )?;
    counter(
        enc,
        "ng_duplicates",
        "ng retransmissions answered from the reply cache.",
        s.ng_duplicates,
    )
}

fn sip(enc: &mut DescriptorEncoder, s: &MetricsSnapshot) -> Res {
    let Some(sip) = &s.sip else {
        return Ok(());
    };
    counter(
        enc,
        "sip_messages_received",
        "SIP messages handed to the proxy.",
        sip.received,
    )?;
    counter(
        enc,
        "sip_requests_received",
        "SIP requests received.",
        sip.requests,
    )?;
    counter(
        enc,
        "sip_responses_received",
        "SIP responses received.",
        sip.responses,
    )?;
    gauges(
        enc,
        "sip_transactions",
        "SIP transactions now, by kind.",
        "kind",
        &[
            ("server", sip.server_transactions),
            ("client", sip.client_transactions),
        ],
    )?;
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
    let by_class: Vec<(&str, u64)> = classes
        .iter()
        .zip(sip.responses_by_class.iter().skip(1))
        .map(|(c, n)| (*c, *n))
        .collect();
    counters(
        enc,
        "sip_responses_sent",
        "SIP responses sent or forwarded, by class.",
        "class",
        &by_class,
    )?;
    counter(
        enc,
        "sip_registrations",
        "REGISTER requests accepted by the registrar.",
        sip.registrations,
    )?;
    counter(
        enc,
        "sip_transaction_timeouts",
        "SIP client transactions that timed out.",
        sip.timeouts,
    )?;
    counters(
        enc,
        "sip_rejected",
        "SIP messages rejected or dropped, by reason.",
        "reason",
        &sip.rejected,
    )?;
    gauges(
        enc,
        "sip_connections",
        "SIP TCP/TLS connections open now, by transport.",
        "transport",
        &sip.connections_open,
    )?;
    counters(
        enc,
        "sip_connections_made",
        "SIP TCP/TLS connections accepted or opened by the proxy.",
        "how",
        &sip.connections_made,
    )?;
    counter(
        enc,
        "sip_tls_handshake_failures",
        "SIP TLS handshakes that failed or timed out.",
        sip.tls_handshake_failures,
    )?;
    counter(
        enc,
        "sip_transport_errors",
        "SIP requests the transport could not deliver (no connection to the next hop), answered as a 503 from it.",
        sip.transport_errors,
    )?;
    counter(
        enc,
        "sip_flows_failed",
        "SIP requests answered 430 Flow Failed: the RFC 5626 flow of the binding was gone.",
        sip.flows_failed,
    )?;
    counters(
        enc,
        "sip_forwarded",
        "SIP messages forwarded, by kind (stateless: ACKs of 2xx and 2xx retransmissions).",
        "kind",
        &sip.forwarded,
    )?;
    counters(
        enc,
        "sip_retransmissions",
        "SIP retransmissions: of requests, absorbed by a transaction; ours, sent on timers.",
        "direction",
        &sip.retransmissions,
    )?;
    counter(
        enc,
        "sip_keepalives",
        "SIP CRLF keep-alives received.",
        sip.keepalives,
    )?;
    counters(
        enc,
        "sip_messages_sent",
        "SIP messages sent, by transport.",
        "transport",
        &sip.sent,
    )?;
    counter(
        enc,
        "sip_send_errors",
        "SIP sends that failed or were dropped (full queue, connect failure, write error).",
        sip.send_errors,
    )?;
    counters(
        enc,
        "sip_auth",
        "SIP requests answered by digest authentication, by result.",
        "result",
        &sip.auth,
    )?;
    counters(
        enc,
        "sip_media",
        "SIP media steps that failed, and messages parked until a remote media relay answered.",
        "what",
        &sip.media,
    )?;
    counter(
        enc,
        "sip_short_lingers",
        "Finished SIP transactions that lingered T4 instead of 64*T1 (half the cap taken).",
        sip.short_lingers,
    )?;
    counter(
        enc,
        "sip_shed_starts",
        "Times SIP overload control began refusing new INVITEs (input queue not draining).",
        sip.shed_starts,
    )?;
    counter(
        enc,
        "sip_idle_closed",
        "SIP TCP/TLS connections closed because they were idle.",
        sip.idle_closed,
    )?;
    counter(
        enc,
        "sip_panics",
        "Panics caught inside the SIP proxy (should stay 0).",
        sip.panics,
    )
}
