//! The stored form of a call and of a registration: versioned JSON, one record per call.
//!
//! # Format (version 1)
//!
//! A call is kept under the key `rtpanchor:call:<Call-ID>` as a Redis hash with two fields:
//!
//! - `record`: a [`CallRecord`], rewritten whenever the call's signalling or latching changes
//!   (offer, answer, delete of a branch, a learned or confirmed endpoint);
//! - `stats`: a [`StatsRecord`], the packet counters and the newest packet time, rewritten at
//!   most once per sweep round (about a second) while media flows.
//!
//! A registration is kept under `rtpanchor:reg:<address-of-record>` as a string holding a
//! [`RegistrationRecord`], expiring with its last binding.
//!
//! # Registrations (version 2)
//!
//! A [`RegistrationRecord`] is written with [`REGISTRATION_VERSION`] 2: each binding also
//! says which transport its REGISTER came over (`"udp"`, `"tcp"`, `"tls"`) and, as `path`,
//! the SIP address of the front (the rtpanchor process) that took it and holds the phone's
//! connection, like an RFC 3327 Path entry, and `nat: true` when the REGISTER showed NAT
//! evidence (its top Via differed from its source: the phone is reached at `source`); absent
//! means none, so older version-2 records read the same. Version-1 registrations (none of
//! these fields) are still read: their bindings count as UDP, held by no front in particular.
//!
//! Every registration change is also published on the channel [`REG_CHANNEL`] as a
//! [`RegistrationNotice`], so that the other fronts sharing the store apply it at once
//! (`store::share`).
//!
//! Times are Unix nanoseconds (`0` = never), so a restarted process (whose monotonic clock
//! starts anew) can place them. Every record carries `v`; a reader refuses a version it does
//! not know rather than guess. Addresses are `IP:PORT` strings (`[v6]:port` for IPv6).
//! Enumerations are their lower-case names (`"symmetric"`, `"sendrecv"`, `"a"`).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::sip::transport::Transport;

/// The version of call and stats records this build writes and the only one it reads.
pub const RECORD_VERSION: u32 = 1;
/// The version of registration records this build writes; it reads this one and version 1.
pub const REGISTRATION_VERSION: u32 = 2;
/// The oldest registration record version still read.
pub const REGISTRATION_MIN_VERSION: u32 = 1;
/// The Redis channel registration changes are published on.
pub const REG_CHANNEL: &str = "rtpanchor:reg-changes";

/// The Redis channel changes of presence state shared between fronts are published on.
pub const PRESENCE_CHANNEL: &str = "rtpanchor:presence-changes";
/// The version of [`PresenceNotice`]s this build writes and reads.
pub const PRESENCE_NOTICE_VERSION: u32 = 1;

/// Key prefix of a call's hash.
pub const CALL_KEY_PREFIX: &str = "rtpanchor:call:";
/// Key prefix of a registration.
pub const REG_KEY_PREFIX: &str = "rtpanchor:reg:";
/// Presence records (publications, subscriptions, stored messages) in Redis: this prefix,
/// then the record's own key (`presentity:AOR`, `subscription:ID`, `messages:AOR`), which
/// a SIP front sharing the store writes under its own name (`front/<front>/presentity:AOR`,
/// see `store::presence::scoped_key`).
pub const PRESENCE_KEY_PREFIX: &str = "rtpanchor:presence:";
/// Hash field holding the [`CallRecord`].
pub const FIELD_RECORD: &str = "record";
/// Hash field holding the [`StatsRecord`].
pub const FIELD_STATS: &str = "stats";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("malformed record: {0}")]
    Malformed(String),
    #[error("record version {0} is not supported by this build")]
    Version(u32),
}

