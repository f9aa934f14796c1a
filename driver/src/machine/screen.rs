//! The machine's screen and keyboard: screenshots, key combinations, typing.

use std::path::PathBuf;
use std::time::Duration;

use super::keys;
use super::state::Machine;
use crate::error::Error;

impl Machine {
    /// Saves a PNG of the machine's screen (its VGA text console) as `<name>.png` in the
    /// machine's log folder (`name` may end in `.png`); returns the path. Works on a
    /// paused or panicked VM too.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, Error> {
        self.need_screen("take a screenshot of")?;
        let stem = name.strip_suffix(".png").unwrap_or(name);
        if stem.is_empty() || stem.starts_with('.') || stem.contains(['/', '\\', '\0']) {
            return Err(Error::Usage(format!(
                "machine `{}`: screenshot name `{name}` must be a plain file name",
                self.config.name
            )));
        }
        let path = self
            .config
            .log
            .machine_dir(&self.config.name)?
            .join(format!("{stem}.png"));
        let running = self.running().await?;
        let taken = running
            .qmp
            .screendump_png(&path)
            .await
            .map_err(|e| self.qmp_failed(e));
        let outcome = taken.as_ref().map(|_| ()).map_err(ToString::to_string);
        let label = format!("screenshot {stem}.png");
        let log = &self.config.log;
        log.mark(
            Some(&self.config.name),
            "screenshot",
            &label,
            outcome,
            Some(&path),
        );
        taken?;
        self.log(&format!("screenshot: {}", path.display()));
        Ok(path)
    }

    /// A usage error unless the machine has a screen (`display = true`), naming what
    /// the call wanted to `do_to` it.
    pub(super) fn need_screen(&self, do_to: &str) -> Result<(), Error> {
        if self.config.command.hardware.display {
            return Ok(());
        }
        let arch = self.config.command.hardware.arch;
        let remedy = if arch.vga {
            "give it `display = true` in the spec".to_owned()
        } else {
            format!(
                "{arch} machines have none (Debian's {} cloud kernel has no graphics driver)",
                arch.debian
            )
        };
        Err(Error::Usage(format!(
            "machine `{}` has no screen to {do_to}: {remedy}",
            self.config.name
        )))
    }

    /// Presses a key combination on the machine's keyboard, e.g. `ctrl-alt-delete`,
    /// `alt-f2`, `ret` (QEMU key names joined by `-`).
    pub async fn send_key(&self, combo: &str) -> Result<(), Error> {
        let keys = keys::parse_combo(combo)
            .map_err(|e| Error::Usage(format!("machine `{}`: send_key: {e}", self.config.name)))?;
        self.press(&keys).await
    }

    /// Types `text` on the machine's keyboard (US layout), one key press per character,
    /// `delay` apart.
    pub async fn send_chars(&self, text: &str, delay: Duration) -> Result<(), Error> {
        let mut presses = Vec::new();
        for c in text.chars() {
            let keys = keys::char_keys(c).ok_or_else(|| {
                Error::Usage(format!(
                    "machine `{}`: send_chars: no key for {c:?} on a US keyboard",
                    self.config.name
                ))
            })?;
            presses.push(keys.into_iter().map(String::from).collect::<Vec<_>>());
        }
        self.log(&format!("typing {text:?}"));
        for keys in presses {
            self.press(&keys).await?;
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }

    pub(super) async fn press(&self, keys: &[String]) -> Result<(), Error> {
        let running = self.running().await?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        running
            .qmp
            .send_keys(&keys)
            .await
            .map_err(|e| self.qmp_failed(e))
    }
}
