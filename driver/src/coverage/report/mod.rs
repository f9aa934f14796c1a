//! The coverage report (work in progress).
