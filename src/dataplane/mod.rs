//! dataplane (work in progress)
