//! Reading text off a picture of a screen with Tesseract (Debian's `tesseract-ocr` and
//! `tesseract-ocr-eng`): the picture made into [`variants`] that OCR reads well, and
//! one `tesseract` process per variant, bounded by a time limit.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Luma};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use flotilla_host::process::{describe_status, Process};

/// The program, looked up in `PATH`.
pub(crate) const TESSERACT: &str = "tesseract";

/// How long one `tesseract` run may take before it is killed.
pub(crate) const TESSERACT_LIMIT: Duration = Duration::from_secs(60);

/// Why OCR gave no text.
#[derive(Debug)]
pub(crate) enum OcrFailure {
    /// The program is not installed.
    Missing,
    /// Any other failure, in words.
    Failed(String),
}

/// One picture for OCR: the screen made bigger, grey, dark on light.
#[derive(Debug)]
pub(crate) struct Variant {
    /// What was done, for the log: `3x`, `3x threshold`, `2x threshold`.
    pub name: &'static str,
    pub image: GrayImage,
}

/// The pictures to try, best first: the screen scaled 3x and grey (inverted when its
/// background is dark, Tesseract reads dark text on a light ground best), then that
/// turned black and white at Otsu's threshold, then the same at 2x.
pub(crate) fn variants(screen: &DynamicImage) -> Vec<Variant> {
    let mut grey = screen.to_luma8();
    if mean(&grey) < 128.0 {
        image::imageops::invert(&mut grey);
    }
    let scaled = |factor: u32| {
        image::imageops::resize(
            &grey,
            grey.width() * factor,
            grey.height() * factor,
            FilterType::Triangle,
        )
    };
    let x3 = scaled(3);
    let x3_black_white = threshold(&x3);
    let x2_black_white = threshold(&scaled(2));
    vec![
        Variant {
            name: "3x",
            image: x3,
        },
        Variant {
            name: "3x threshold",
            image: x3_black_white,
        },
        Variant {
            name: "2x threshold",
            image: x2_black_white,
        },
    ]
}

fn mean(image: &GrayImage) -> f64 {
    let pixels = image.as_raw();
    if pixels.is_empty() {
        return 255.0;
    }
    pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / pixels.len() as f64
}

/// Black and white at the threshold that best separates the two classes of grey
/// (Otsu's method).
fn threshold(image: &GrayImage) -> GrayImage {
    let mut histogram = [0u64; 256];
    for &p in image.as_raw() {
        histogram[usize::from(p)] += 1;
    }
    let total: u64 = histogram.iter().sum();
    let sum_all: f64 = histogram
        .iter()
        .enumerate()
        .map(|(i, &n)| i as f64 * n as f64)
        .sum();
    let (mut best, mut best_between) = (127u8, -1.0f64);
    let (mut below, mut sum_below) = (0u64, 0.0f64);
    for (level, &n) in histogram.iter().enumerate() {
        below += n;
        sum_below += level as f64 * n as f64;
        let above = total - below;
        if below == 0 || above == 0 {
            continue;
        }
        let mean_below = sum_below / below as f64;
        let mean_above = (sum_all - sum_below) / above as f64;
        let between = below as f64 * above as f64 * (mean_below - mean_above).powi(2);
        if between > best_between {
            best_between = between;
            best = level as u8;
        }
    }
    let mut out = image.clone();
    for p in out.pixels_mut() {
        *p = Luma([if p.0[0] > best { 255 } else { 0 }]);
    }
    out
}

