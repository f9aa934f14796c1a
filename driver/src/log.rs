//! The run log: every line goes to the terminal (unless quiet) and to `driver.log` in the
//! run's log directory, with the time since the run started. Console lines read
//! `server # <line>`, driver messages about a machine read `server: <message>`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::Error;

/// A cloneable handle to the run log.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    dir: PathBuf,
    file: Mutex<File>,
    terminal: bool,
    /// Colour the terminal: stderr is a TTY and `NO_COLOR` is unset.
    colour: bool,
}

impl Log {
    /// Creates `dir` (emptying a previous run's files there) and `dir/driver.log`.
    pub fn create(dir: &Path, terminal: bool) -> Result<Log, Error> {
        let io = |what: String| move |source| Error::Io { what, source };
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(io(format!("clearing log directory {}", dir.display())))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(io(format!("creating log directory {}", dir.display())))?;
        let path = dir.join("driver.log");
        let file = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        Ok(Log {
            inner: Arc::new(Inner {
                start: Instant::now(),
                dir: dir.to_path_buf(),
                file: Mutex::new(file),
                terminal,
                colour: std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none(),
            }),
        })
    }

    /// The run's log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A machine's own log folder (console.log, qemu.log), created on demand.
    pub fn machine_dir(&self, machine: &str) -> Result<PathBuf, Error> {
        let dir = self.inner.dir.join(machine);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        Ok(dir)
    }

    /// Seconds since the run started.
    pub fn elapsed(&self) -> f64 {
        self.inner.start.elapsed().as_secs_f64()
    }

    fn write(&self, line: &str) {
        self.write_styled(line, None);
    }

    /// Writes a line; on a colour terminal the `name` prefix (the part before the
    /// first `: ` or ` # `) is coloured per machine and console lines are dimmed.
    fn write_styled(&self, line: &str, name: Option<&str>) {
        if self.inner.terminal {
            match name.filter(|_| self.inner.colour) {
                Some(name) => {
                    let rest = &line[name.len().min(line.len())..];
                    let console = rest.starts_with(" # ");
                    let dim = if console { "\x1b[2m" } else { "" };
                    eprintln!(
                        "\x1b[1;38;5;{}m{name}\x1b[0m{dim}{rest}\x1b[0m",
                        colour_of(name)
                    );
                }
                None => eprintln!("{line}"),
            }
        }
        if let Ok(mut f) = self.inner.file.lock() {
            let _ = writeln!(f, "[{:8.3}] {line}", self.elapsed());
        }
    }

    /// A message for the log file only (the caller shows it on the terminal itself).
    pub fn file_only(&self, message: &str) {
        if let Ok(mut f) = self.inner.file.lock() {
            for line in message.lines() {
                let _ = writeln!(f, "[{:8.3}] {line}", self.elapsed());
            }
        }
    }

    /// A message from the driver itself.
    pub fn info(&self, message: &str) {
        for line in message.lines() {
            self.write(line);
        }
    }

    /// A message about one machine: `name: message`.
    pub fn machine(&self, machine: &str, message: &str) {
        for line in message.lines() {
            self.write_styled(&format!("{machine}: {line}"), Some(machine));
        }
    }

    /// A line from a machine's serial console: `name # line`.
    pub fn console(&self, machine: &str, line: &str) {
        self.write_styled(&format!("{machine} # {line}"), Some(machine));
    }
}

/// A readable ANSI 256-colour for a machine name, the same every run.
fn colour_of(name: &str) -> u8 {
    const PALETTE: [u8; 8] = [33, 35, 36, 39, 71, 135, 172, 166];
    let h = name
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    PALETTE[h as usize % PALETTE.len()]
}
