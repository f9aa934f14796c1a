//! Reading the foreground virtual console for [`Kind::ScreenText`]: size and cursor
//! from `/dev/vcsa`, characters from `/dev/vcsu` (UCS-4, Linux 4.19 and later) or else
//! `/dev/vcs` (one byte per cell), and whether the console is in graphics mode
//! (`KDGETMODE` on `/dev/tty0`).
//!
//! [`Kind::ScreenText`]: flotilla_agent::proto::Kind::ScreenText

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use flotilla_agent::proto::ScreenText;

/// `KDGETMODE` from `<linux/kd.h>`, and its answer for a console something else draws on.
const KDGETMODE: libc::c_ulong = 0x4B3B;
const KD_GRAPHICS: libc::c_int = 0x01;

/// Reads the foreground console.
pub fn read() -> Result<ScreenText, String> {
    let graphics =
        graphics_mode().map_err(|e| format!("reading the console mode of /dev/tty0: {e}"))?;
    let vcsa = std::fs::read("/dev/vcsa").map_err(|e| format!("reading /dev/vcsa: {e}"))?;
    let header = Header::parse(&vcsa)?;
    let text = match std::fs::read("/dev/vcsu") {
        Ok(cells) => ucs4_text(&cells, header.rows, header.cols)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let cells = std::fs::read("/dev/vcs").map_err(|e| format!("reading /dev/vcs: {e}"))?;
            byte_text(&cells, header.rows, header.cols)?
        }
        Err(e) => return Err(format!("reading /dev/vcsu: {e}")),
    };
    Ok(ScreenText {
        rows: header.rows.into(),
        cols: header.cols.into(),
        cursor_row: header.y.into(),
        cursor_col: header.x.into(),
        graphics,
        text,
    })
}

fn graphics_mode() -> io::Result<bool> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/tty0")?;
    let mut mode: libc::c_int = 0;
    // SAFETY: KDGETMODE writes one int through the pointer.
    let r = unsafe { libc::ioctl(tty.as_raw_fd(), KDGETMODE as _, &mut mode) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mode == KD_GRAPHICS)
}

/// The 4-byte header of `/dev/vcsa`: lines, columns, cursor column, cursor line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    rows: u8,
    cols: u8,
    x: u8,
    y: u8,
}

impl Header {
    fn parse(vcsa: &[u8]) -> Result<Header, String> {
        let [rows, cols, x, y, ..] = *vcsa else {
            return Err(format!(
                "/dev/vcsa gave {} bytes, not a 4-byte header",
                vcsa.len()
            ));
        };
        if rows == 0 || cols == 0 {
            return Err(format!("/dev/vcsa says the console is {cols}x{rows}"));
        }
        Ok(Header { rows, cols, x, y })
    }
}

/// The text of `/dev/vcsu`'s cells: 4 bytes (a code point, native order) per cell.
fn ucs4_text(cells: &[u8], rows: u8, cols: u8) -> Result<String, String> {
    let want = usize::from(rows) * usize::from(cols) * 4;
    if cells.len() != want {
        return Err(format!(
            "/dev/vcsu gave {} bytes for a {cols}x{rows} console, not {want}",
            cells.len()
        ));
    }
    let chars = cells.chunks_exact(4).map(|c| {
        let code = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        match code {
            0 => ' ',
            _ => char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER),
        }
    });
    Ok(join(chars, cols))
}

/// The text of `/dev/vcs`'s cells: one byte (a font position) per cell; only ASCII is
/// read as itself.
fn byte_text(cells: &[u8], rows: u8, cols: u8) -> Result<String, String> {
    let want = usize::from(rows) * usize::from(cols);
    if cells.len() != want {
        return Err(format!(
            "/dev/vcs gave {} bytes for a {cols}x{rows} console, not {want}",
            cells.len()
        ));
    }
    let chars = cells.iter().map(|&b| match b {
        0 => ' ',
        0x20..=0x7e => char::from(b),
        _ => char::REPLACEMENT_CHARACTER,
    });
    Ok(join(chars, cols))
}

/// Cells, `cols` to a line, as lines joined by newlines: each line's trailing blanks
/// and the trailing empty lines removed.
fn join(cells: impl Iterator<Item = char>, cols: u8) -> String {
    let cells: Vec<char> = cells.collect();
    let lines: Vec<String> = cells
        .chunks(usize::from(cols))
        .map(|line| line.iter().collect::<String>().trim_end().to_owned())
        .collect();
    let used = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |n| n + 1);
    lines[..used].join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ucs4(s: &str) -> Vec<u8> {
        s.chars().flat_map(|c| (c as u32).to_ne_bytes()).collect()
    }

    #[test]
    fn the_vcsa_header_is_rows_cols_x_y() {
        let h = Header::parse(&[25, 80, 3, 7, 0x41, 0x07]).unwrap();
        assert_eq!(
            h,
            Header {
                rows: 25,
                cols: 80,
                x: 3,
                y: 7
            }
        );
        assert!(Header::parse(&[25, 80, 3]).unwrap_err().contains("3 bytes"));
        assert!(Header::parse(&[0, 80, 0, 0]).unwrap_err().contains("80x0"));
    }

    #[test]
    fn cells_become_lines_without_trailing_blanks() {
        let cells = ucs4("ab  cd  \0\0\0\0    ");
        assert_eq!(ucs4_text(&cells, 4, 4).unwrap(), "ab\ncd");
        // Blank lines inside stay; characters beyond ASCII are themselves.
        let cells = ucs4("é   \0\0\0\0x─ ✓");
        assert_eq!(ucs4_text(&cells, 3, 4).unwrap(), "é\n\nx─ ✓");
        // A blank screen is empty text.
        assert_eq!(ucs4_text(&ucs4("      "), 2, 3).unwrap(), "");
        // Not a code point: the replacement character.
        let mut cells = ucs4("a");
        cells.extend_from_slice(&0xD800u32.to_ne_bytes());
        assert_eq!(ucs4_text(&cells, 1, 2).unwrap(), "a\u{FFFD}");
    }

    #[test]
    fn a_wrong_size_is_an_error() {
        let e = ucs4_text(&ucs4("abc"), 2, 2).unwrap_err();
        assert_eq!(e, "/dev/vcsu gave 12 bytes for a 2x2 console, not 16");
        let e = byte_text(b"abc", 2, 2).unwrap_err();
        assert_eq!(e, "/dev/vcs gave 3 bytes for a 2x2 console, not 4");
    }

    #[test]
    fn vcs_bytes_read_ascii_only() {
        assert_eq!(byte_text(b"hi\0 \xb3x  ", 2, 4).unwrap(), "hi\n\u{FFFD}x");
    }
}
