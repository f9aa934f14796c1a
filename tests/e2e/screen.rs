//! The screen's text: read by the agent off the virtual console, by OCR off a screendump
//! (a graphics-mode screen, or on request), and waiting for text to appear.

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_driver::{Error, Machine, ScreenReader};
use image::{DynamicImage, GenericImageView};

use super::{host_run, network, run_script};

/// Clears tty1 and keeps it open (a reader discards what it gets): typing reaches a
/// virtual console only while something has it open, and then it echoes.
async fn open_tty1(m: &Machine) {
    m.succeed("printf '\\033[H\\033[2J' > /dev/tty1; (cat /dev/tty1 > /dev/null 2>&1 &)")
        .await
        .unwrap();
    m.succeed("sleep 0.5").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn text_on_the_console_is_read_exactly_and_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    // `k` has no screen (and never boots: the calls refuse it first).
    let net = network(&dir, "[machines.m]\ndisplay = true\n[machines.k]\n");
    let m = net.machine("m").unwrap();
    let k = net.machine("k").unwrap();
    m.start().await.unwrap();

    open_tty1(&m).await;
    let typed = "Hello, World! a|b & \"q\" ~_+";
    m.send_chars(typed, Duration::from_millis(5)).await.unwrap();
    let read = m
        .wait_for_text(r"~_\+$", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(read, typed);
    let screen = m.read_screen(ScreenReader::Auto).await.unwrap();
    assert_eq!(
        (screen.text.as_str(), screen.via.as_str()),
        (typed, "agent")
    );
    assert_eq!(m.get_screen_text().await.unwrap(), typed);

    // Text that appears later: the wait returns once it is there.
    let started = Instant::now();
    m.succeed("(sleep 2; printf '\\nlate line 42\\n' > /dev/tty1) > /dev/null 2>&1 &")
        .await
        .unwrap();
    let read = m
        .wait_for_text(r"late line \d+", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2), "{read}");
    assert_eq!(read, format!("{typed}\nlate line 42"));

    // OCR reads the same screen (not to the letter: the words).
    let ocr = m.read_screen(ScreenReader::Ocr).await.unwrap();
    assert!(ocr.is_ocr(), "{ocr:?}");
    assert!(ocr.text.contains("Hello, World"), "{ocr:?}");
    assert!(ocr.text.contains("late line 42"), "{ocr:?}");
    let found = m
        .wait_for_text_with("late line 4.", Duration::from_secs(120), ScreenReader::Ocr)
        .await
        .unwrap();
    assert!(found.via.starts_with("OCR ("), "{found:?}");

    // No match: a timeout that names the machine and the pattern and quotes the screen.
    let started = Instant::now();
    let e = m
        .wait_for_text("never (there)", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{e}");
    assert!(matches!(e, Error::ScreenTimeout { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "machine `m`: waiting for text matching `never (there)` on the screen did not \
             finish within 2 s (timeout); the screen (read by agent) shows:\n  | {typed}\n  | late line 42"
        )
    );
    let e = m
        .wait_for_text("(", Duration::from_secs(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad regular expression `(`"), "{e}");

    // No screen: the same kind of error as a screenshot's.
    let e = k.get_screen_text().await.unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "machine `k` has no screen to read the text of: give it `display = true` in the spec"
    );
    let e = k
        .wait_for_text("x", Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("machine `k` has no screen to wait for text on"),
        "{e}"
    );

    // A VM that stops: the wait fails at once, saying why.
    m.qmp().await.unwrap().stop().await.unwrap();
    let started = Instant::now();
    let e = m
        .wait_for_text("never", Duration::from_secs(60))
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(15), "{e}");
    assert!(e.starts_with("machine `m`: "), "{e}");
    // (The read under way, or the wait around it, sees it first.)
    assert!(
        e.contains("the VM was paused (qmp STOP event) while "),
        "{e}"
    );
    assert!(e.contains(" the screen\n"), "{e}");
    net.stop_all().await;
}

/// `picture` (a screendump) as raw BGRX pixels of `width` x `height`, at (`left`,
/// `top`), in yellow on navy instead of its grey on black.
fn bgrx(picture: &DynamicImage, width: u32, height: u32, left: u32, top: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height {
        for x in 0..width {
            let (sx, sy) = (x.wrapping_sub(left), y.wrapping_sub(top));
            let lit = sx < picture.width()
                && sy < picture.height()
                && picture.get_pixel(sx, sy).0[..3].iter().any(|&c| c > 100);
            // B, G, R, X.
            out.extend_from_slice(if lit {
                &[0, 230, 255, 0]
            } else {
                &[96, 32, 16, 0]
            });
        }
    }
    out
}

/// The default guest has no framebuffer driver for QEMU's standard VGA, so a program of
/// our own draws a picture on it: graphics mode, a linear-framebuffer mode, pixels.
#[tokio::test(flavor = "multi_thread")]
async fn a_graphical_screen_is_read_by_ocr() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(&dir, "[machines.m]\ndisplay = true\n");
    let m = net.machine("m").unwrap();
    let program = dir.path().join("vbe_draw");
    let source = dir.path().join("vbe_draw.c");
    std::fs::write(&source, include_str!("vbe_draw.c")).unwrap();
    host_run(
        "gcc",
        std::process::Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&program)
            .arg(&source),
    );
    m.start().await.unwrap();

    // The picture: text on the console, in a screendump, drawn in other colours.
    m.succeed("printf '\\033[H\\033[2J\\n  Flotilla graphics 4711\\n' > /dev/tty1")
        .await
        .unwrap();
    let shot = m.screenshot("source").await.unwrap();
    let picture = image::open(&shot).unwrap();
    let (width, height) = (640, 480);
    let pixels = dir.path().join("pixels");
    std::fs::write(&pixels, bgrx(&picture, width, height, 16, 40)).unwrap();
    // The console's own text now says something else.
    m.succeed("printf '\\033[H\\033[2J\\nonly in text mode\\n' > /dev/tty1")
        .await
        .unwrap();
    assert_eq!(m.get_screen_text().await.unwrap(), "\nonly in text mode");

    m.copy_to(&program, "/tmp/vbe_draw").await.unwrap();
    m.copy_to(&pixels, "/tmp/pixels").await.unwrap();
    let vga = m
        .succeed(
            "for d in /sys/bus/pci/devices/*; do \
               [ \"$(cat $d/vendor):$(cat $d/device)\" = 0x1234:0x1111 ] && echo $d; done; true",
        )
        .await
        .unwrap();
    let vga = vga.trim();
    assert!(vga.starts_with("/sys/bus/pci/devices/"), "{vga:?}");
    m.succeed(&format!(
        "/tmp/vbe_draw /tmp/pixels {width} {height} {}",
        Path::new(vga).join("resource0").display()
    ))
    .await
    .unwrap();
    let shot = m.screenshot("graphics").await.unwrap();
    assert_eq!(image::open(&shot).unwrap().dimensions(), (width, height));

    let screen = m.read_screen(ScreenReader::Auto).await.unwrap();
    assert!(screen.is_ocr(), "{screen:?}");
    assert!(screen.text.contains("Flotilla graphics 4711"), "{screen:?}");
    assert!(!screen.text.contains("text mode"), "{screen:?}");
    assert!(m.get_screen_text().await.unwrap().contains("graphics 4711"));
    let found = m
        .wait_for_text(r"graphics \d{4}", Duration::from_secs(120))
        .await
        .unwrap();
    assert!(found.contains("4711"), "{found}");
    net.stop_all().await;
}

