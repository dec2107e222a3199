//! SIP digest authentication and authorization (RFC 3261 §22, RFC 8760 for SHA-256,
//! RFC 7616 for the header grammar), sans-IO.
//!
//! The proxy asks an [`AuthHook`] about each new request at its interception point (a valid,
//! non-ACK, non-CANCEL request that is not a retransmission; §22.1: ACK and CANCEL are
//! never challenged). [`AuthRequest::from_message`] reduces the message to what the policy
//! needs, and [`Authenticator`] decides:
//! - from a trusted peer (`--sip-trusted`): passes unchallenged;
//! - an in-dialog request (To tag) that comes back through our Record-Route: passes, the
//!   dialog was authorized when it was set up;
//! - a REGISTER for one of our domains: must carry `Authorization` credentials for the To
//!   AoR's domain (the realm), and the authenticated user must be the AoR's user. So a
//!   binding query (REGISTER without Contact) shows only the caller's own bindings.
//!   Missing, wrong or replayed credentials get 401; a valid user registering another
//!   user's AoR gets 403;
//! - any other request whose From is in one of our domains (a local user): must carry
//!   `Proxy-Authorization` for the From domain as the From user (407 / 403 as above), so a
//!   forged From is refused;
//! - a request from a foreign From to one of our domains (a call from outside) passes; one
//!   from a foreign From to a foreign domain gets 403 (no open relay, even with an outbound
//!   proxy configured).
//!
//! Nonces are stateless (see [`nonce`]); nonce counts are tracked in a bounded table.
//! Credentials come from a [`CredentialStore`] ([`UserFile`] by default), which can be
//! replaced at run time (SIGHUP) without touching registrations.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod client;
pub mod digest;
#[doc(hidden)]
pub mod fuzz;
pub mod header;
pub mod nonce;
pub mod store;

use std::borrow::Cow;
use std::net::IpAddr;

use crate::cidr::{any_contains, Cidr};
use crate::sip::parse::{HeaderName, Message};
use crate::sip::uri::{SipUri, Uri};

pub use self::digest::Algorithm;
pub use self::header::{Challenge, Credentials, HeaderError, Qop};
pub use self::nonce::{CountCheck, NonceCounts, NonceKey, NonceState};
pub use self::store::{passwd_line, CredentialStore, UserFile};

/// What the policy needs to know about a request.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    pub method: &'a str,
    pub source: IpAddr,
    /// A request inside a dialog that reached us through our own Record-Route.
    pub in_dialog: bool,
    /// For a REGISTER to one of our domains: the To AoR's (user, domain).
    pub register_aor: Option<(Cow<'a, str>, &'a str)>,
    /// When the From URI is in one of our domains: its (user, domain). A From in our
    /// domain without a user part is `("", domain)`, which no credential matches.
    pub local_from: Option<(Cow<'a, str>, &'a str)>,
    /// The Request-URI is in one of our domains.
    pub ruri_local: bool,
    /// The values of the credentials headers that apply: `Authorization` for a REGISTER,
    /// `Proxy-Authorization` otherwise.
    pub credentials: Vec<&'a str>,
}

/// A URI's decoded user part (empty when it has none).
fn user_of<'a>(u: &SipUri<'a>) -> Cow<'a, str> {
    match u.user_decoded() {
        Some(Cow::Borrowed(b)) => String::from_utf8_lossy(b),
        Some(Cow::Owned(b)) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
        None => Cow::Borrowed(""),
    }
}

