//! rtp (work in progress)
