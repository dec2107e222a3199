//! Readable renderings of `query` (one row per stream direction) and `statistics`.

use crate::control::bencode::Owned;

fn int(v: Option<&Owned>) -> i64 {
    v.and_then(Owned::as_int).unwrap_or(0)
}

fn text(v: Option<&Owned>) -> &str {
    v.and_then(Owned::as_str).unwrap_or("")
}

fn endpoint(v: Option<&Owned>) -> String {
    match v {
        Some(e) => format!("{}:{}", text(e.get("address")), int(e.get("port"))),
        None => "-".into(),
    }
}

/// The MOS entry (× 10) of `ssrc` in the reply's `SSRC` block, as "4.3" (the quality of what
/// that SSRC's sender hears).
fn mos(reply: &Owned, ssrc: i64) -> String {
    let m = reply
        .get("SSRC")
        .and_then(|s| s.get(&ssrc.to_string()))
        .and_then(|e| e.get("average MOS"))
        .and_then(|a| a.get("MOS"))
        .and_then(Owned::as_int);
    match m {
        Some(m) => format!("{}.{}", m / 10, m % 10),
        None => "-".into(),
    }
}

/// Where the stream is relayed: `in_kernel N` (packets the in-kernel path relayed), or why
/// not (`not_latched`, `taken_back`, ...), `-` from a relay that does not say.
fn kernel(rtp: &Owned) -> String {
    match rtp.get("kernel").and_then(Owned::as_str) {
        Some(k) => format!("{k} {}", int(rtp.get("kernel packets"))),
        None => "-".into(),
    }
}

/// `show CALL-ID`: per tag and media, the RTP stream the tag sends (ingress counters) and the
/// MOS of what it hears.
pub fn table(call_id: &str, reply: &Owned) -> String {
    let mut out = format!(
        "call {call_id}  created {}  RTP packets {}  RTCP packets {}\n",
        int(reply.get("created")),
        int(reply
            .get("totals")
            .and_then(|t| t.get("RTP"))
            .and_then(|r| r.get("packets"))),
        int(reply
            .get("totals")
            .and_then(|t| t.get("RTCP"))
            .and_then(|r| r.get("packets"))),
    );
    out.push_str(&format!(
        "{:<16} {:>5} {:<6} {:>10} {:<22} {:>9} {:>11} {:>6} {:>7} {:>5} {:>10} {}\n",
        "TAG",
        "MEDIA",
        "TYPE",
        "LOCAL",
        "ENDPOINT",
        "PACKETS",
        "BYTES",
        "LOST",
        "JITTER",
        "MOS",
        "SSRC",
        "KERNEL"
    ));
    let tags = reply.get("tags").and_then(Owned::as_dict).unwrap_or(&[]);
    for (tag, t) in tags {
        for m in t.get("medias").and_then(Owned::as_list).unwrap_or(&[]) {
            let Some(rtp) = m
                .get("streams")
                .and_then(Owned::as_list)
                .and_then(|s| s.first())
            else {
                continue;
            };
            let ssrc = int(rtp.get("SSRC"));
            out.push_str(&format!(
                "{:<16} {:>5} {:<6} {:>10} {:<22} {:>9} {:>11} {:>6} {:>5}ms {:>5} {:>10} {}\n",
                if tag.is_empty() { "(pending)" } else { tag },
                int(m.get("index")),
                text(m.get("type")),
                int(rtp.get("local port")),
                endpoint(rtp.get("endpoint")),
                int(rtp.get("stats").and_then(|s| s.get("packets"))),
                int(rtp.get("stats").and_then(|s| s.get("bytes"))),
                int(rtp.get("packets lost")),
                int(rtp.get("jitter")),
                mos(reply, ssrc),
                format!("{ssrc:#x}"),
                kernel(rtp),
            ));
        }
    }
    out
}

/// `stats`: every figure of `currentstatistics` and `totalstatistics`, one per line.
pub fn stats(reply: &Owned) -> String {
    let mut out = String::new();
    let s = reply.get("statistics");
    for section in ["currentstatistics", "totalstatistics"] {
        let Some(d) = s.and_then(|s| s.get(section)).and_then(Owned::as_dict) else {
            continue;
        };
        for (k, v) in d {
            match v {
                Owned::Int(i) => out.push_str(&format!("{k:<28} {i}\n")),
                Owned::Str(b) => out.push_str(&format!("{k:<28} {}\n", String::from_utf8_lossy(b))),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_row_per_tag_stream() {
        let rtp = Owned::dict()
            .with("local port", 30000u64)
            .with(
                "endpoint",
                Owned::dict()
                    .with("address", "127.0.0.1")
                    .with("port", 6000u64),
            )
            .with("SSRC", 0xabcu64)
            .with(
                "stats",
                Owned::dict().with("packets", 50u64).with("bytes", 8600u64),
            )
            .with("packets lost", 2u64)
            .with("jitter", 3u64)
            .with("kernel", "in_kernel")
            .with("kernel packets", 40u64);
        let media = Owned::dict()
            .with("index", 1u64)
            .with("type", "audio")
            .with("streams", Owned::List(vec![rtp]));
        let reply = Owned::dict()
            .with(
                "SSRC",
                Owned::dict().with(
                    "2748",
                    Owned::dict().with("average MOS", Owned::dict().with("MOS", 43u64)),
                ),
            )
            .with(
                "tags",
                Owned::dict().with(
                    "alice",
                    Owned::dict().with("medias", Owned::List(vec![media])),
                ),
            );
        let t = table("c1", &reply);
        let row = t.lines().find(|l| l.starts_with("alice")).unwrap();
        assert!(row.ends_with("in_kernel 40"), "{row}");
        for want in [
            "30000",
            "127.0.0.1:6000",
            "50",
            "8600",
            "3ms",
            "4.3",
            "0xabc",
        ] {
            assert!(row.contains(want), "{want} not in {row}");
        }
    }
}
