//! The text on a machine's screen: read by the agent from the virtual console when it
//! can, else by OCR of a screendump ([`crate::ocr`]); and waiting for text to appear.

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_agent::proto;
use regex::Regex;

use super::state::{Machine, Running};
use crate::agent_client::Guest;
use crate::error::Error;
use crate::ocr::{self, OcrFailure};

/// How long the agent may take to answer a screen read.
const AGENT_LIMIT: Duration = Duration::from_secs(30);

/// How a screen's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScreenReader {
    /// By flotilla-agent from the virtual console, exactly; by OCR when the console is
    /// in graphics mode or the guest runs qemu-ga (or an agent too old to read it).
    #[default]
    Auto,
    /// By OCR of a screendump, whatever the console's mode.
    Ocr,
}

/// A screen's text and how it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenText {
    /// Lines joined by newlines, without trailing blanks.
    pub text: String,
    /// `agent`, or `OCR (<variant>)`: the picture variant the text came from.
    pub via: String,
}

impl ScreenText {
    /// Whether the text was read by OCR.
    pub fn is_ocr(&self) -> bool {
        self.via.starts_with("OCR")
    }
}

impl Machine {
    /// The text on the machine's screen (`display = true`): the virtual console's exact
    /// text when the agent can read it, else what OCR reads off a screendump (its
    /// first, best, picture variant).
    pub async fn get_screen_text(&self) -> Result<String, Error> {
        Ok(self.read_screen(ScreenReader::Auto).await?.text)
    }

    /// The text on the machine's screen read by OCR, even off a text console.
    pub async fn get_screen_text_ocr(&self) -> Result<String, Error> {
        Ok(self.read_screen(ScreenReader::Ocr).await?.text)
    }

    /// The text on the machine's screen, read as `how` says, and how it was read.
    pub async fn read_screen(&self, how: ScreenReader) -> Result<ScreenText, Error> {
        self.need_screen("read the text of")?;
        let read = async {
            let running = self.running().await?;
            Ok(self.screen_attempt(&running, how, None).await?.0)
        };
        let name = Some(&*self.config.name);
        let log = &self.config.log;
        log.in_step(name, "command", "reading the screen", read)
            .await
    }

    /// Waits until the screen's text matches the regular expression `pattern` (read
    /// again and again, see [`Machine::get_screen_text`]); returns the text.
    pub async fn wait_for_text(&self, pattern: &str, timeout: Duration) -> Result<String, Error> {
        Ok(self
            .wait_for_text_with(pattern, timeout, ScreenReader::Auto)
            .await?
            .text)
    }

    /// [`Machine::wait_for_text`], with the screen read as `how` says. By OCR, it stops
    /// at the first picture variant whose text matches. Fails at once if QEMU exits or
    /// the VM pauses.
    pub async fn wait_for_text_with(
        &self,
        pattern: &str,
        timeout: Duration,
        how: ScreenReader,
    ) -> Result<ScreenText, Error> {
        self.need_screen("wait for text on")?;
        let name = &self.config.name;
        let re = Regex::new(pattern).map_err(|e| {
            Error::Usage(format!(
                "machine `{name}`: wait_for_text: bad regular expression `{pattern}`: {e}"
            ))
        })?;
        self.log(&format!(
            "waiting for text matching `{pattern}` on the screen"
        ));
        let what = format!("waiting for text `{pattern}` on the screen");
        let wait = self.screen_wait(&re, pattern, timeout, how, &what);
        self.config
            .log
            .in_step(Some(name), "wait", &what, wait)
            .await
    }

