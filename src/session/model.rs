//! The call model: what the session layer remembers about a call between signals.
//!
//! ```text
//! Call (Call-ID)
//!  ├─ legs: one per known tag (label, creation time)
//!  └─ dialogues: one per offer/answer relationship between two legs
//!      ├─ a_tag: the leg that sent the first offer (side A of every stream below)
//!      ├─ b_tag: the other leg; None while an offer waits for an answer that names it
//!      ├─ via_branch: set when the offer was forked with a via-branch (one dialogue per branch)
//!      └─ media: one slot per m= line (index, kind, proto, both ends' SDP data, stream)
//! ```
//!
//! Relations are by value (tags, indices, [`StreamId`]s), never pointers. Memory per call is
//! bounded: at most [`MAX_DIALOGUES`] dialogues, each with at most `sdp::MAX_MEDIA` slots, and
//! no history of past signals is kept (only the latest state of each end).

use std::sync::Arc;

use crate::addr::PackedAddr;
use crate::sdp::Direction;
use crate::session::backend::{EndpointSpec, OpenedStream, Side};
use crate::session::local_ip::LocalIp;
use crate::session::slim::SlimVec;
use crate::time::Nanos;

/// Most dialogues (fork branches) one call may hold; an offer beyond it is refused.
pub const MAX_DIALOGUES: usize = 16;
/// Longest tag, label or via-branch we store (longer values are refused).
pub const MAX_TOKEN_LEN: usize = 256;

/// rtcp-mux negotiation policy of one offer (ng `rtcp-mux` list; RFC 5761 §5.1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RtcpMuxPolicy {
    /// Offer rtcp-mux to the answerer exactly when the offerer did.
    #[default]
    Passthrough,
    /// Offer rtcp-mux to the answerer even if the offerer did not.
    Offer,
    /// Like `Offer`; the answerer is expected to mux.
    Require,
    /// Accept the offerer's rtcp-mux ourselves, never offer it to the answerer.
    Demux,
    /// Accept the offerer's rtcp-mux ourselves; offer it on as the offerer did.
    Accept,
    /// Refuse the offerer's rtcp-mux (our answer tells it not to mux); the answerer is
    /// offered mux as the offerer did, as rtpengine's `reject` does.
    Reject,
}

impl RtcpMuxPolicy {
    /// Whether the SDP sent to the answerer carries `a=rtcp-mux`.
    pub fn toward_answerer(self, offered: bool) -> bool {
        match self {
            RtcpMuxPolicy::Passthrough | RtcpMuxPolicy::Accept | RtcpMuxPolicy::Reject => offered,
            RtcpMuxPolicy::Offer | RtcpMuxPolicy::Require => true,
            RtcpMuxPolicy::Demux => false,
        }
    }

    /// Whether the offerer muxes once the answer is known (what our answer tells it).
    pub fn offerer_final(self, offered: bool, answerer_muxes: bool) -> bool {
        match self {
            RtcpMuxPolicy::Passthrough | RtcpMuxPolicy::Offer | RtcpMuxPolicy::Require => {
                offered && answerer_muxes
            }
            RtcpMuxPolicy::Demux | RtcpMuxPolicy::Accept => offered,
            RtcpMuxPolicy::Reject => false,
        }
    }
}

/// One end (leg) of one media line, as its latest SDP described it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MediaEnd {
    /// What the data plane is told (no destination while unknown or on hold).
    pub endpoint: EndpointSpec,
    /// The address the SDP named, hold (0.0.0.0) included: query's `advertised endpoint`.
    pub advertised: PackedAddr,
    pub direction: Option<Direction>,
    /// This end has sent SDP for this media (offer or answer).
    pub known: bool,
    /// This end's SDP carried `a=rtcp-mux`.
    pub mux_in_sdp: bool,
    /// The family this end spoke in its SDP (IPv6 or not), to answer in kind.
    pub ipv6: bool,
    /// The relay address (bound, not advertised) this end was told to send to: one byte
    /// (see [`LocalIp`]), not 17 (memory per held call).
    pub relay_local: LocalIp,
}

