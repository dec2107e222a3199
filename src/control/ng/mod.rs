//! ng datagram framing and the typed request.
//!
//! **Framing** (rtpengine `daemon/control_ng.c`): a datagram is `<cookie> <body>`, split at the
//! first space. No space, or an empty cookie (leading space), gets no reply at all
//! ([`split_datagram`] returns `None`). The reply echoes the cookie byte for byte, one space,
//! then the body ([`frame_reply`]). An empty body gets the error "Invalid data (no payload)".
//!
//! **Body format** is decided by its first byte: `d` → bencode dictionary, `{` → JSON object
//! (and the reply is then JSON), anything else → "Invalid NG data format". Both formats are
//! turned into one [`Value`](super::bencode::Value) view (bencode zero-copy, JSON through
//! [`Owned::as_value`](super::bencode::Owned::as_value)) and
//! parsed by the same code, [`parse_request_value`].
//!
//! **Keys and flags.** Names are matched after normalisation ([`super::flags`]): case-insensitive,
//! with spaces, dashes and underscores equivalent. Settings arrive three ways and all land in
//! the same [`NgRequest`] fields:
//! 1. dictionary keys (`"ICE": "remove"`, `"replace": ["origin"]`);
//! 2. items of the `flags` list: bare flags (`trust-address`), prefixed flags
//!    (`replace-origin`, `rtcp-mux-demux`, `codec-strip-PCMU`, `SDES-off`) and `key=value`
//!    items treated like dictionary keys (`ICE=remove`, `delete-delay=0`);
//! 3. the `rtpp-flags` string (newer Kamailio), the same tokens separated by whitespace, with
//!    bracketed list values ([`super::flags::lex_rtpp_flags`]).
//!
//! For dictionary keys the first occurrence wins (duplicates are ignored, also across spellings
//! such as `call-id`/`call id`). Flag tokens apply in order, so a later token overrides an
//! earlier scalar, as in rtpengine.
//!
//! **What is refused.** Unknown keys and flags, and known ones that we do not implement but that
//! do no harm when ignored, only add to [`NgRequest::warnings`] (capped at
//! [`MAX_WARNINGS`]). Requests that would need transcoding or a transport conversion we cannot
//! perform fail with an error naming the feature, so the proxy can react instead of getting a
//! silently wrong call. `transport-protocol` itself is only recorded: whether it differs from
//! the offered protocol is for the session layer to decide (it then uses
//! [`NgError::UnsupportedTransport`]).
//!
//! The files: `framing` (cookie, body format, reply datagram), `request` (commands,
//! errors, the request), `keys` (the key and flag table), `value` (typed reads of a value),
//! `parse` (the parser).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod fit;
mod framing;
mod keys;
mod parse;
mod request;
#[cfg(test)]
mod tests;
mod value;

pub use fit::{frame_reply_within, MAX_UDP_REPLY};
pub use framing::{encode_body, frame_reply, parse_request, split_datagram, BodyFormat};
pub use parse::parse_request_value;
pub use request::{Command, NgError, NgRequest, MAX_WARNINGS};
