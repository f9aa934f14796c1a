//! The terminal's size, read in one place: the width of the status lines (the run's,
//! a suite's live view) and the window a `flotilla shell` session gets.

use std::os::fd::RawFd;

use flotilla_agent::proto::WindowSize;

/// The size of the terminal on `fd`, if it is one and knows its size.
pub fn window_size(fd: RawFd) -> Option<WindowSize> {
    // SAFETY: an all-zero winsize is valid; TIOCGWINSZ writes one into it, which we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } != 0 || ws.ws_row == 0 {
        return None;
    }
    Some(WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// How wide a status line on stderr may be: one column less than the terminal (a line
/// that fills the last column wraps on some terminals), or 79.
pub(crate) fn status_width() -> usize {
    match window_size(libc::STDERR_FILENO) {
        Some(size) if size.cols > 1 => usize::from(size.cols) - 1,
        _ => 79,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_terminal_has_no_size_and_the_default_width() {
        let file = tempfile::tempfile().unwrap();
        assert!(window_size(std::os::fd::AsRawFd::as_raw_fd(&file)).is_none());
        assert!(status_width() >= 1);
    }
}
