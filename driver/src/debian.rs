//! `flotilla image debian`: a Debian bookworm disk image with the agent installed.
//! (Being written.)