impl MediaEnd {
    /// Sets whether this end muxes RTCP (its unmuxed RTCP address is kept for a later
    /// re-offer without mux).
    pub fn set_mux(&mut self, mux: bool) {
        self.endpoint.rtcp_mux = mux;
    }
}

/// One m= line of a dialogue.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaSlot {
    /// 1-based position of the m= line (rtpengine's `index`).
    pub index: u32,
    /// Media type, transport protocol and `a=label` (RFC 4574, for query), in one
    /// allocation: a media slot is kept per stream (memory per stream).
    pub names: MediaNames,
    /// `None`: rejected (port 0) or not relayed; the SDP passes such a line unchanged.
    pub stream: Option<OpenedStream>,
    pub a: MediaEnd,
    pub b: MediaEnd,
    /// rtcp-mux policy of the latest offer and whether its offerer offered mux.
    pub mux_policy: RtcpMuxPolicy,
    pub mux_offered: bool,
}

/// An m= line's media type, transport protocol and label (`audio`, `RTP/AVP`, `main`) in
/// one boxed string, `"audio RTP/AVP"` or `"audio RTP/AVP main"`: 16 bytes and one
/// allocation, not three boxed strings' 48 bytes and three allocations (memory per held
/// call, issue 19). Type and protocol are tokens of the m= line, split on white space by the
/// SDP parser, so neither holds a space; one that does (a restored record's) has its spaces
/// stored as `_`, so the three always come back apart. The label is the rest after the
/// second space (it may hold spaces); with no second space there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaNames(Box<str>);

/// `text` with its spaces as `_`, appended to `to`.
fn push_token(to: &mut String, text: &str) {
    to.extend(text.chars().map(|c| if c == ' ' { '_' } else { c }));
}

impl MediaNames {
    pub fn new(kind: &str, proto: &str) -> MediaNames {
        Self::labelled(kind, proto, None)
    }

    pub fn labelled(kind: &str, proto: &str, label: Option<&str>) -> MediaNames {
        let extra = label.map_or(0, |l| 1 + l.len());
        let mut text = String::with_capacity(kind.len() + 1 + proto.len() + extra);
        push_token(&mut text, kind);
        text.push(' ');
        push_token(&mut text, proto);
        if let Some(l) = label {
            text.push(' ');
            text.push_str(l);
        }
        MediaNames(text.into_boxed_str())
    }

    /// The same type and protocol with this label.
    pub fn with_label(&self, label: Option<&str>) -> MediaNames {
        Self::labelled(self.kind(), self.proto(), label)
    }

    /// The media type (`audio`, `video`, ...).
    pub fn kind(&self) -> &str {
        self.0.split_once(' ').map_or(&*self.0, |(k, _)| k)
    }

    fn rest(&self) -> &str {
        self.0.split_once(' ').map_or("", |(_, r)| r)
    }

    /// The transport protocol (`RTP/AVP`, ...).
    pub fn proto(&self) -> &str {
        let rest = self.rest();
        rest.split_once(' ').map_or(rest, |(p, _)| p)
    }

    /// The m= line's `a=label`, if it had one.
    pub fn label(&self) -> Option<&str> {
        self.rest().split_once(' ').map(|(_, l)| l)
    }
}

impl MediaSlot {
    pub fn kind(&self) -> &str {
        self.names.kind()
    }

    pub fn proto(&self) -> &str {
        self.names.proto()
    }

    /// `a=label` of the m= line (RFC 4574), for query.
    pub fn label(&self) -> Option<&str> {
        self.names.label()
    }

