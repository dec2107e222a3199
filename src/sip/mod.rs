//! sip (work in progress)
