//! Virtual networks for Flotilla machines.
//!
//! Not implemented yet: networking between machines arrives with the vmnet issue. The
//! crate exists so the workspace layout is final from the start.
