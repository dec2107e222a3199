//! session (work in progress)
