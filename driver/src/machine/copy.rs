//! File copies between the host and the guest, files or whole folders.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::command_text::shell_quote;
use super::state::{Machine, Running};
use crate::error::Error;

impl Machine {
    /// Copies a host file or directory (recursively) into the guest at `remote`,
    /// keeping modes; returns the bytes copied.
    pub async fn copy_to(&self, local: &std::path::Path, remote: &str) -> Result<u64, Error> {
        let running = self.running().await?;
        let started = Instant::now();
        let mut files = Vec::new();
        collect_files(local, remote, &mut files).map_err(|source| Error::Io {
            what: format!(
                "machine `{}`: reading {}",
                self.config.name,
                local.display()
            ),
            source,
        })?;
        let guest = self.guest(&running).await?;
        let copies = async {
            let mut total = 0;
            for (path, target, mode) in &files {
                total += guest
                    .push_file(path, target, *mode)
                    .await
                    .map_err(|source| {
                        self.agent_failed(format!("copying {} to {target}", path.display()), source)
                    })?;
            }
            Ok(total)
        };
        let what = format!("copying {} to {remote}", local.display());
        let total = self.guarded(&running, &what, copies).await?;
        self.log(&format!(
            "copied {} ({} file(s), {total} bytes) to {remote} in {:.2} s",
            local.display(),
            files.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(total)
    }

    /// Copies a guest file or directory (recursively) to `local` on the host, keeping
    /// modes; returns the bytes copied.
    pub async fn copy_from(&self, remote: &str, local: &std::path::Path) -> Result<u64, Error> {
        let running = self.running().await?;
        let what = format!("copying {remote} to {}", local.display());
        self.guarded(
            &running,
            &what,
            self.copy_from_running(&running, remote, local),
        )
        .await
    }

    pub(super) async fn copy_from_running(
        &self,
        running: &Running,
        remote: &str,
        local: &std::path::Path,
    ) -> Result<u64, Error> {
        let started = Instant::now();
        let guest = self.guest(running).await?;
        let quoted = shell_quote(remote);
        let listing = guest
            .exec_shell(
                &format!("if [ -d {quoted} ]; then cd {quoted} && find . -type f; elif [ -e {quoted} ]; then echo; else echo \"no such file or directory: {}\" >&2; exit 1; fi", remote.replace('"', "")),
                Duration::from_secs(60),
                &[],
                |_, _| {},
            )
            .await
            .map_err(|source| self.agent_failed(format!("listing {remote}"), source))?;
        if listing.status.code != Some(0) {
            return Err(self.agent_failed(
                format!("copying {remote}"),
                crate::agent_client::GuestError::Local(
                    String::from_utf8_lossy(&listing.stderr).trim().to_owned(),
                ),
            ));
        }
        let text = String::from_utf8_lossy(&listing.stdout).into_owned();
        let entries: Vec<&str> = text.lines().collect();
        let mut total = 0;
        let mut count = 0;
        // A lone empty line means `remote` is a file; otherwise the files under it.
        let copies: Vec<(String, PathBuf)> = if entries == [""] {
            vec![(remote.to_owned(), local.to_path_buf())]
        } else {
            entries
                .iter()
                .filter_map(|e| e.strip_prefix("./"))
                .map(|rel| {
                    (
                        format!("{}/{rel}", remote.trim_end_matches('/')),
                        local.join(rel),
                    )
                })
                .collect()
        };
        for (from, to) in copies {
            let (size, _) = guest.pull_file(&from, &to).await.map_err(|source| {
                self.agent_failed(format!("copying {from} to {}", to.display()), source)
            })?;
            total += size;
            count += 1;
        }
        self.log(&format!(
            "copied {remote} ({count} file(s), {total} bytes) to {} in {:.2} s",
            local.display(),
            started.elapsed().as_secs_f64()
        ));
        let label = format!("copied {remote} from the guest");
        let log = &self.config.log;
        log.mark(Some(&self.config.name), "copy", &label, Ok(()), Some(local));
        Ok(total)
    }
}

/// `(host path, guest path, mode)` of every file under `local` (or `local` itself).
pub(super) fn collect_files(
    local: &std::path::Path,
    remote: &str,
    out: &mut Vec<(PathBuf, String, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(local)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(local)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let target = format!(
                "{}/{}",
                remote.trim_end_matches('/'),
                name.to_string_lossy()
            );
            collect_files(&entry.path(), &target, out)?;
        }
    } else if meta.is_file() {
        out.push((
            local.to_path_buf(),
            remote.to_owned(),
            meta.permissions().mode() & 0o7777,
        ));
    }
    Ok(())
}
