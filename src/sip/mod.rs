//! SIP message layer, sans-IO (RFC 3261 §7 and the §25 grammar; RFC 4475 torture tests).
//!
//! - [`parse`]: a zero-copy framer in the style of `httparse` ([`Message::parse`] for
//!   datagrams, [`frame`] for streams) with limits on size and header count.
//! - [`uri`]: SIP/SIPS/tel URI views; [`header`]: strict parsers for the headers a proxy or
//!   registrar interprets, run lazily on demand.
//! - [`message`]: accessors (top Via, Call-ID, CSeq, tags), the RFC 3261 §8.2/§16.3 validity
//!   checks ([`check_request`]), and [`classify`], which turns a datagram into "handle",
//!   "answer with this status" or "drop".
//! - [`edit`]: an [`Editor`] that splices changes into the received bytes, so every header
//!   the proxy does not touch is forwarded byte for byte.
//! - [`registrar`]: a location service (RFC 3261 §10.3) over a pluggable store.
//! - [`transport`]: UDP/TCP as the proxy sees them ([`Transport`], [`Transmit`]) and the
//!   §18/RFC 3581 rules for where responses go.
//! - [`transaction`]: RFC 3261 §17 transaction state, keys and timers.
//! - [`proxy`]: the transaction-stateful proxy core (§16) driving all of the above.
//!
//! Nothing here does I/O or reads the clock, and no input makes it panic.
#![forbid(unsafe_code)]

pub mod admission;
pub mod auth;
pub mod edit;
pub mod flood;
pub mod hash;
pub mod header;
pub mod lex;
pub mod media;
pub mod message;
pub mod networks;
pub mod number;
pub mod parse;
pub mod presence;
pub mod proxy;
pub mod registrar;
pub mod transaction;
pub mod transport;
pub mod uri;

pub use edit::{EditError, Editor};
pub use lex::Params;
pub use message::{
    build_response, check_request, check_request_with, check_response, classify, Disposition,
    Rejection, ReplyContext,
};
pub use parse::{frame, Frame, Framing, Header, HeaderName, Message, ParseError, StartLine};
pub use transport::{Transmit, Transport};
pub use uri::{Host, SipUri, Uri};
