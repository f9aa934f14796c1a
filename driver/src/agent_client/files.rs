//! File copies over an agent connection, streamed in chunks both ways.

use std::path::Path;

use flotilla_agent::proto::{self, FileDone, FileInfo, FilePull, FilePush, Frame, Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connection::AgentConnection;
use super::error::AgentError;

impl AgentConnection {
    /// Copies the host file `local` to `remote` in the guest (parents created), keeping
    /// `mode`; streamed in chunks. Returns the bytes written.
    pub async fn push_file(
        &self,
        local: &Path,
        remote: &str,
        mode: u32,
    ) -> Result<u64, AgentError> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|source| AgentError::Local {
                path: local.display().to_string(),
                source,
            })?;
        let (mut stream, mut rx) = self.open_stream()?;
        let push = FilePush {
            path: remote.to_owned(),
            mode,
            create_dirs: true,
        };
        stream
            .send(Frame::json(Kind::FilePush, stream.id, &push))
            .await?;
        let mut buf = vec![0u8; proto::MAX_CHUNK];
        loop {
            // An early error from the agent (say, a read-only path) ends the push.
            if let Ok(frame) = rx.try_recv() {
                stream.finished = true;
                return Err(match frame.kind {
                    Kind::Error => AgentError::remote(&frame),
                    other => AgentError::Unexpected(other),
                });
            }
            let n = file
                .read(&mut buf)
                .await
                .map_err(|source| AgentError::Local {
                    path: local.display().to_string(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            stream
                .send(Frame::new(Kind::FileData, stream.id, buf[..n].to_vec()))
                .await?;
        }
        stream
            .send(Frame::new(Kind::FileEnd, stream.id, Vec::new()))
            .await?;
        let frame = rx.recv().await.ok_or(AgentError::Closed)?;
        stream.finished = true;
        match frame.kind {
            Kind::FileDone => Ok(frame
                .parse_json::<FileDone>()
                .map_err(AgentError::Decode)?
                .size),
            Kind::Error => Err(AgentError::remote(&frame)),
            other => Err(AgentError::Unexpected(other)),
        }
    }

    /// Copies `remote` from the guest to the host file `local` (written whole, then
    /// renamed into place), streamed. Returns the size and the guest file's mode.
    pub async fn pull_file(&self, remote: &str, local: &Path) -> Result<(u64, u32), AgentError> {
        let (mut stream, mut rx) = self.open_stream()?;
        let pull = FilePull {
            path: remote.to_owned(),
        };
        stream
            .send(Frame::json(Kind::FilePull, stream.id, &pull))
            .await?;
        let local_err = |source| AgentError::Local {
            path: local.display().to_string(),
            source,
        };
        let first = rx.recv().await.ok_or(AgentError::Closed)?;
        let info: FileInfo = match first.kind {
            Kind::FileInfo => first.parse_json().map_err(AgentError::Decode)?,
            Kind::Error => {
                stream.finished = true;
                return Err(AgentError::remote(&first));
            }
            other => return Err(AgentError::Unexpected(other)),
        };
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(local_err)?;
        }
        let partial = local.with_extension("flotilla-partial");
        let mut file = tokio::fs::File::create(&partial).await.map_err(local_err)?;
        let mut size = 0u64;
        loop {
            let frame = rx.recv().await.ok_or(AgentError::Closed)?;
            match frame.kind {
                Kind::FileData => {
                    size += frame.payload.len() as u64;
                    file.write_all(&frame.payload).await.map_err(local_err)?;
                }
                Kind::FileEnd => break,
                Kind::Error => {
                    stream.finished = true;
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(AgentError::remote(&frame));
                }
                other => return Err(AgentError::Unexpected(other)),
            }
        }
        stream.finished = true;
        file.flush().await.map_err(local_err)?;
        drop(file);
        let perms = std::os::unix::fs::PermissionsExt::from_mode(info.mode & 0o7777);
        tokio::fs::set_permissions(&partial, perms)
            .await
            .map_err(local_err)?;
        tokio::fs::rename(&partial, local)
            .await
            .map_err(local_err)?;
        Ok((size, info.mode))
    }
}
