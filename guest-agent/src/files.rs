//! File push/pull over the agent port (see the "File transfer" section of
//! [`flotilla_agent::proto`]).
//!
//! Pushes are written by the dispatching thread as data arrives (writes to a local file
//! are quick); a pull streams from its own thread so a large file does not stall other
//! streams.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flotilla_agent::proto::{FileDone, FileInfo, FilePull, FilePush, Frame, Kind, MAX_CHUNK};

use crate::outbox::Outbox;
use crate::threads;

enum Transfer {
    Pushing {
        file: File,
        tmp: PathBuf,
        target: PathBuf,
        mode: u32,
        size: u64,
    },
    /// The push failed and was reported; swallow its remaining frames until FileEnd.
    Failed,
}

/// File pushes in progress, by stream id.
#[derive(Default)]
pub struct Transfers {
    pushes: HashMap<u32, Transfer>,
}

impl Transfers {
    pub fn dispatch(&mut self, frame: Frame, out: &Outbox) {
        let stream = frame.stream;
        let gen = out.current_gen();
        let fail = |msg: String| {
            let _ = out.send(gen, Frame::error(stream, msg));
        };
        if stream == 0 {
            return fail("file transfers need a stream id greater than 0".into());
        }
        match frame.kind {
            Kind::FilePush => {
                let req: FilePush = match frame.parse_json() {
                    Ok(r) => r,
                    Err(e) => return fail(e.to_string()),
                };
                if self.pushes.contains_key(&stream) {
                    return fail(format!("stream {stream} is already transferring a file"));
                }
                match start_push(&req, stream) {
                    Ok(t) => {
                        self.pushes.insert(stream, t);
                    }
                    Err(msg) => {
                        self.pushes.insert(stream, Transfer::Failed);
                        fail(msg);
                    }
                }
            }
            Kind::FileData => match self.pushes.get_mut(&stream) {
                Some(Transfer::Pushing {
                    file, target, size, ..
                }) => {
                    if let Err(e) = file.write_all(&frame.payload) {
                        let msg = format!("writing {}: {e}", target.display());
                        self.abort(stream);
                        fail(msg);
                    } else {
                        *size += frame.payload.len() as u64;
                    }
                }
                Some(Transfer::Failed) => {}
                None => fail(format!("no file transfer on stream {stream}")),
            },
            Kind::FileEnd => match self.pushes.remove(&stream) {
                Some(Transfer::Pushing {
                    file,
                    tmp,
                    target,
                    mode,
                    size,
                }) => match finish_push(file, &tmp, &target, mode) {
                    Ok(()) => {
                        let _ =
                            out.send(gen, Frame::json(Kind::FileDone, stream, &FileDone { size }));
                    }
                    Err(msg) => {
                        let _ = std::fs::remove_file(&tmp);
                        fail(msg);
                    }
                },
                Some(Transfer::Failed) => {}
                None => fail(format!("no file transfer on stream {stream}")),
            },
            Kind::FilePull => {
                let req: FilePull = match frame.parse_json() {
                    Ok(r) => r,
                    Err(e) => return fail(e.to_string()),
                };
                let out2 = out.clone();
                if let Err(e) = threads::spawn("pull", move || pull(req, stream, gen, out2)) {
                    fail(format!("cannot start a file thread: {e}"));
                }
            }
            other => fail(format!("{other:?} is not a file transfer frame")),
        }
    }

    fn abort(&mut self, stream: u32) {
        if let Some(Transfer::Pushing { tmp, .. }) = self.pushes.insert(stream, Transfer::Failed) {
            let _ = std::fs::remove_file(tmp);
        }
    }

    /// Drop unfinished pushes (new session).
    pub fn clear(&mut self) {
        for (_, t) in self.pushes.drain() {
            if let Transfer::Pushing { tmp, .. } = t {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

fn start_push(req: &FilePush, stream: u32) -> Result<Transfer, String> {
    let target = PathBuf::from(&req.path);
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(format!("push to `{}`: not a file path", req.path));
    };
    if !target.is_absolute() {
        return Err(format!("push to `{}`: path must be absolute", req.path));
    }
    if req.mode > 0o7777 {
        return Err(format!(
            "push to `{}`: invalid mode {:o}",
            req.path, req.mode
        ));
    }
    if req.create_dirs {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating directory {}: {e}", dir.display()))?;
    }
    let tmp = dir.join(format!(".{}.flotilla-{stream}.tmp", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| {
            format!(
                "push to {}: creating {}: {e}",
                target.display(),
                tmp.display()
            )
        })?;
    Ok(Transfer::Pushing {
        file,
        tmp,
        target,
        mode: req.mode,
        size: 0,
    })
}

fn finish_push(file: File, tmp: &Path, target: &Path, mode: u32) -> Result<(), String> {
    let what = |e: std::io::Error| format!("push to {}: {e}", target.display());
    // Explicit chmod: the mode is exact, not filtered by the umask.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(what)?;
    file.sync_all().map_err(what)?;
    drop(file);
    std::fs::rename(tmp, target).map_err(what)
}

fn pull(req: FilePull, stream: u32, gen: u64, out: Outbox) {
    let fail = |msg: String| {
        let _ = out.send(gen, Frame::error(stream, msg));
    };
    let mut file = match File::open(&req.path) {
        Ok(f) => f,
        Err(e) => return fail(format!("pull of {}: {e}", req.path)),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return fail(format!("pull of {}: {e}", req.path)),
    };
    if !meta.is_file() {
        return fail(format!("pull of {}: not a regular file", req.path));
    }
    let _ = out.send(
        gen,
        Frame::json(
            Kind::FileInfo,
            stream,
            &FileInfo {
                size: meta.len(),
                mode: meta.permissions().mode() & 0o7777,
            },
        ),
    );
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !out.send(gen, Frame::new(Kind::FileData, stream, buf[..n].to_vec())) {
                    return; // the session is over
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return fail(format!("pull of {}: reading: {e}", req.path)),
        }
    }
    let _ = out.send(gen, Frame::new(Kind::FileEnd, stream, Vec::new()));
}