impl<'a> AuthRequest<'a> {
    /// Builds the view of `msg` from `source`. `is_ours` says whether a SIP URI is in one of
    /// our domains, `is_our_route` whether a Route URI names this proxy.
    pub fn from_message(
        msg: &Message<'a>,
        source: IpAddr,
        is_ours: &dyn Fn(&SipUri<'_>) -> bool,
        is_our_route: &dyn Fn(&SipUri<'_>) -> bool,
    ) -> Self {
        let method = msg.method().unwrap_or("");
        let register = method == "REGISTER";
        let ruri = msg.request_uri().and_then(Result::ok);
        let ruri_local = matches!(&ruri, Some(Uri::Sip(u)) if is_ours(u));
        let top_route_ours = msg
            .route_set(HeaderName::Route)
            .ok()
            .and_then(|r| r.into_iter().next())
            .is_some_and(|r| matches!(&r.uri, Uri::Sip(u) if is_our_route(u)));
        let in_dialog = msg.to_tag().is_some() && top_route_ours;
        let local = |na: Option<Uri<'a>>| -> Option<(Cow<'a, str>, &'a str)> {
            match na {
                Some(Uri::Sip(u)) if is_ours(&u) => Some((user_of(&u), u.host_raw)),
                _ => None,
            }
        };
        let register_aor = if register && ruri_local {
            // The AoR is the To URI (§10.3 step 5); a To outside our domains is refused by
            // the registrar, so only the user matters here.
            msg.to()
                .ok()
                .and_then(|t| t.uri.as_sip().map(|u| (user_of(u), u.host_raw)))
        } else {
            None
        };
        let local_from = local(msg.from().ok().map(|f| f.uri));
        let kind = if register {
            HeaderName::Authorization
        } else {
            HeaderName::ProxyAuthorization
        };
        AuthRequest {
            method,
            source,
            in_dialog,
            register_aor,
            local_from,
            ruri_local,
            credentials: msg.headers_of(kind).map(|h| h.value).collect(),
        }
    }
}

/// The policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Route the request.
    Pass,
    /// Answer `status` (401 or 407) with one `header` per value (a challenge per algorithm).
    Challenge {
        status: u16,
        header: &'static str,
        values: Vec<String>,
    },
    /// Answer 403 with this reason phrase.
    Forbidden(&'static str),
}

impl AuthVerdict {
    /// The reason phrase for a challenge's status.
    pub fn reason(status: u16) -> &'static str {
        if status == 401 {
            "Unauthorized"
        } else {
            "Proxy Authentication Required"
        }
    }
}

/// What the proxy asks at its interception point.
pub trait AuthHook {
    fn check(&mut self, req: &AuthRequest<'_>, now_ns: u64) -> AuthVerdict;
}

/// Authentication settings.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Challenges offered, in order of preference (RFC 8760 §2.4: a client takes the first
    /// it supports). MD5 first by default: clients older than RFC 8760 read only the first
    /// challenge.
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce may be used; after it the client gets `stale=true`. 300 s, as
    /// Kamailio's `nonce_expire` default.
    pub nonce_lifetime_ns: u64,
    /// Nonces whose counts are remembered at once (each ~100 bytes).
    pub max_nonces: usize,
    /// Sources that skip authentication (e.g. a carrier's gateway).
    pub trusted: Vec<Cidr>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
            nonce_lifetime_ns: 300 * 1_000_000_000,
            max_nonces: 100_000,
            trusted: Vec::new(),
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    pub challenges: u64,
    pub accepted: u64,
    /// Credentials that did not verify (unknown user, wrong response, foreign nonce).
    pub failed: u64,
    pub stale: u64,
    pub replayed: u64,
    /// Valid credentials for a user other than the one the request speaks for.
    pub forbidden: u64,
    pub trusted: u64,
}

/// How a set of credentials came out.
enum Checked {
    /// Valid, for this user.
    Valid(String),
    Stale,
    Replayed,
    Failed,
    /// No credentials for this realm.
    Absent,
}

/// The default [`AuthHook`]: digest verification over a [`CredentialStore`] plus the policy
/// in the module docs.
pub struct Authenticator<C: CredentialStore = UserFile> {
    cfg: AuthConfig,
    key: NonceKey,
    counts: NonceCounts,
    store: C,
    stats: AuthStats,
    /// Set by the last `check` whose credentials failed (for flood control).
    last_failed: bool,
}

impl<C: CredentialStore> Authenticator<C> {
    /// `secret` keys the nonces; it must be random and stay in the process.
    pub fn new(cfg: AuthConfig, secret: [u8; 32], store: C) -> Self {
        Authenticator {
            key: NonceKey::new(secret, cfg.nonce_lifetime_ns),
            counts: NonceCounts::new(cfg.max_nonces),
            cfg,
            store,
            stats: AuthStats::default(),
            last_failed: false,
        }
    }

    /// Replaces the credentials (SIGHUP); nonces in use stay valid.
    pub fn replace_store(&mut self, store: C) {
        self.store = store;
    }

    pub fn stats(&self) -> AuthStats {
        self.stats
    }

    /// Whether the last request checked carried credentials that failed.
    pub fn last_failed(&self) -> bool {
        self.last_failed
    }

    /// Nonces whose counts are remembered.
    pub fn nonces_tracked(&self) -> usize {
        self.counts.len()
    }

