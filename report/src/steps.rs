//! A run's steps as they happen: `events.jsonl` in the log folder, one JSON object a
//! line, each written whole as it happens (a crash loses at most the line being
//! written). The report draws its timeline from it.
//!
//! ```text
//! {"event":"start","t":1.2,"id":3,"machine":"server","kind":"command","label":"`uname -r`"}
//! {"event":"end","t":1.3,"id":3,"outcome":"ok","message":"exit status 0"}
//! {"event":"mark","t":2.0,"machine":"server","kind":"screenshot","label":"login.png","outcome":"ok","file":"server/login.png"}
//! ```
//!
//! `t` is seconds since the run started (the clock of `driver.log`); `machine` is
//! absent for the test's own steps (subtests, the error). A step that never ended
//! (a crash) has a `start` and no `end`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The file's name in the run's log folder.
pub const FILE: &str = "events.jsonl";

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    /// Its guard was dropped without a verdict.
    Ended,
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        t: f64,
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        machine: Option<String>,
        kind: String,
        label: String,
    },
    End {
        t: f64,
        id: u64,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Something without a duration: a screenshot, a failed polling condition.
    Mark {
        t: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        machine: Option<String>,
        kind: String,
        label: String,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// A file it made, relative to the log folder.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
    },
}

/// The open `events.jsonl` of a run; writes are whole lines, unbuffered.
#[derive(Debug, Default)]
pub struct Recorder {
    file: Mutex<Option<File>>,
}

impl Recorder {
    /// Creates `dir/events.jsonl`; without it, events are not recorded.
    pub fn create(dir: &Path) -> Recorder {
        Recorder {
            file: Mutex::new(File::create(dir.join(FILE)).ok()),
        }
    }

    pub fn record(&self, event: &Event) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        if let Ok(mut file) = self.file.lock() {
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(&line);
            }
        }
    }
}

/// The events of a file's text, and how many lines could not be read (a line cut by a
/// crash, another program's text).
pub fn parse(text: &str) -> (Vec<Event>, usize) {
    let mut bad = 0;
    let events = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let e = serde_json::from_str(l).ok();
            bad += usize::from(e.is_none());
            e
        })
        .collect();
    (events, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_written_a_line_each_and_read_back_skipping_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::create(dir.path());
        let start = Event::Start {
            t: 1.5,
            id: 0,
            machine: Some("server".into()),
            kind: "command".into(),
            label: "`true`".into(),
        };
        let end = Event::End {
            t: 2.0,
            id: 0,
            outcome: Outcome::Failed,
            message: Some("exit status 1".into()),
        };
        r.record(&start);
        r.record(&end);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with(
            r#"{"event":"start","t":1.5,"id":0,"machine":"server","kind":"command","label":"`true`"}"#
        ));
        // A line cut by a crash is skipped and counted.
        let cut = format!("{text}{{\"event\":\"start\",\"t\":3");
        assert_eq!(parse(&cut), (vec![start, end], 1));
    }
}