/// A guest with only qemu-ga: no agent to read the console, so OCR reads it.
#[tokio::test(flavor = "multi_thread")]
async fn a_qemu_ga_guest_is_read_by_ocr() {
    let dir = tempfile::tempdir().unwrap();
    super::files::make_qga_image(dir.path());
    let net = network(
        &dir,
        "[machines.stock]\nimage = \"root.qcow2\"\nagent = \"qga\"\ndisplay = true\n",
    );
    let vm = net.machine("stock").unwrap();
    vm.succeed("printf '\\033[H\\033[2J\\nqemu-ga screen 2718\\n' > /dev/tty1")
        .await
        .unwrap();
    let screen = vm.read_screen(ScreenReader::Auto).await.unwrap();
    assert!(screen.is_ocr(), "{screen:?}");
    assert!(screen.text.contains("screen 2718"), "{screen:?}");
    let found = vm
        .wait_for_text(r"screen \d+", Duration::from_secs(120))
        .await
        .unwrap();
    assert!(found.contains("2718"), "{found}");
    net.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scripts_read_and_wait_for_screen_text() {
    let dir = tempfile::tempdir().unwrap();
    run_script(
        &dir,
        "script = \"t.rhai\"\n[machines.m]\ndisplay = true\n",
        r#"
m.succeed("printf '\\033[H\\033[2J' > /dev/tty1; (sleep 1; echo 'script says 99' > /dev/tty1) > /dev/null 2>&1 &");
let text = m.wait_for_text("says \\d+");
if text != "script says 99" { throw `wait_for_text: ${text}`; }
let text = m.get_screen_text();
if text != "script says 99" { throw `get_screen_text: ${text}`; }
let text = m.wait_for_text_ocr("says 9.", 120);
if !text.contains("says 99") { throw `wait_for_text_ocr: ${text}`; }
let text = m.get_screen_text_ocr();
if !text.contains("says 99") { throw `get_screen_text_ocr: ${text}`; }
let late = "";
try { m.wait_for_text("never", 1); } catch (e) { late = `${e}`; }
if !late.contains("did not finish within 1 s") { throw `wait_for_text timeout: ${late}`; }
"#,
    )
    .await
    .unwrap();
}
