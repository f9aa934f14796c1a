//! Agent protocol (in progress).
