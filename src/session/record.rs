//! Call records: what is kept of a call when it ends, one JSON object per call (a "CDR"
//! line). Built by the session manager on the control plane from the counters the data plane
//! already publishes; written by `server::cdr` off the manager's lock.
//!
//! Per stream (m= line) and direction (`from` tag → `to` tag): the endpoint that sent and the
//! relay port it sent to, the SSRC, packets and bytes the relay received, loss (RFC 3550 A.3,
//! as the relay saw it), jitter (A.8, ms), and the MOS the receiving end's quality was
//! estimated at (`session::quality`: average and lowest; `null` without a sample), and how
//! much of it the in-kernel fast path relayed.

use serde::Serialize;

/// Why a call ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// ng `delete` (Kamailio's BYE/CANCEL/failure handling).
    #[default]
    Delete,
    /// A BYE or CANCEL through the built-in SIP proxy.
    Bye,
    /// No media (and no signalling) for the media timeout.
    Timeout,
    /// Ended by an operator (`rtpanchor ctl terminate`).
    Terminate,
    /// Still up when a drain's timeout ran out.
    Drain,
    /// Still up when the process stopped.
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Delete => "delete",
            EndReason::Bye => "bye",
            EndReason::Timeout => "timeout",
            EndReason::Terminate => "terminate",
            EndReason::Drain => "drain",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// One direction of one stream: what `from` sent toward `to` through the relay.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DirectionRecord {
    pub from_tag: String,
    pub to_tag: String,
    /// Where the sender's media came from (learned source, else its SDP address).
    pub from_endpoint: Option<String>,
    /// The relay port it sent RTP to.
    pub relay_port: Option<u16>,
    pub ssrc: u32,
    pub packets: u64,
    pub bytes: u64,
    pub packets_lost: i64,
    pub loss_percent: f64,
    pub jitter_ms: f64,
    pub max_jitter_ms: f64,
    pub rtcp_packets: u64,
    /// Packets received but not relayed (any drop reason).
    pub errors: u64,
    /// Of `packets`, those the in-kernel path relayed (the rest went through a worker), and
    /// their share in percent (0 without packets).
    pub kernel_packets: u64,
    pub kernel_percent: f64,
    /// Where the direction was relayed when the call ended (`in_kernel`) or why not there
    /// (`not_latched`, `taken_back`, `unsupported`, ...; `pending` without a fast path).
    pub kernel: &'static str,
    pub mos_average: Option<f64>,
    pub mos_lowest: Option<f64>,
    pub mos_samples: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StreamRecord {
    /// The m= line's 1-based index and kind.
    pub index: u32,
    pub kind: String,
    pub directions: Vec<DirectionRecord>,
}

/// A call as it ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CallRecord {
    pub call_id: String,
    pub tags: Vec<String>,
    /// Unix time in seconds (millisecond precision).
    pub start: f64,
    pub end: f64,
    pub duration: f64,
    pub end_reason: EndReason,
    pub streams: Vec<StreamRecord>,
}

impl CallRecord {
    /// The record as one line of JSON (no newline).
    pub fn to_json_line(&self) -> String {
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_every_field() {
        let r = CallRecord {
            call_id: "c\n1".into(),
            tags: vec!["a".into(), "b".into()],
            start: 1.5,
            end: 3.0,
            duration: 1.5,
            end_reason: EndReason::Timeout,
            streams: vec![StreamRecord {
                index: 1,
                kind: "audio".into(),
                directions: vec![DirectionRecord {
                    from_tag: "a".into(),
                    to_tag: "b".into(),
                    packets: 7,
                    ..DirectionRecord::default()
                }],
            }],
        };
        let line = r.to_json_line();
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["call_id"], "c\n1");
        assert_eq!(v["end_reason"], "timeout");
        assert_eq!(v["streams"][0]["directions"][0]["packets"], 7);
        assert!(v["streams"][0]["directions"][0]["mos_average"].is_null());
        assert_eq!(EndReason::Drain.as_str(), "drain");
    }
}