    fn challenge(
        &mut self,
        status: u16,
        realm: &str,
        source: IpAddr,
        stale: bool,
        now: u64,
    ) -> AuthVerdict {
        self.stats.challenges += 1;
        let nonce = self.key.mint(now, source, realm);
        let values = self
            .cfg
            .algorithms
            .iter()
            .map(|&algorithm| {
                Challenge {
                    realm,
                    nonce: &nonce,
                    algorithm,
                    stale,
                }
                .emit()
            })
            .collect();
        let header = if status == 401 {
            "WWW-Authenticate"
        } else {
            "Proxy-Authenticate"
        };
        AuthVerdict::Challenge {
            status,
            header,
            values,
        }
    }

    /// Verifies the credentials for `realm` among `values`.
    fn verify(&mut self, req: &AuthRequest<'_>, realm: &str, now: u64) -> Checked {
        let mut any_for_realm = false;
        for v in &req.credentials {
            let Ok(c) = Credentials::parse(v) else {
                continue;
            };
            if !c.realm.eq_ignore_ascii_case(realm) {
                continue;
            }
            any_for_realm = true;
            if !self.cfg.algorithms.contains(&c.algorithm) {
                continue;
            }
            let minted =
                match self
                    .key
                    .check(&c.nonce, now, req.source, &realm.to_ascii_lowercase())
                {
                    NonceState::Fresh { minted_ns } => minted_ns,
                    NonceState::Stale => return Checked::Stale,
                    NonceState::Unknown => return Checked::Failed,
                };
            let Some(ha1) = self.store.ha1(&c.username, realm, c.algorithm) else {
                return Checked::Failed;
            };
            let qop = c.qop.as_ref().map(|(_, nc, cn)| (*nc, cn.as_ref()));
            let want = digest::response(c.algorithm, ha1, &c.nonce, qop, req.method, &c.uri);
            if !digest::hex_eq(&want, &c.response) {
                return Checked::Failed;
            }
            let nc = qop.map(|(nc, _)| nc);
            let lifetime = self.key.lifetime_ns();
            return match self.counts.use_count(&c.nonce, minted, nc, now, lifetime) {
                CountCheck::Accepted => Checked::Valid(c.username.into_owned()),
                CountCheck::Replayed => Checked::Replayed,
                CountCheck::Forgotten => Checked::Stale,
            };
        }
        if any_for_realm {
            Checked::Failed
        } else {
            Checked::Absent
        }
    }

    /// Requires credentials for `realm` naming `user`; `status` is 401 or 407.
    fn require(
        &mut self,
        req: &AuthRequest<'_>,
        status: u16,
        user: &str,
        realm: &str,
        now: u64,
    ) -> AuthVerdict {
        // Nonces are bound to the lower-cased realm; the challenge shows it as written.
        let bound = realm.to_ascii_lowercase();
        match self.verify(req, realm, now) {
            Checked::Valid(u) if u == user => {
                self.stats.accepted += 1;
                AuthVerdict::Pass
            }
            Checked::Valid(_) => {
                self.stats.forbidden += 1;
                AuthVerdict::Forbidden(if status == 401 {
                    "Forbidden: not your address of record"
                } else {
                    "Forbidden: From does not match the credentials"
                })
            }
            Checked::Stale => {
                self.stats.stale += 1;
                self.challenge(status, &bound, req.source, true, now)
            }
            Checked::Replayed => {
                self.stats.replayed += 1;
                self.last_failed = true;
                self.challenge(status, &bound, req.source, false, now)
            }
            Checked::Failed => {
                self.stats.failed += 1;
                self.last_failed = true;
                self.challenge(status, &bound, req.source, false, now)
            }
            Checked::Absent => self.challenge(status, &bound, req.source, false, now),
        }
    }
}

impl<C: CredentialStore> AuthHook for Authenticator<C> {
    fn check(&mut self, req: &AuthRequest<'_>, now_ns: u64) -> AuthVerdict {
        self.last_failed = false;
        if any_contains(&self.cfg.trusted, req.source) {
            self.stats.trusted += 1;
            return AuthVerdict::Pass;
        }
        if req.in_dialog {
            return AuthVerdict::Pass;
        }
        if let Some((user, domain)) = &req.register_aor {
            return self.require(req, 401, user, domain, now_ns);
        }
        if req.method == "REGISTER" {
            // For a foreign domain: routing refuses or forwards it; nothing of ours is at
            // stake.
            return AuthVerdict::Pass;
        }
        if let Some((user, domain)) = &req.local_from {
            return self.require(req, 407, user, domain, now_ns);
        }
        if req.ruri_local {
            return AuthVerdict::Pass;
        }
        AuthVerdict::Forbidden("Forbidden: relaying denied")
    }
}

#[cfg(test)]
mod tests;
