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
        if self.inner.terminal {
            eprintln!("{line}");
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
            self.write(&format!("{machine}: {line}"));
        }
    }

    /// A line from a machine's serial console: `name # line`.
    pub fn console(&self, machine: &str, line: &str) {
        self.write(&format!("{machine} # {line}"));
    }
}
