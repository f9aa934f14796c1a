//! A machine's part in distributed coverage (`flotilla test --coverage`): its coverage
//! disk, the environment of its commands, and ending its programs so that they write
//! their data.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use super::state::Machine;
use crate::agent_client::Guest;
use crate::error::Error;
use flotilla_coverage::{guest_env, DISK_SERIAL, GUEST_DIR};

/// Size of the coverage disk (sparse: only what is written takes room on the host).
const DISK_MIB: u32 = 256;

/// How long programs get to exit after SIGTERM before the data is taken as it is.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(10);

/// How long the guest has to start the command that ends its programs (it says
/// `alive` first) before it is taken as not answering.
const ANSWER: Duration = Duration::from_secs(5);

/// What ending a machine's programs found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ended {
    /// Programs that were still running [`EXIT_GRACE`] after SIGTERM: `pid name`.
    pub(crate) left: Vec<String>,
}

impl Machine {
    /// Whether the guest kernel had gcov data (`/sys/kernel/debug/gcov`, copied with
    /// the rest) when the machine's programs were last ended for coverage; `None` if
    /// they never were.
    pub(crate) fn kernel_gcov(&self) -> Option<bool> {
        self.kernel_gcov.lock().ok().and_then(|k| *k)
    }

    /// The machine's coverage disk on the host (see `MachineConfig::coverage_disk`).
    pub(crate) fn coverage_disk(&self) -> PathBuf {
        self.config.coverage_disk()
    }

    /// The environment of the machine's commands: [`guest_env`] when it collects
    /// coverage.
    pub(super) fn coverage_env(&self) -> Vec<(String, String)> {
        if self.config.command.hardware.coverage {
            guest_env()
        } else {
            Vec::new()
        }
    }

