//! Control-plane servers (tokio). Each feeds bytes to the sans-IO protocol code and the one
//! session layer; none of them touches the data plane except through the session manager.
//!
//! - [`ng`]: the rtpengine-compatible ng control protocol over UDP and TCP.
//! - [`sip`]: the built-in SIP proxy's transport (UDP and TCP) around `sip::proxy`.

pub mod ng;
pub mod sip;
