//! sdp (work in progress)