    /// Makes the empty coverage disk unless it exists (a reboot keeps it).
    pub(super) async fn ensure_coverage_disk(&self) -> Result<(), Error> {
        let path = self.coverage_disk();
        if !self.config.command.hardware.coverage || path.exists() {
            return Ok(());
        }
        let failed = |problem: String| Error::Disk {
            machine: self.config.name.clone(),
            disk: "coverage".into(),
            problem,
        };
        let mke2fs = flotilla_host::programs::which_system_tool("mke2fs")
            .ok_or_else(|| failed("mke2fs not found: install e2fsprogs".into()))?;
        let partial = path.with_extension("partial");
        // ext2: no journal, so after a crash the host reads every synchronous write
        // where it is, without replaying anything.
        let out = Command::new(&mke2fs)
            .args(["-q", "-F", "-t", "ext2", "-L", "coverage"])
            .arg(&partial)
            .arg(format!("{DISK_MIB}M"))
            .output()
            .await
            .map_err(|e| failed(format!("running {}: {e}", mke2fs.display())))?;
        if !out.status.success() {
            return Err(failed(format!(
                "mke2fs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::rename(&partial, &path)
            .map_err(|e| failed(format!("renaming {}: {e}", partial.display())))
    }

    /// Mounts the coverage disk at [`GUEST_DIR`] (synchronous writes: what a program
    /// wrote is on the disk when its `write` returns, so a crash keeps it).
    pub(super) async fn mount_coverage(&self, guest: &Guest) -> Result<(), Error> {
        if !self.config.command.hardware.coverage {
            return Ok(());
        }
        let script = format!(
            "dev=; for d in /sys/block/vd*; do \
               [ \"$(cat $d/serial 2>/dev/null)\" = {DISK_SERIAL} ] && dev=/dev/${{d##*/}}; \
             done; \
             [ -n \"$dev\" ] || {{ echo 'no disk with serial {DISK_SERIAL}' >&2; exit 1; }}; \
             mkdir -p {GUEST_DIR} && mount -t ext2 -o sync,dirsync \"$dev\" {GUEST_DIR} \
             && chmod 1777 {GUEST_DIR}"
        );
        let out = guest
            .exec_shell(&script, Duration::from_secs(30), &[], |_, _| {})
            .await
            .map_err(|e| self.agent_failed("mounting the coverage disk", e))?;
        if out.status.code != Some(0) {
            return Err(Error::Disk {
                machine: self.config.name.clone(),
                disk: "coverage".into(),
                problem: format!(
                    "the guest could not mount it at {GUEST_DIR}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(())
    }

    /// Ends every program of the guest but init and the agent (SIGTERM, as a clean
    /// shutdown does), so that instrumented programs write their coverage data, and
    /// waits up to [`EXIT_GRACE`] for them; copies the kernel's gcov data when it has
    /// some; syncs. A machine that is not running has nothing to end.
    pub(crate) async fn end_programs(&self) -> Result<Option<Ended>, Error> {
        if !self.config.command.hardware.coverage {
            return Ok(None);
        }
        let Some(running) = self.running.lock().await.clone() else {
            return Ok(None);
        };
        if running.process.status().is_some() {
            return Ok(None);
        }
        if let Some(why) = running.paused.borrow().clone() {
            self.log(&format!("coverage: programs not ended ({why})"));
            return Ok(None);
        }
        if running.process.is_stopped() {
            self.log("coverage: programs not ended (qemu is stopped by a signal)");
            return Ok(None);
        }
        if let Some(why) = running.why_not_answering() {
            self.log(&format!(
                "coverage: programs not ended (the guest is not answering: {why})"
            ));
            return Ok(None);
        }
        let guest = self.guest(&running).await?;
        let script = end_script();
        let limit = EXIT_GRACE + Duration::from_secs(30);
        let (heard_tx, mut heard) = tokio::sync::watch::channel(false);
        let exec = guest.exec_shell(&script, limit, &[], move |_, _| {
            heard_tx.send_replace(true);
        });
        // qemu-ga hands over the output at the end only.
        let streams = matches!(*guest, Guest::Flotilla(_));
        let silent = async {
            if !streams
                || tokio::time::timeout(ANSWER, heard.wait_for(|h| *h))
                    .await
                    .is_ok()
            {
                std::future::pending::<()>().await;
            }
        };
        let out = tokio::select! {
            r = exec => r.map_err(|e| self.agent_failed("ending its programs for coverage", e))?,
            _ = running.process.exited() => return Ok(None),
            () = silent => {
                let why = format!("no answer within {} s", ANSWER.as_secs());
                self.log(&format!("coverage: programs not ended (the guest is not answering: {why})"));
                running.not_answering(why);
                return Ok(None);
            }
            _ = tokio::time::sleep(limit + Duration::from_secs(5)) => {
                return Err(Error::Timeout {
                    machine: self.config.name.clone(),
                    what: "ending its programs for coverage".into(),
                    after: limit,
                })
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let ended = Ended {
            left: text
                .lines()
                .filter_map(|l| l.strip_prefix("left "))
                .map(str::to_owned)
                .collect(),
        };
        if let Ok(mut k) = self.kernel_gcov.lock() {
            *k = Some(text.lines().any(|l| l == "kernel-gcov"));
        }
        if ended.left.is_empty() {
            self.log("coverage: programs ended (SIGTERM), data synced");
        } else {
            self.log(&format!(
                "coverage: still running {} s after SIGTERM, their data may be missing: {}",
                EXIT_GRACE.as_secs(),
                ended.left.join(", ")
            ));
        }
        Ok(Some(ended))
    }
}

/// The guest script of [`Machine::end_programs`]: ends every program but init, the
/// agent and itself, waits up to [`EXIT_GRACE`], names those left, copies the kernel's
/// gcov data, syncs. It says `alive` at once: a flotilla-agent guest that does not
/// within [`ANSWER`] is not waited for.
fn end_script() -> String {
    let tenths = EXIT_GRACE.as_millis() / 100;
    format!(
        r#"echo alive
keep=" 1 2 $$ "; p=$$
while [ "$p" -gt 1 ] 2>/dev/null; do
  read -r stat < /proc/$p/stat || break
  set -- ${{stat##*)}}; p=$2; keep="$keep$p "
done
targets=
for d in /proc/[0-9]*; do
  pid=${{d#/proc/}}
  case "$keep" in *" $pid "*) continue ;; esac
  [ -e "$d/exe" ] || continue
  targets="$targets $pid"
done
[ -n "$targets" ] && kill -TERM $targets 2>/dev/null
i=0; left=$targets
while [ -n "$left" ] && [ $i -lt {tenths} ]; do
  sleep 0.1; i=$((i+1)); now=
  for pid in $left; do [ -e /proc/$pid/exe ] && now="$now $pid"; done
  left=$now
done
for pid in $left; do echo "left $pid $(cat /proc/$pid/comm 2>/dev/null)"; done
[ -d /sys/kernel/debug/gcov ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
if [ -d /sys/kernel/debug/gcov ]; then
  echo kernel-gcov
  (cd /sys/kernel/debug/gcov && find . -name '*.gcda' | while read -r f; do
    mkdir -p "{GUEST_DIR}/gcov/${{f%/*}}" && cat "$f" > "{GUEST_DIR}/gcov/$f"; done)
fi
sync
"#
    )
}