/// A call: its legs, dialogues and every m= line with both ends and the relay ports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub v: u32,
    pub call_id: String,
    pub created_unix_ns: u64,
    pub last_signal_unix_ns: u64,
    pub legs: Vec<LegRecord>,
    pub dialogues: Vec<DialogueRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LegRecord {
    pub tag: String,
    pub label: Option<String>,
    pub created_unix_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DialogueRecord {
    pub a_tag: String,
    pub b_tag: Option<String>,
    pub via_branch: Option<String>,
    /// `"a"` or `"b"`: who sent the latest offer.
    pub offerer: String,
    pub answered: bool,
    pub created_unix_ns: u64,
    pub media: Vec<MediaRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaRecord {
    pub index: u32,
    pub kind: String,
    pub proto: String,
    pub label: Option<String>,
    /// The rtcp-mux policy of the latest offer (`"passthrough"`, `"offer"`, `"require"`,
    /// `"demux"`, `"accept"`, `"reject"`).
    pub mux_policy: String,
    pub mux_offered: bool,
    pub a: EndRecord,
    pub b: EndRecord,
    /// The relay ports, when the line is relayed.
    pub stream: Option<StreamRecord>,
}

/// One end of one m= line: what its SDP said and what the relay learned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndRecord {
    /// RTP and RTCP addresses from the SDP (none while unknown or on hold).
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
    pub rtcp_mux: bool,
    /// `"symmetric"`, `"strict-source"`, `"media-handover"` or `"asymmetric"`.
    pub latch: String,
    /// Dynamic payload types' clock rates: `[pt, hz]`.
    pub clock_rates: Vec<(u8, u32)>,
    /// The address the SDP named, hold address included.
    pub advertised: Option<SocketAddr>,
    pub direction: Option<String>,
    pub known: bool,
    pub mux_in_sdp: bool,
    pub ipv6: bool,
    pub relay_local: Option<IpAddr>,
    /// The source the relay latched onto (RTP), and whether it was confirmed.
    pub learned: Option<SocketAddr>,
    pub confirmed: bool,
}

/// The relay ports of one stream: A's RTP port (RTCP is the next one) and B's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub a_port: u16,
    pub b_port: u16,
}

/// Counters of one relay socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRecord {
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// A call's counters: per stream (by A's RTP port), the four sockets in the order A RTP,
/// A RTCP, B RTP, B RTCP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsRecord {
    pub v: u32,
    pub last_packet_unix_ns: u64,
    pub streams: Vec<(u16, [CounterRecord; 4])>,
}

/// The bindings of one address of record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationRecord {
    pub v: u32,
    pub aor: String,
    pub bindings: Vec<BindingRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// The Contact URI as registered.
    pub contact: String,
    /// Where the REGISTER came from (requests to the phone go there, NAT included).
    pub source: SocketAddr,
    pub expires_unix_ns: u64,
    /// `q` in thousandths, if given.
    pub q: Option<u16>,
    pub call_id: String,
    pub cseq: u32,
    /// The transport the REGISTER came over (version 2; UDP in version 1).
    #[serde(default = "udp")]
    pub transport: Transport,
    /// The SIP URI of the front holding the binding's flow (version 2), e.g.
    /// `sip:192.0.2.10:5060`: a binding made over TCP or TLS is reached only through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Registered with RFC 5626 outbound (`reg-id` and `+sip.instance`): when its flow is
    /// gone, requests get 430 Flow Failed instead of a new connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outbound: bool,
    /// NAT evidence at the REGISTER (its top Via differed from its source): reach the
    /// phone at `source`, not at `contact` (absent: none; older writers never set it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub nat: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn udp() -> Transport {
    Transport::Udp
}

/// A registration change as published on [`REG_CHANNEL`]: who wrote it (`origin`, a token
/// of the writing process, so a front skips its own), the address of record, and its
/// [`RegistrationRecord`] as stored (`None`: no binding left).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationNotice {
    pub v: u32,
    pub origin: String,
    pub aor: String,
    pub record: Option<String>,
}

