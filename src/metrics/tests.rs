use super::*;

fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn snapshot_figures_come_out_under_rtpengine_names() {
    let mut snap = MetricsSnapshot {
        sessions: 3,
        sessions_total: 7,
        directions: 6,
        kernel_directions: 2,
        ports_used: 12,
        ports_free: 88,
        ..MetricsSnapshot::default()
    };
    snap.closed.timeout = 4;
    snap.dataplane.rx_packets = 1_000;
    snap.dataplane.kernel_forwarded = 400;
    snap.dataplane.drop_source = 5;
    snap.worker_packets = vec![600, 400];
    let mut offer = RequestStat {
        request: "offer",
        count: 2,
        seconds: 0.0003,
        ..RequestStat::default()
    };
    offer.buckets[1] = 1; // <= 100 µs
    offer.buckets[2] = 1; // <= 250 µs
    snap.requests = vec![offer];
    let text = render(snap);
    for (name, want) in [
        ("rtpanchor_sessions", 3.0),
        ("rtpanchor_sessions_total", 7.0),
        ("rtpanchor_closed_sessions_total{reason=\"timeout\"}", 4.0),
        ("rtpanchor_mediastreams{type=\"userspace\"}", 4.0),
        ("rtpanchor_mediastreams{type=\"kernel\"}", 2.0),
        ("rtpanchor_packets_total{type=\"userspace\"}", 600.0),
        ("rtpanchor_packets_total{type=\"kernel\"}", 400.0),
        ("rtpanchor_packet_errors_total{type=\"userspace\"}", 5.0),
        ("rtpanchor_dataplane_drops_total{reason=\"source\"}", 5.0),
        ("rtpanchor_worker_packets_total{worker=\"1\"}", 400.0),
        ("rtpanchor_requests_total{request=\"offer\"}", 2.0),
        ("rtpanchor_request_seconds_total{request=\"offer\"}", 0.0003),
        (
            "rtpanchor_request_duration_seconds_bucket{request=\"offer\",le=\"5e-05\"}",
            0.0,
        ),
        (
            "rtpanchor_request_duration_seconds_bucket{request=\"offer\",le=\"0.0001\"}",
            1.0,
        ),
        (
            "rtpanchor_request_duration_seconds_bucket{request=\"offer\",le=\"0.00025\"}",
            2.0,
        ),
        (
            "rtpanchor_request_duration_seconds_count{request=\"offer\"}",
            2.0,
        ),
        ("rtpanchor_ports_free", 88.0),
        ("rtpanchor_kernel_path{state=\"running\"}", 1.0),
    ] {
        assert_eq!(series(&text, name), Some(want), "{name} in\n{text}");
    }
    // No SIP figures without the proxy, no sampled triples without a producer.
    assert!(!text.contains("rtpanchor_sip_"), "{text}");
    assert!(!text.contains("mos"), "{text}");
}

#[test]
fn sample_triples_and_sip_when_present() {
    let snap = MetricsSnapshot {
        samples: vec![SampleTriple {
            name: "mos",
            help: "Sum of MOS samples.",
            total: 8.6,
            total2: 36.98,
            samples: 2,
        }],
        sip: Some(SipMetrics {
            responses_by_class: [0, 1, 2, 0, 3, 0, 0],
            rejected: vec![("parse_error", 4)],
            connections_made: vec![("tls_accepted", 2)],
            transport_errors: 5,
            flows_failed: 6,
            forwarded: vec![("stateless", 7)],
            retransmissions: vec![("absorbed", 8)],
            sent: vec![("tls", 9)],
            auth: vec![("challenge", 10)],
            media: vec![("parked", 11)],
            send_errors: 12,
            panics: 13,
            ..SipMetrics::default()
        }),
        kernel: KernelPathState::Disabled,
        directions: 4,
        ..MetricsSnapshot::default()
    };
    let text = render(snap);
    for (name, want) in [
        ("rtpanchor_mos_total", 8.6),
        ("rtpanchor_mos2_total", 36.98),
        ("rtpanchor_mos_samples_total", 2.0),
        ("rtpanchor_sip_responses_sent_total{class=\"4xx\"}", 3.0),
        ("rtpanchor_sip_rejected_total{reason=\"parse_error\"}", 4.0),
        (
            "rtpanchor_sip_connections_made_total{how=\"tls_accepted\"}",
            2.0,
        ),
        ("rtpanchor_kernel_path_excluded{reason=\"disabled\"}", 4.0),
        ("rtpanchor_sip_transport_errors_total", 5.0),
        ("rtpanchor_sip_flows_failed_total", 6.0),
        ("rtpanchor_sip_forwarded_total{kind=\"stateless\"}", 7.0),
        (
            "rtpanchor_sip_retransmissions_total{direction=\"absorbed\"}",
            8.0,
        ),
        ("rtpanchor_sip_messages_sent_total{transport=\"tls\"}", 9.0),
        ("rtpanchor_sip_auth_total{result=\"challenge\"}", 10.0),
        ("rtpanchor_sip_media_total{what=\"parked\"}", 11.0),
        ("rtpanchor_sip_send_errors_total", 12.0),
        ("rtpanchor_sip_panics_total", 13.0),
    ] {
        assert_eq!(series(&text, name), Some(want), "{name} in\n{text}");
    }
}
