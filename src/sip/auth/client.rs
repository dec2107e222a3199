//! The client side of digest authentication, for tests and tools: the credentials that
//! answer a challenge.
#![forbid(unsafe_code)]

use super::digest::{ha1, response};
use super::header::{Challenge, Credentials, HeaderError, Qop};

/// The client side (tests, tools): the `Authorization`/`Proxy-Authorization` value
/// answering the challenge value `challenge` as `user` with `password`, with `qop=auth`,
/// nonce count `nc` and client nonce `cnonce`.
pub fn answer_challenge(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> Result<String, HeaderError> {
    let (realm, nonce, alg, _) = Challenge::parse(challenge)?;
    let h = ha1(alg, user, &realm, password);
    let response = response(alg, &h, &nonce, Some((nc, cnonce)), method, uri);
    Ok(Credentials {
        username: user.into(),
        realm: realm.into(),
        nonce: nonce.into(),
        uri: uri.into(),
        response: response.into(),
        algorithm: alg,
        opaque: None,
        qop: Some((Qop::Auth, nc, cnonce.into())),
    }
    .emit())
}
