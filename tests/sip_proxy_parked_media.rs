//! A media layer that is not ready (a remote relay's answer still out): the proxy drops the
//! message without changing any state and, handed the same bytes again once the layer is
//! ready, handles it as if it were new. Sans-IO: the proxy and a recording hook only.

#[allow(dead_code)]
mod common;

use common::sip::*;
use rtpanchor::sip::media::{MediaCtx, MediaHook, MediaOp, MediaResult};

/// [`Rec`] behind a switch: not ready until `answered`; counts the readiness questions.
#[derive(Default)]
struct Slow {
    rec: Rec,
    answered: bool,
    asked: Vec<MediaOp>,
}

impl MediaHook for Slow {
    fn media(&mut self, ctx: &MediaCtx<'_>, body: &[u8], now: u64) -> MediaResult {
        self.rec.media(ctx, body, now)
    }

    fn ready(&mut self, ctx: &MediaCtx<'_>, _body: &[u8], _now: u64) -> bool {
        self.asked.push(ctx.op);
        self.answered
    }
}

#[test]
fn offer_and_answer_wait_for_the_media_layer_without_changing_state() {
    let mut p = new_proxy();
    register_bob(&mut p);
    let mut hook = Slow::default();
    let mut a = Uac::alice("parked1");
    let invite = a.invite(Some(&sdp("10.0.0.1", 6000)));

    // Not ready: nothing sent (no 100 Trying: no transaction), nothing asked of media.
    assert!(feed(&mut p, &invite, alice(), 0, &mut hook).is_empty());
    // Its retransmission: the same.
    assert!(feed(&mut p, &invite, alice(), 500 * MS, &mut hook).is_empty());
    assert_eq!(hook.asked, [MediaOp::Offer, MediaOp::Offer]);
    assert!(hook.rec.calls.is_empty());
    assert_eq!(p.stats().media_parked, 2);

    // Ready: the same bytes are a new INVITE; the offer is made once.
    hook.answered = true;
    let out = feed(&mut p, &invite, alice(), 600 * MS, &mut hook);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(status(&out[0]), Some(100));
    assert_eq!(out[1].to, bob());
    assert_eq!(msg(&out[1]).body(), sdp("203.0.113.1", 40000).as_slice());
    assert_eq!(hook.rec.ops(), [MediaOp::Offer]);
    let inv = out[1].bytes.clone();

    // The 200 with the answer waits too; then goes upstream with the relay's SDP.
    hook.answered = false;
    let b = Uas::bob();
    let ok = b.respond_sdp(&inv, 200, &sdp("10.0.0.2", 7000));
    assert!(feed(&mut p, &ok, bob(), 700 * MS, &mut hook).is_empty());
    assert_eq!(hook.rec.ops(), [MediaOp::Offer]);
    hook.answered = true;
    let out = feed(&mut p, &ok, bob(), 800 * MS, &mut hook);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].to, status(&out[0])), (alice(), Some(200)));
    assert_eq!(msg(&out[0]).body(), sdp("203.0.113.1", 40002).as_slice());
    assert_eq!(hook.rec.ops(), [MediaOp::Offer, MediaOp::Answer]);
    a.learn(&out[0].bytes);
}
