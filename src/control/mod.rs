//! The rtpengine "ng" control protocol, wire layer (sans-IO).
//!
//! - [`bencode`]: zero-copy, depth-bounded bencode decoder and an owned, order-preserving
//!   encoder for replies.
//! - [`json`]: the JSON body variant (a body starting with `{`; the reply is then JSON).
//! - [`ng`]: datagram framing (`<cookie> <body>`), the typed request ([`ng::NgRequest`]) and
//!   its parser, with rtpengine's error-reason strings.
//! - [`flags`]: flag names and their normalisation, the `rtpp-flags` string lexer and the
//!   option types referenced by the request.
//! - [`reply`]: builders for the standard reply dictionaries.
//! - [`client`]: the client side: cookies, request framing, reply matching, retransmission
//!   schedule (the socket that carries them is [`crate::client`]).
//!
//! Nothing here touches sockets or the clock; the server (and the client) feed datagrams in
//! and send the returned bytes out.
#![forbid(unsafe_code)]

pub mod bencode;
pub mod client;
pub mod flags;
pub mod handler;
pub mod json;
pub mod ng;
pub mod reply;