    pub fn end(&self, side: Side) -> &MediaEnd {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    pub fn end_mut(&mut self, side: Side) -> &mut MediaEnd {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }
}

/// A string and an optional second one in one allocation (what a leg's tag and label, and
/// a dialogue's A tag and via-branch, are kept as: memory per held call).
fn joined(head: &str, tail: Option<&str>) -> Box<str> {
    let mut text = String::with_capacity(head.len() + tail.map_or(0, str::len));
    text.push_str(head);
    text.push_str(tail.unwrap_or_default());
    text.into_boxed_str()
}

/// The two parts of a [`joined`] string whose head is `head_len` bytes long.
fn split_joined(text: &str, head_len: usize, has_tail: bool) -> (&str, Option<&str>) {
    let head = text.get(..head_len).unwrap_or(text);
    let tail = has_tail.then(|| text.get(head_len..).unwrap_or_default());
    (head, tail)
}

/// An offer/answer relationship between two legs.
#[derive(Clone, Debug, PartialEq)]
pub struct Dialogue {
    /// Side A's tag, then the offer's via-branch if it had one, in one boxed string: both
    /// are fixed when the dialogue is made, and one allocation and 16 bytes less a dialogue
    /// (64, not 80) than two boxed strings (memory per held call, issue 19). See
    /// [`Dialogue::a_tag`] and [`Dialogue::via_branch`].
    a_text: Box<str>,
    a_len: u16,
    has_via: bool,
    /// Boxed (16 bytes, not 24): kept per call (memory per call).
    pub b_tag: Option<Box<str>>,
    /// Who sent the latest offer.
    pub offerer: Side,
    /// The latest offer has been answered.
    pub answered: bool,
    /// At its exact length (see [`SlimVec`]): 80 bytes a dialogue, not 88.
    pub media: SlimVec<MediaSlot>,
    pub created_ns: Nanos,
}

impl Dialogue {
    /// A dialogue that `a_tag` opened with an offer (forked with `via_branch`, if given):
    /// no B tag, nothing answered, no media yet. Tags and branches are at most
    /// [`MAX_TOKEN_LEN`] bytes (longer ones are refused before).
    pub fn new(a_tag: &str, via_branch: Option<&str>, offerer: Side, created_ns: Nanos) -> Self {
        Dialogue {
            a_text: joined(a_tag, via_branch),
            a_len: u16::try_from(a_tag.len()).unwrap_or(u16::MAX),
            has_via: via_branch.is_some(),
            b_tag: None,
            offerer,
            answered: false,
            media: SlimVec::new(),
            created_ns,
        }
    }

    /// Side A's tag: the leg that sent the first offer.
    pub fn a_tag(&self) -> &str {
        split_joined(&self.a_text, usize::from(self.a_len), self.has_via).0
    }

    /// The via-branch the first offer was forked with.
    pub fn via_branch(&self) -> Option<&str> {
        split_joined(&self.a_text, usize::from(self.a_len), self.has_via).1
    }

    /// The tag of a side (`None`: B not named yet).
    pub fn tag(&self, side: Side) -> Option<&str> {
        match side {
            Side::A => Some(self.a_tag()),
            Side::B => self.b_tag.as_deref(),
        }
    }

    /// The side a tag is on in this dialogue.
    pub fn side_of(&self, tag: &str) -> Option<Side> {
        if self.a_tag() == tag {
            Some(Side::A)
        } else if self.b_tag.as_deref() == Some(tag) {
            Some(Side::B)
        } else {
            None
        }
    }

    /// True when the two tags are this dialogue's two legs, in either order.
    pub fn joins(&self, t1: &str, t2: &str) -> bool {
        match &self.b_tag {
            Some(b) => {
                let (a, b) = (self.a_tag(), &**b);
                (a == t1 && b == t2) || (a == t2 && b == t1)
            }
            None => false,
        }
    }

    /// Open streams of this dialogue.
    pub fn streams(&self) -> impl Iterator<Item = &OpenedStream> {
        self.media.iter().filter_map(|m| m.stream.as_ref())
    }
}

/// A participant of a call, known by its SIP tag. The tag and its label (ng `label`, rare)
/// share one boxed string: 32 bytes a leg, not 40, and one allocation (memory per held
/// call, issue 19).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    /// The tag, then the label if there is one.
    text: Box<str>,
    tag_len: u32,
    has_label: bool,
    pub created_ns: Nanos,
}

impl Leg {
    pub fn new(tag: &str, label: Option<&str>, created_ns: Nanos) -> Leg {
        Leg {
            text: joined(tag, label),
            tag_len: u32::try_from(tag.len()).unwrap_or(u32::MAX),
            has_label: label.is_some(),
            created_ns,
        }
    }

    pub fn tag(&self) -> &str {
        split_joined(&self.text, self.tag_len as usize, self.has_label).0
    }

