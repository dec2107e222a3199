//! control (work in progress)
