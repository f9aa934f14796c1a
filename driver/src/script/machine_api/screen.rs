//! A machine's script calls: the screen and the keyboard (`screenshot`, `get_screen_text`,
//! `wait_for_text`, their OCR forms, `send_key`, `send_chars`).

use std::sync::Arc;
use std::time::Duration;

use rhai::Engine;

use crate::machine::ScreenReader;
use crate::script::args::secs_arg;
use crate::script::context::{Ctx, MachineHandle, Res, DEFAULT_WAIT};

/// Registers these calls of the `Machine` type.
pub(super) fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    engine.register_fn(
        "screenshot",
        move |m: &mut MachineHandle, name: &str| -> Res<String> {
            c.block(m.0.screenshot(name))
                .map(|p| p.display().to_string())
        },
    );
    let c = ctx.clone();
    engine.register_fn("get_screen_text", move |m: &mut MachineHandle| {
        c.block(m.0.get_screen_text())
    });
    let c = ctx.clone();
    engine.register_fn("get_screen_text_ocr", move |m: &mut MachineHandle| {
        c.block(m.0.get_screen_text_ocr())
    });
    with_limit!(
        engine,
        ctx,
        "wait_for_text",
        |c, m, pattern: &str, limit| {
            c.block(m.0.wait_for_text(pattern, limit.unwrap_or(DEFAULT_WAIT)))
        }
    );
    with_limit!(
        engine,
        ctx,
        "wait_for_text_ocr",
        |c, m, pattern: &str, limit| {
            let limit = limit.unwrap_or(DEFAULT_WAIT);
            c.block(m.0.wait_for_text_with(pattern, limit, ScreenReader::Ocr))
                .map(|s| s.text)
        }
    );
    let c = ctx.clone();
    engine.register_fn("send_key", move |m: &mut MachineHandle, keys: &str| {
        c.block(m.0.send_key(keys))
    });
    let c = ctx.clone();
    engine.register_fn("send_chars", move |m: &mut MachineHandle, text: &str| {
        c.block(m.0.send_chars(text, Duration::from_millis(10)))
    });
    let c = ctx.clone();
    engine.register_fn(
        "send_chars",
        move |m: &mut MachineHandle, text: &str, delay_ms: i64| {
            let delay = Duration::from_millis(delay_ms.clamp(0, 10_000) as u64);
            c.block(m.0.send_chars(text, delay))
        },
    );
}