    pub fn label(&self) -> Option<&str> {
        split_joined(&self.text, self.tag_len as usize, self.has_label).1
    }
}

#[derive(Clone, Debug)]
pub struct Call {
    pub id: Arc<str>,
    pub created_ns: Nanos,
    pub last_signal_ns: Nanos,
    /// At their exact lengths (see [`SlimVec`]): 96 bytes a call, not 112.
    pub legs: SlimVec<Leg>,
    pub dialogues: SlimVec<Dialogue>,
    /// What only calls kept in a state store use ([`StoreTimes`]), made when first set: 8
    /// bytes a call, not 24 (memory per held call, issue 19).
    store_times: Option<Box<StoreTimes>>,
}

/// A call's times for the state store: all zero for a call never stored or restored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreTimes {
    /// Newest packet time whose counters went to the state store.
    pub stored_seen_ns: Nanos,
    /// For a call restored from the store: when (this process's clock), and how long it had
    /// been idle before (counted toward its media timeout until media or a signal comes).
    pub restored_ns: Nanos,
    pub restored_idle_ns: Nanos,
}

impl Call {
    pub fn new(id: Arc<str>, now: Nanos) -> Call {
        Call {
            id,
            created_ns: now,
            last_signal_ns: now,
            legs: SlimVec::new(),
            dialogues: SlimVec::new(),
            store_times: None,
        }
    }

    /// The call's state-store times (zeros when it has none).
    pub fn store_times(&self) -> StoreTimes {
        self.store_times.as_deref().copied().unwrap_or_default()
    }

    /// The call's state-store times to change, made on first use.
    pub fn store_times_mut(&mut self) -> &mut StoreTimes {
        self.store_times.get_or_insert_with(Box::default)
    }

    pub fn leg(&self, tag: &str) -> Option<&Leg> {
        self.legs.iter().find(|l| l.tag() == tag)
    }

    /// Records a tag (and its label, when given) as a leg of the call.
    pub fn touch_leg(&mut self, tag: &str, label: Option<&str>, now: Nanos) {
        match self.legs.iter_mut().find(|l| l.tag() == tag) {
            Some(leg) => {
                if label.is_some() && leg.label() != label {
                    *leg = Leg::new(tag, label, leg.created_ns);
                }
            }
            None => self.legs.push(Leg::new(tag, label, now)),
        }
    }