/// A change of a front's presence records as published on [`PRESENCE_CHANNEL`]: who wrote
/// it (`origin`, as in [`RegistrationNotice`]), the record's key (without
/// [`PRESENCE_KEY_PREFIX`]) and the record as stored (`None`: deleted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceNotice {
    pub v: u32,
    pub origin: String,
    pub key: String,
    pub record: Option<String>,
}

/// Reads the version first, so a newer record is refused by its version, not by a field.
fn check_version(json: &str, read: std::ops::RangeInclusive<u32>) -> Result<(), RecordError> {
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let v: Version =
        serde_json::from_str(json).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if !read.contains(&v.v) {
        return Err(RecordError::Version(v.v));
    }
    Ok(())
}

fn parse_versions<T: for<'de> Deserialize<'de>>(
    json: &str,
    read: std::ops::RangeInclusive<u32>,
) -> Result<T, RecordError> {
    check_version(json, read)?;
    serde_json::from_str(json).map_err(|e| RecordError::Malformed(e.to_string()))
}

fn parse<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, RecordError> {
    parse_versions(json, RECORD_VERSION..=RECORD_VERSION)
}

fn emit<T: Serialize>(r: &T) -> String {
    // Plain structs of strings, numbers and addresses: serialising cannot fail.
    serde_json::to_string(r).unwrap_or_default()
}

impl CallRecord {
    pub fn parse(json: &str) -> Result<CallRecord, RecordError> {
        parse(json)
    }
    pub fn emit(&self) -> String {
        emit(self)
    }

    /// Whether the call's relay ports are on another relay: some relayed m= line names the
    /// local address it was bound on and none of those is in `own` (the relays of a set
    /// sharing one store each restore only their own calls). A record naming no address is
    /// taken as ours.
    pub fn relayed_elsewhere(&self, own: &[IpAddr]) -> bool {
        let mut named = self
            .dialogues
            .iter()
            .flat_map(|d| &d.media)
            .filter(|m| m.stream.is_some())
            .flat_map(|m| [m.a.relay_local, m.b.relay_local])
            .flatten()
            .peekable();
        named.peek().is_some() && !named.any(|ip| own.contains(&ip))
    }
}

impl StatsRecord {
    pub fn parse(json: &str) -> Result<StatsRecord, RecordError> {
        parse(json)
    }
    pub fn emit(&self) -> String {
        emit(self)
    }
}

impl RegistrationRecord {
    /// Reads a version-1 or version-2 record.
    pub fn parse(json: &str) -> Result<RegistrationRecord, RecordError> {
        parse_versions(json, REGISTRATION_MIN_VERSION..=REGISTRATION_VERSION)
    }
    pub fn emit(&self) -> String {
        emit(self)
    }
}

impl RegistrationNotice {
    pub fn parse(json: &str) -> Result<RegistrationNotice, RecordError> {
        parse_versions(json, REGISTRATION_VERSION..=REGISTRATION_VERSION)
    }
    pub fn emit(&self) -> String {
        emit(self)
    }
}

