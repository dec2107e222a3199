//! The session layer: calls, legs, media streams and their relay ports. The single source of
//! truth shared by the ng protocol and the SIP proxy. Pure logic: the data plane is reached
//! through the [`backend::MediaBackend`] trait, so offer/answer flows are tested with a fake.
#![forbid(unsafe_code)]

pub mod backend;
pub mod fake;
pub mod interfaces;
pub mod latch;
pub mod local_ip;
pub mod manager;
pub mod model;
pub mod negotiate;
pub mod ports;
pub mod quality;
pub mod record;
pub mod sip_media;
pub mod slim;