    /// True when `tag` takes part in any dialogue.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.dialogues.iter().any(|d| d.side_of(tag).is_some())
    }

    /// Every open stream of the call.
    pub fn streams(&self) -> impl Iterator<Item = &OpenedStream> {
        self.dialogues.iter().flat_map(Dialogue::streams)
    }

    /// Drops legs that no dialogue refers to any more (after a branch delete or re-target).
    pub fn prune_legs(&mut self) {
        let dialogues = &self.dialogues;
        self.legs
            .retain(|l| dialogues.iter().any(|d| d.side_of(l.tag()).is_some()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialogue(a: &str, b: Option<&str>) -> Dialogue {
        Dialogue {
            b_tag: b.map(Into::into),
            ..Dialogue::new(a, None, Side::A, 0)
        }
    }

    #[test]
    fn a_tag_and_via_branch_come_back_apart() {
        let d = Dialogue::new("from-tag", Some("z9hG4bK-1"), Side::A, 7);
        assert_eq!((d.a_tag(), d.via_branch()), ("from-tag", Some("z9hG4bK-1")));
        let d = Dialogue::new("t", Some(""), Side::B, 0);
        assert_eq!(
            (d.a_tag(), d.via_branch(), d.offerer),
            ("t", Some(""), Side::B)
        );
        let d = Dialogue::new("é", None, Side::A, 0);
        assert_eq!((d.a_tag(), d.via_branch()), ("é", None));
        assert_eq!(d.side_of("é"), Some(Side::A));
    }

    #[test]
    fn sides_by_tag_in_either_order() {
        let d = dialogue("x", Some("y"));
        assert!(d.joins("x", "y") && d.joins("y", "x") && !d.joins("x", "z"));
        assert_eq!(d.side_of("y"), Some(Side::B));
        assert_eq!(d.side_of("q"), None);
        assert!(!dialogue("x", None).joins("x", "y"));
    }

    #[test]
    fn legs_are_unique_and_pruned() {
        let mut c = Call::new(Arc::from("c1"), 5);
        c.touch_leg("x", None, 5);
        c.touch_leg("x", Some("caller"), 6);
        c.touch_leg("gone", None, 6);
        assert_eq!(c.legs.len(), 2);
        assert_eq!(c.leg("x").unwrap().label(), Some("caller"));
        assert_eq!(c.leg("x").unwrap().tag(), "x");
        assert_eq!(c.leg("gone").unwrap().label(), None);
        let l = Leg::new("ab", Some(""), 3);
        assert_eq!((l.tag(), l.label(), l.created_ns), ("ab", Some(""), 3));
        c.dialogues.push(dialogue("x", None));
        c.prune_legs();
        assert_eq!(c.legs.len(), 1);
        assert!(c.has_tag("x") && !c.has_tag("gone"));
    }

    /// A media slot is kept per stream, dialogues and legs per call (memory per stream,
    /// issue 2); each bound is an allocator size class the measured figure relies on.
    #[test]
    fn per_stream_records_stay_within_their_size_class() {
        use std::mem::size_of;
        // 200 and 80 with the relay address as a one-byte `LocalIp` (240 and 96 with an
        // `Option<IpAddr>`) and a niche in `OpenedStream` (208 without).
        assert!(size_of::<MediaSlot>() <= 200, "{}", size_of::<MediaSlot>());
        assert_eq!(size_of::<Option<OpenedStream>>(), 16);
        assert!(size_of::<MediaEnd>() <= 80, "{}", size_of::<MediaEnd>());
        // 80 and 96 with their lists at exact length (`SlimVec`; 88 and 112 with `Vec`s); a
        // dialogue 64 with its A tag and via-branch in one string.
        assert!(size_of::<Dialogue>() <= 64, "{}", size_of::<Dialogue>());
        // 72 with the state store's times boxed (88 inline, 96 with `Vec`s).
        assert!(size_of::<Call>() <= 72, "{}", size_of::<Call>());
        // 32 with the label in the tag's allocation (40 with a boxed label of its own).
        assert!(size_of::<Leg>() <= 32, "{}", size_of::<Leg>());
    }

    #[test]
    fn media_names_split_where_they_were_joined() {
        use std::mem::size_of;
        let n = MediaNames::new("audio", "RTP/AVP");
        assert_eq!((n.kind(), n.proto()), ("audio", "RTP/AVP"));
        let n = MediaNames::new("", "UDP/TLS/RTP/SAVPF");
        assert_eq!((n.kind(), n.proto()), ("", "UDP/TLS/RTP/SAVPF"));
        let n = MediaNames::new("vidéo", "");
        assert_eq!((n.kind(), n.proto()), ("vidéo", ""));
        let n = MediaNames::new("a b", "c d");
        assert_eq!((n.kind(), n.proto(), n.label()), ("a_b", "c_d", None));
        assert_eq!(size_of::<MediaNames>(), 16);
        let n = MediaNames::labelled("audio", "RTP/AVP", Some("main one"));
        assert_eq!(
            (n.kind(), n.proto(), n.label()),
            ("audio", "RTP/AVP", Some("main one"))
        );
        let n = n.with_label(Some(""));
        assert_eq!(
            (n.kind(), n.proto(), n.label()),
            ("audio", "RTP/AVP", Some(""))
        );
        let n = n.with_label(None);
        assert_eq!((n.kind(), n.proto(), n.label()), ("audio", "RTP/AVP", None));
    }

    #[test]
    fn mux_policy_table() {
        use RtcpMuxPolicy::*;
        assert!(Passthrough.toward_answerer(true) && !Passthrough.toward_answerer(false));
        assert!(Offer.toward_answerer(false) && !Demux.toward_answerer(true));
        assert!(Demux.offerer_final(true, false));
        assert!(!Passthrough.offerer_final(true, false));
        assert!(!Reject.offerer_final(true, true));
        assert!(Reject.toward_answerer(true) && !Reject.toward_answerer(false));
    }
}