impl PresenceNotice {
    pub fn parse(json: &str) -> Result<PresenceNotice, RecordError> {
        parse_versions(json, PRESENCE_NOTICE_VERSION..=PRESENCE_NOTICE_VERSION)
    }
    pub fn emit(&self) -> String {
        emit(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end() -> EndRecord {
        EndRecord {
            rtp: Some("10.0.0.1:4000".parse().unwrap()),
            rtcp: Some("10.0.0.1:4001".parse().unwrap()),
            rtcp_mux: false,
            latch: "symmetric".into(),
            clock_rates: vec![(96, 48000)],
            advertised: Some("10.0.0.1:4000".parse().unwrap()),
            direction: Some("sendrecv".into()),
            known: true,
            mux_in_sdp: false,
            ipv6: false,
            relay_local: Some("127.0.0.1".parse().unwrap()),
            learned: Some("[2001:db8::1]:5000".parse().unwrap()),
            confirmed: true,
        }
    }

    #[test]
    fn call_record_round_trips() {
        let r = CallRecord {
            v: RECORD_VERSION,
            call_id: "c\"1".into(),
            created_unix_ns: 1,
            last_signal_unix_ns: 2,
            legs: vec![LegRecord {
                tag: "x".into(),
                label: None,
                created_unix_ns: 1,
            }],
            dialogues: vec![DialogueRecord {
                a_tag: "x".into(),
                b_tag: Some("y".into()),
                via_branch: None,
                offerer: "a".into(),
                answered: true,
                created_unix_ns: 1,
                media: vec![MediaRecord {
                    index: 1,
                    kind: "audio".into(),
                    proto: "RTP/AVP".into(),
                    label: None,
                    mux_policy: "passthrough".into(),
                    mux_offered: false,
                    a: end(),
                    b: end(),
                    stream: Some(StreamRecord {
                        a_port: 30000,
                        b_port: 30002,
                    }),
                }],
            }],
        };
        let json = r.emit();
        assert!(json.starts_with("{\"v\":1,"), "{json}");
        assert_eq!(CallRecord::parse(&json).unwrap(), r);
        // Its ports are on 127.0.0.1: ours there, another relay's elsewhere.
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.222.0.12".parse().unwrap();
        assert!(!r.relayed_elsewhere(&[other, here]));
        assert!(r.relayed_elsewhere(&[other]));
        // Nothing relayed names an address: taken as ours.
        let mut bare = r.clone();
        bare.dialogues[0].media[0].stream = None;
        assert!(!bare.relayed_elsewhere(&[other]));
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let s = StatsRecord {
            v: 2,
            ..StatsRecord::default()
        };
        assert_eq!(StatsRecord::parse(&s.emit()), Err(RecordError::Version(2)));
        assert!(matches!(
            CallRecord::parse("{\"v\":1}"),
            Err(RecordError::Malformed(_))
        ));
        assert!(matches!(
            CallRecord::parse("\u{0}[[["),
            Err(RecordError::Malformed(_))
        ));
    }

    #[test]
    fn version_1_registrations_are_read_as_udp_without_a_front() {
        let old = "{\"v\":1,\"aor\":\"sip:bob@example.com\",\"bindings\":[{\"contact\":\
                   \"sip:bob@10.0.0.5:5062\",\"source\":\"203.0.113.9:40000\",\
                   \"expires_unix_ns\":5,\"q\":null,\"call_id\":\"r1\",\"cseq\":2}]}";
        let r = RegistrationRecord::parse(old).unwrap();
        assert_eq!(r.v, 1);
        assert_eq!(r.bindings[0].transport, Transport::Udp);
        assert_eq!(r.bindings[0].path, None);
        // Version 2 carries both, and round-trips.
        let mut r2 = r.clone();
        r2.v = REGISTRATION_VERSION;
        r2.bindings[0].transport = Transport::Tcp;
        r2.bindings[0].path = Some("sip:192.0.2.10:5060".into());
        let json = r2.emit();
        assert!(json.contains("\"transport\":\"tcp\""), "{json}");
        assert_eq!(RegistrationRecord::parse(&json).unwrap(), r2);
        // A newer version is refused, not guessed at.
        let newer = json.replacen("{\"v\":2,", "{\"v\":3,", 1);
        assert_eq!(
            RegistrationRecord::parse(&newer),
            Err(RecordError::Version(3))
        );
    }

    #[test]
    fn notices_round_trip() {
        let n = RegistrationNotice {
            v: REGISTRATION_VERSION,
            origin: "p1".into(),
            aor: "sip:bob@example.com".into(),
            record: None,
        };
        assert_eq!(RegistrationNotice::parse(&n.emit()).unwrap(), n);
        assert!(RegistrationNotice::parse("{\"v\":2}").is_err());
    }
}