    /// The wait of [`Machine::wait_for_text_with`], `what` it is: the screen read until
    /// its text matches `re` (`pattern`), within `timeout`.
    async fn screen_wait(
        &self,
        re: &Regex,
        pattern: &str,
        timeout: Duration,
        how: ScreenReader,
        what: &str,
    ) -> Result<ScreenText, Error> {
        let running = self.running().await?;
        let deadline = Instant::now() + timeout;
        let mut last: Option<ScreenText> = None;
        let poll = async {
            loop {
                let (screen, matched) = self.screen_attempt(&running, how, Some(re)).await?;
                if matched {
                    return Ok(screen);
                }
                // The agent's read is cheap, OCR is not: it paces itself.
                let pause = if screen.is_ocr() { 0 } else { 100 };
                last = Some(screen);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        };
        let guarded = self.guarded(&running, what, poll);
        match tokio::time::timeout_at(deadline.into(), guarded).await {
            Ok(result) => result,
            Err(_) => {
                let (via, screen) = match last {
                    Some(s) => (Some(s.via), s.text),
                    None => (None, String::new()),
                };
                Err(Error::ScreenTimeout {
                    machine: self.config.name.clone(),
                    pattern: pattern.to_owned(),
                    after: timeout,
                    via,
                    screen,
                })
            }
        }
    }

    /// One read of the screen; with `re`, whether the text matches it (by OCR, the
    /// first variant that matches, else the first variant's text).
    async fn screen_attempt(
        &self,
        running: &Running,
        how: ScreenReader,
        re: Option<&Regex>,
    ) -> Result<(ScreenText, bool), Error> {
        if how == ScreenReader::Auto {
            if let Some(text) = self.screen_by_agent(running).await? {
                let matched = re.is_some_and(|re| re.is_match(&text));
                let via = "agent".to_owned();
                return Ok((ScreenText { text, via }, matched));
            }
        }
        self.screen_by_ocr(running, re).await
    }

    /// The console's text from flotilla-agent; `None` when OCR must read it instead
    /// (graphics mode, qemu-ga, an agent without the request).
    async fn screen_by_agent(&self, running: &Running) -> Result<Option<String>, Error> {
        let guest = self.guest(running).await?;
        let agent = match &*guest {
            Guest::Flotilla(a) if a.has_feature(proto::FEATURE_SCREEN_TEXT) => a,
            _ => return Ok(None),
        };
        let started = Instant::now();
        let read = async {
            agent
                .screen_text()
                .await
                .map_err(|e| self.agent_failed("reading the screen", e))
        };
        let read = self.guarded(running, "reading the screen", read);
        let reply = match tokio::time::timeout(AGENT_LIMIT, read).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(Error::Timeout {
                    machine: self.config.name.clone(),
                    what: "reading the screen through the agent".into(),
                    after: AGENT_LIMIT,
                })
            }
        };
        check_reply(&reply).map_err(|problem| {
            self.agent_failed(
                "reading the screen",
                crate::agent_client::GuestError::Local(format!("bad reply: {problem}")),
            )
        })?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if reply.graphics {
            self.log(&format!(
                "screen: the console is in graphics mode ({ms:.0} ms): reading it by OCR"
            ));
            return Ok(None);
        }
        tracing::debug!(
            "{}: screen {}x{} read by the agent in {ms:.1} ms",
            self.config.name,
            reply.cols,
            reply.rows
        );
        Ok(Some(reply.text))
    }

    /// The screen's text by OCR of a screendump: each picture variant in turn until
    /// one matches `re` (without `re`, the first).
    async fn screen_by_ocr(
        &self,
        running: &Running,
        re: Option<&Regex>,
    ) -> Result<(ScreenText, bool), Error> {
        let name = &self.config.name;
        let failed = |problem: String| Error::Ocr {
            machine: name.clone(),
            problem,
        };
        let dir =
            tempfile::tempdir().map_err(|e| failed(format!("making a temporary folder: {e}")))?;
        let dump = dir.path().join("screen.png");
        let started = Instant::now();
        {
            let _busy = self.config.log.activity(format!("{name}: screendump"));
            running
                .qmp
                .screendump_png(&dump)
                .await
                .map_err(|e| self.qmp_failed(e))?;
        }
        let picture = image::open(&dump)
            .map_err(|e| failed(format!("reading the screendump {}: {e}", dump.display())))?;
        let variants = {
            let _busy = self
                .config
                .log
                .activity(format!("{name}: preparing the screendump for OCR"));
            ocr::variants(&picture)
        };
        self.log(&format!(
            "screen: screendump {}x{} and {} OCR pictures in {} ms",
            picture.width(),
            picture.height(),
            variants.len(),
            started.elapsed().as_millis()
        ));
        let mut first: Option<ScreenText> = None;
        for variant in &variants {
            let file = dir
                .path()
                .join(format!("{}.png", variant.name.replace(' ', "-")));
            variant
                .image
                .save(&file)
                .map_err(|e| failed(format!("writing {}: {e}", file.display())))?;
            let started = Instant::now();
            let text = {
                let _busy = self
                    .config
                    .log
                    .activity(format!("{name}: OCR of the {} picture", variant.name));
                self.tesseract(&file).await?
            };
            self.log(&format!(
                "screen: OCR of the {} picture in {} ms",
                variant.name,
                started.elapsed().as_millis()
            ));
            let screen = ScreenText {
                text: ocr::tidy(&text),
                via: format!("OCR ({})", variant.name),
            };
            match re {
                None => return Ok((screen, false)),
                Some(re) if re.is_match(&screen.text) => return Ok((screen, true)),
                Some(_) => {
                    first.get_or_insert(screen);
                }
            }
        }
        let screen = first.ok_or_else(|| failed("no picture to read".into()))?;
        Ok((screen, false))
    }

    async fn tesseract(&self, picture: &Path) -> Result<String, Error> {
        let program = Path::new(ocr::TESSERACT);
        ocr::tesseract(program, picture, ocr::TESSERACT_LIMIT)
            .await
            .map_err(|failure| ocr_error(&self.config.name, program, failure))
    }
}

