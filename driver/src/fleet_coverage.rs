//! A run's coverage at its end: [`Fleet::finish_coverage`] ends the machines'
//! programs, stops the machines, reads their coverage disks and makes the report.

use crate::fleet::Fleet;
use flotilla_coverage as coverage;

impl Fleet {
    /// With coverage on: ends every running machine's programs (so that instrumented
    /// ones write their data), stops the machines, copies each machine's data to
    /// `<log dir>/coverage/data/<machine>` and makes the report there (tracefiles,
    /// HTML); logs its table (and every problem in the log file) and returns it. The
    /// report is evidence: what goes wrong in it is in its messages, never an error.
    /// `None` without coverage.
    pub async fn finish_coverage(&self) -> Option<coverage::report::Report> {
        let settings = self.coverage()?;
        let ends =
            futures::future::join_all(self.machines().values().map(|m| m.end_programs())).await;
        self.stop_all().await;
        let out = self.log().dir().join("coverage");
        let mut data = Vec::new();
        let mut kernel = Vec::new();
        for ((name, machine), ended) in self.machines().iter().zip(ends) {
            let dest = out.join("data").join(name);
            let disk = machine.coverage_disk();
            let mut notes = Vec::new();
            match &ended {
                Ok(Some(e)) if !e.left.is_empty() => notes.push(format!(
                    "still running {} s after SIGTERM, so without their data: {}",
                    crate::machine::EXIT_GRACE.as_secs(),
                    e.left.join(", ")
                )),
                Ok(Some(_)) => {}
                Ok(None) if disk.exists() => notes.push(
                    "not running at the end (crashed, killed or shut down): only the data \
                     its programs wrote before"
                        .into(),
                ),
                Ok(None) => {}
                Err(e) => notes.push(format!("its programs could not be ended: {e}")),
            }
            if let Some(has) = machine.kernel_gcov() {
                kernel.push((name.clone(), has));
            }
            if !disk.exists() {
                notes.push("never started".into());
            } else if let Err(e) = coverage::collect::extract(&disk, &dest) {
                notes.push(e);
            }
            data.push(coverage::report::MachineData {
                name: name.clone(),
                data: dest,
                note: (!notes.is_empty()).then(|| notes.join("; ")),
            });
        }
        let notes = kernel_notes(&kernel);
        let options = coverage::report::Options {
            llvm_binaries: settings.llvm_binaries.clone(),
            fail_under: settings.fail_under,
            notes,
        };
        let report_out = out.clone();
        let report = tokio::task::spawn_blocking(move || {
            coverage::report::build(&report_out, &data, &options)
        })
        .await
        .unwrap_or_else(|e| coverage::report::Report {
            out,
            messages: vec![format!("the coverage report failed: {e}")],
            ..Default::default()
        });
        for line in report.table().lines() {
            self.log().info(line);
        }
        // The table quotes the first problems; the log file keeps them all.
        for message in &report.messages {
            self.log().file_only(&format!("coverage: {message}"));
        }
        Some(report)
    }
}

/// The report's notes about the guest kernels: (machine, whether it had gcov data).
fn kernel_notes(kernel: &[(String, bool)]) -> Vec<(String, String)> {
    let names = |has: bool| -> Vec<String> {
        kernel
            .iter()
            .filter(|k| k.1 == has)
            .map(|k| format!("`{}`", k.0))
            .collect()
    };
    let (with, without) = (names(true), names(false));
    let mut notes = Vec::new();
    if !with.is_empty() {
        notes.push((
            "guest kernel".to_owned(),
            format!("kernel gcov data from {} is in the report", with.join(", ")),
        ));
    }
    if !without.is_empty() {
        notes.push((
            "guest kernel".to_owned(),
            format!(
                "no kernel coverage from {}: no /sys/kernel/debug/gcov (Debian's \
                 cloud kernel is built without CONFIG_GCOV_KERNEL)",
                without.join(", ")
            ),
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_notes_group_the_machines() {
        let kernel = [
            ("a".to_owned(), false),
            ("b".to_owned(), false),
            ("c".to_owned(), true),
        ];
        let notes = super::kernel_notes(&kernel);
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].1, "kernel gcov data from `c` is in the report");
        assert!(notes[1].1.starts_with("no kernel coverage from `a`, `b`: "));
        assert!(super::kernel_notes(&[]).is_empty());
    }
}