/// Runs `program <picture> stdout --psm 6` and returns what it read; killed at
/// `limit`. One OCR thread (`OMP_THREAD_LIMIT=1`); the page read as one block of lines
/// (`--psm 6`): Tesseract's own layout analysis reads a screen of alike lines column by
/// column.
pub(crate) async fn tesseract(
    program: &Path,
    picture: &Path,
    limit: Duration,
) -> Result<String, OcrFailure> {
    let mut cmd = Command::new(program);
    cmd.arg(picture)
        .args(["stdout", "--psm", "6"])
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (process, stdio) = match Process::spawn("tesseract", cmd).await {
        Ok(spawned) => spawned,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OcrFailure::Missing),
        Err(e) => {
            return Err(OcrFailure::Failed(format!(
                "starting {}: {e}",
                program.display()
            )))
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let run = async {
        let out = async {
            if let Some(mut s) = stdio.stdout {
                let _ = s.read_to_end(&mut stdout).await;
            }
        };
        let err = async {
            if let Some(mut s) = stdio.stderr {
                let _ = s.read_to_end(&mut stderr).await;
            }
        };
        tokio::join!(out, err);
        process.exited().await
    };
    let status = match tokio::time::timeout(limit, run).await {
        Ok(status) => status,
        Err(_) => {
            process.close(Duration::ZERO).await;
            return Err(OcrFailure::Failed(format!(
                "{} did not finish within {} s and was killed",
                program.display(),
                limit.as_secs_f64()
            )));
        }
    };
    if !status.success() {
        let said = String::from_utf8_lossy(&stderr);
        let said: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = said[said.len().saturating_sub(5)..].join("\n  | ");
        return Err(OcrFailure::Failed(format!(
            "{} {}{}",
            program.display(),
            describe_status(status),
            if tail.is_empty() {
                String::new()
            } else {
                format!("; it said:\n  | {tail}")
            }
        )));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Tesseract's text, tidied: form feeds gone, each line's trailing blanks and the
/// empty lines at either end removed.
pub(crate) fn tidy(text: &str) -> String {
    let lines: Vec<&str> = text.split(['\n', '\x0c']).map(str::trim_end).collect();
    let first = lines.iter().position(|l| !l.is_empty());
    let last = lines.iter().rposition(|l| !l.is_empty());
    match (first, last) {
        (Some(a), Some(b)) => lines[a..=b].join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use image::{Rgb, RgbImage};

    use super::*;

    /// A dark screen with a light square: what a text console looks like.
    fn dark_screen() -> DynamicImage {
        let mut img = RgbImage::from_pixel(40, 20, Rgb([0, 0, 0]));
        for x in 10..20 {
            for y in 5..10 {
                img.put_pixel(x, y, Rgb([170, 170, 170]));
            }
        }
        DynamicImage::ImageRgb8(img)
    }

    #[test]
    fn variants_are_bigger_and_dark_on_light() {
        let v = variants(&dark_screen());
        let names: Vec<&str> = v.iter().map(|v| v.name).collect();
        assert_eq!(names, ["3x", "3x threshold", "2x threshold"]);
        assert_eq!(v[0].image.dimensions(), (120, 60));
        assert_eq!(v[1].image.dimensions(), (120, 60));
        assert_eq!(v[2].image.dimensions(), (80, 40));
        // Inverted: the black background is white, the light square dark.
        assert_eq!(v[0].image.get_pixel(0, 0).0[0], 255);
        assert!(v[0].image.get_pixel(45, 22).0[0] < 128);
        // Thresholded: only black and white.
        for variant in &v[1..] {
            assert!(variant.image.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
            assert_eq!(variant.image.get_pixel(0, 0).0[0], 255);
        }
        assert_eq!(v[1].image.get_pixel(45, 22).0[0], 0);
        // A light screen is left the right way round.
        let light = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, Rgb([250, 250, 250])));
        assert_eq!(variants(&light)[0].image.get_pixel(0, 0).0[0], 250);
    }

    #[test]
    fn otsu_splits_two_greys() {
        let mut img = GrayImage::from_pixel(10, 1, Luma([40]));
        for x in 5..10 {
            img.put_pixel(x, 0, Luma([200]));
        }
        let bw = threshold(&img);
        assert_eq!(bw.get_pixel(0, 0).0[0], 0);
        assert_eq!(bw.get_pixel(9, 0).0[0], 255);
        // One grey only: nothing to split, nothing panics.
        let flat = threshold(&GrayImage::from_pixel(3, 3, Luma([90])));
        assert_eq!(flat.dimensions(), (3, 3));
        assert_eq!(threshold(&GrayImage::new(0, 0)).dimensions(), (0, 0));
    }

    #[test]
    fn tidy_drops_form_feeds_and_blank_ends() {
        assert_eq!(tidy("\n  \nHello  \n\nworld\n\x0c"), "Hello\n\nworld");
        assert_eq!(tidy("\x0c"), "");
    }

    fn fake(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("tesseract");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn a_missing_tesseract_is_named_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let r = tesseract(
            &dir.path().join("no-tesseract"),
            Path::new("x.png"),
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(r, Err(OcrFailure::Missing)), "{r:?}");
    }

    #[tokio::test]
    async fn tesseract_gets_the_picture_and_one_thread() {
        let dir = tempfile::tempdir().unwrap();
        let program = fake(dir.path(), r#"echo "$* $OMP_THREAD_LIMIT""#);
        let text = tesseract(&program, Path::new("/tmp/a.png"), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(text, "/tmp/a.png stdout --psm 6 1\n");
    }

    #[tokio::test]
    async fn a_crashing_tesseract_is_an_error_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let program = fake(
            dir.path(),
            "echo 'Error in pixReadStream' >&2; kill -SEGV $$",
        );
        let Err(OcrFailure::Failed(e)) =
            tesseract(&program, Path::new("a.png"), Duration::from_secs(10)).await
        else {
            panic!("no error")
        };
        assert!(e.contains("was killed by signal 11"), "{e}");
        assert!(e.contains("| Error in pixReadStream"), "{e}");
    }

    #[tokio::test]
    async fn a_hanging_tesseract_is_killed_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let program = fake(
            dir.path(),
            &format!("echo $$ > {}; exec sleep 30", pid_file.display()),
        );
        let started = std::time::Instant::now();
        let Err(OcrFailure::Failed(e)) =
            tesseract(&program, Path::new("a.png"), Duration::from_millis(500)).await
        else {
            panic!("no error")
        };
        assert!(started.elapsed() < Duration::from_secs(10), "{e}");
        assert!(
            e.contains("did not finish within 0.5 s and was killed"),
            "{e}"
        );
        // Killed and reaped: no such process any more.
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: signal 0 only checks that the process exists.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
    }
}