/// Why OCR failed, as `machine`'s error: a missing `program` is a set-up error naming
/// the packages.
fn ocr_error(machine: &str, program: &Path, failure: OcrFailure) -> Error {
    match failure {
        OcrFailure::Missing => Error::Setup {
            what: format!(
                "machine `{machine}`: reading the screen by OCR needs `{}`, which is not installed",
                program.display()
            ),
            hint: "install Debian's `tesseract-ocr` and `tesseract-ocr-eng` (scripts/setup does)"
                .into(),
        },
        OcrFailure::Failed(problem) => Error::Ocr {
            machine: machine.to_owned(),
            problem,
        },
    }
}

/// The agent's reply fits its own size: at most `rows` lines of at most `cols`
/// characters, the cursor inside.
fn check_reply(reply: &proto::ScreenText) -> Result<(), String> {
    let (rows, cols) = (usize::from(reply.rows), usize::from(reply.cols));
    if rows == 0 || cols == 0 {
        return Err(format!("a console of {cols}x{rows}"));
    }
    let lines = reply.text.lines().count();
    if lines > rows {
        return Err(format!(
            "{lines} lines of text on a console of {rows} lines"
        ));
    }
    if let Some((n, line)) = reply
        .text
        .lines()
        .enumerate()
        .find(|(_, l)| l.chars().count() > cols)
    {
        return Err(format!(
            "line {} has {} characters on a console of {cols} columns",
            n + 1,
            line.chars().count()
        ));
    }
    if reply.cursor_row >= reply.rows || reply.cursor_col >= reply.cols {
        return Err(format!(
            "the cursor at line {}, column {} is off the {cols}x{rows} console",
            reply.cursor_row, reply.cursor_col
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reply(rows: u16, cols: u16, text: &str) -> proto::ScreenText {
        proto::ScreenText {
            rows,
            cols,
            cursor_row: 0,
            cursor_col: 0,
            graphics: false,
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn a_missing_tesseract_is_a_setup_error_naming_the_packages() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("tesseract");
        let failure = ocr::tesseract(&program, Path::new("a.png"), Duration::from_secs(5))
            .await
            .unwrap_err();
        let e = ocr_error("m", &program, failure);
        assert!(matches!(e, Error::Setup { .. }), "{e:?}");
        assert!(!e.is_test_failure());
        assert_eq!(
            e.to_string(),
            format!(
                "machine `m`: reading the screen by OCR needs `{}`, which is not installed\n\
                 hint: install Debian's `tesseract-ocr` and `tesseract-ocr-eng` (scripts/setup does)",
                program.display()
            )
        );
        let e = ocr_error("m", &program, OcrFailure::Failed("it broke".into()));
        assert_eq!(
            e.to_string(),
            "machine `m`: reading the screen by OCR: it broke"
        );
    }

    #[test]
    fn replies_must_fit_their_console() {
        assert_eq!(check_reply(&reply(2, 3, "abc\ndef")), Ok(()));
        assert_eq!(check_reply(&reply(2, 3, "")), Ok(()));
        assert_eq!(
            check_reply(&reply(2, 3, "a\nb\nc")),
            Err("3 lines of text on a console of 2 lines".into())
        );
        assert_eq!(
            check_reply(&reply(2, 3, "ab\nabcd")),
            Err("line 2 has 4 characters on a console of 3 columns".into())
        );
        assert_eq!(
            check_reply(&reply(0, 80, "")),
            Err("a console of 80x0".into())
        );
        let mut off = reply(25, 80, "x");
        off.cursor_col = 80;
        assert_eq!(
            check_reply(&off),
            Err("the cursor at line 0, column 80 is off the 80x25 console".into())
        );
    }
}
