//! The local terminal: raw mode, and putting its settings back (its size is
//! `flotilla_driver::terminal::window_size`).

use std::io;
use std::os::fd::RawFd;

/// A terminal's settings, saved when made and restored when dropped (whatever changed
/// them meanwhile: raw mode here, or a line editor).
#[derive(Debug)]
pub struct Saved {
    fd: RawFd,
    termios: libc::termios,
}

impl Saved {
    /// Saves `fd`'s settings; fails if `fd` is not a terminal.
    pub fn new(fd: RawFd) -> io::Result<Saved> {
        // SAFETY: an all-zero termios is a valid value to be overwritten.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes a termios.
        if unsafe { libc::tcgetattr(fd, &mut termios) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Saved { fd, termios })
    }

    /// Saves `fd`'s settings, then puts it in raw mode: bytes pass unchanged, no echo,
    /// no signals from keys (Ctrl-C goes through as a byte).
    pub fn raw(fd: RawFd) -> io::Result<Saved> {
        let saved = Saved::new(fd)?;
        let mut raw = saved.termios;
        // SAFETY: cfmakeraw edits the struct in place; tcsetattr reads it.
        unsafe { libc::cfmakeraw(&mut raw) };
        if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(saved)
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        // SAFETY: tcsetattr reads the saved termios.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.termios) };
    }
}
