//! Keyboard input for QMP `send-key`: key combinations by name and a US-layout
//! character table.

/// The QEMU key codes (qcodes) pressed together to type `c` on a US keyboard, or
/// `None` when the layout has no key for it.
pub fn char_keys(c: char) -> Option<Vec<&'static str>> {
    const SHIFTED: &[(char, &str)] = &[
        ('!', "1"),
        ('@', "2"),
        ('#', "3"),
        ('$', "4"),
        ('%', "5"),
        ('^', "6"),
        ('&', "7"),
        ('*', "8"),
        ('(', "9"),
        (')', "0"),
        ('_', "minus"),
        ('+', "equal"),
        ('{', "bracket_left"),
        ('}', "bracket_right"),
        ('|', "backslash"),
        (':', "semicolon"),
        ('"', "apostrophe"),
        ('~', "grave_accent"),
        ('<', "comma"),
        ('>', "dot"),
        ('?', "slash"),
    ];
    const PLAIN: &[(char, &str)] = &[
        ('\n', "ret"),
        ('\t', "tab"),
        (' ', "spc"),
        ('\u{8}', "backspace"),
        ('\u{1b}', "esc"),
        ('-', "minus"),
        ('=', "equal"),
        ('[', "bracket_left"),
        (']', "bracket_right"),
        ('\\', "backslash"),
        (';', "semicolon"),
        ('\'', "apostrophe"),
        ('`', "grave_accent"),
        (',', "comma"),
        ('.', "dot"),
        ('/', "slash"),
    ];
    const LETTERS: [&str; 26] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
        "s", "t", "u", "v", "w", "x", "y", "z",
    ];
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    if c.is_ascii_lowercase() {
        return Some(vec![LETTERS[usize::from(c as u8 - b'a')]]);
    }
    if c.is_ascii_uppercase() {
        return Some(vec!["shift", LETTERS[usize::from(c as u8 - b'A')]]);
    }
    if c.is_ascii_digit() {
        return Some(vec![DIGITS[usize::from(c as u8 - b'0')]]);
    }
    if let Some((_, k)) = PLAIN.iter().find(|(ch, _)| *ch == c) {
        return Some(vec![k]);
    }
    SHIFTED
        .iter()
        .find(|(ch, _)| *ch == c)
        .map(|(_, k)| vec!["shift", *k])
}

/// Parses a key combination such as `ctrl-alt-delete`, `alt-f2`, `ret` or `shift-a`:
/// qcodes joined by `-`, with `-` itself named `minus`. Single characters are looked up
/// in the US table, so `a`, `A` and `?` work too.
pub fn parse_combo(combo: &str) -> Result<Vec<String>, String> {
    if combo.is_empty() {
        return Err("empty key combination".into());
    }
    let mut keys = Vec::new();
    for part in combo.split('-') {
        let mut chars = part.chars();
        match (chars.next(), chars.next()) {
            (None, _) => {
                return Err(format!(
                    "`{combo}`: empty key name (write `minus` for the - key)"
                ))
            }
            (Some(c), None) => match char_keys(c) {
                Some(k) => keys.extend(k.into_iter().map(String::from)),
                None => return Err(format!("`{combo}`: no key for `{c}` on a US keyboard")),
            },
            _ => {
                let name = ALIASES
                    .iter()
                    .find(|(alias, _)| alias.eq_ignore_ascii_case(part))
                    .map_or(part.to_ascii_lowercase(), |(_, q)| (*q).to_owned());
                if !QCODES.contains(&name.as_str()) {
                    return Err(format!(
                        "`{combo}`: `{part}` is not a key name (QEMU's names: ctrl, alt, \
                         shift, meta_l, ret, esc, tab, spc, backspace, delete, f1 to f12, \
                         up, pgdn, kp_enter, ...; or a single character)"
                    ));
                }
                keys.push(name);
            }
        }
    }
    keys.dedup();
    Ok(keys)
}

/// QEMU 7.2's key names (the values of the QAPI enum `QKeyCode`).
#[rustfmt::skip]
const QCODES: &[&str] = &[
    "unmapped", "shift", "shift_r", "alt", "alt_r", "ctrl", "ctrl_r", "menu", "esc", "1",
    "2", "3", "4", "5", "6", "7", "8", "9", "0", "minus", "equal", "backspace", "tab", "q",
    "w", "e", "r", "t", "y", "u", "i", "o", "p", "bracket_left", "bracket_right", "ret",
    "a", "s", "d", "f", "g", "h", "j", "k", "l", "semicolon", "apostrophe", "grave_accent",
    "backslash", "z", "x", "c", "v", "b", "n", "m", "comma", "dot", "slash", "asterisk",
    "spc", "caps_lock", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10",
    "num_lock", "scroll_lock", "kp_divide", "kp_multiply", "kp_subtract", "kp_add",
    "kp_enter", "kp_decimal", "sysrq", "kp_0", "kp_1", "kp_2", "kp_3", "kp_4", "kp_5",
    "kp_6", "kp_7", "kp_8", "kp_9", "less", "f11", "f12", "print", "home", "pgup", "pgdn",
    "end", "left", "up", "down", "right", "insert", "delete", "stop", "again", "props",
    "undo", "front", "copy", "open", "paste", "find", "cut", "lf", "help", "meta_l",
    "meta_r", "compose", "pause", "ro", "hiragana", "henkan", "yen", "muhenkan",
    "katakanahiragana", "kp_comma", "kp_equals", "power", "sleep", "wake", "audionext",
    "audioprev", "audiostop", "audioplay", "audiomute", "volumeup", "volumedown",
    "mediaselect", "mail", "calculator", "computer", "ac_home", "ac_back", "ac_forward",
    "ac_refresh", "ac_bookmarks", "lang1", "lang2",
];

/// Friendly names for qcodes.
const ALIASES: &[(&str, &str)] = &[
    ("enter", "ret"),
    ("return", "ret"),
    ("space", "spc"),
    ("escape", "esc"),
    ("del", "delete"),
    ("control", "ctrl"),
    ("pageup", "pgup"),
    ("pagedown", "pgdn"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_map_to_us_keys() {
        assert_eq!(char_keys('a'), Some(vec!["a"]));
        assert_eq!(char_keys('Z'), Some(vec!["shift", "z"]));
        assert_eq!(char_keys('7'), Some(vec!["7"]));
        assert_eq!(char_keys('&'), Some(vec!["shift", "7"]));
        assert_eq!(char_keys('\n'), Some(vec!["ret"]));
        assert_eq!(char_keys(' '), Some(vec!["spc"]));
        assert_eq!(char_keys('|'), Some(vec!["shift", "backslash"]));
        assert_eq!(char_keys('é'), None);
        // Every printable ASCII character has a key.
        for c in ' '..='~' {
            assert!(char_keys(c).is_some(), "{c:?}");
        }
    }

    #[test]
    fn combinations_parse() {
        assert_eq!(
            parse_combo("ctrl-alt-delete").unwrap(),
            ["ctrl", "alt", "delete"]
        );
        assert_eq!(parse_combo("alt-F2").unwrap(), ["alt", "f2"]);
        assert_eq!(parse_combo("Enter").unwrap(), ["ret"]);
        assert_eq!(parse_combo("A").unwrap(), ["shift", "a"]);
        assert_eq!(parse_combo("ctrl-c").unwrap(), ["ctrl", "c"]);
        assert!(parse_combo("").is_err());
        assert!(parse_combo("ctrl--").unwrap_err().contains("minus"));
        assert!(parse_combo("ctrl-a b").is_err());
        assert!(parse_combo("é").is_err());
        // Names QEMU does not know are refused here, not by QEMU's `send-key`.
        let e = parse_combo("ctrl-nokey").unwrap_err();
        assert!(e.contains("`nokey` is not a key name"), "{e}");
        assert_eq!(parse_combo("kp_enter-F12").unwrap(), ["kp_enter", "f12"]);
    }

    #[test]
    fn the_table_and_aliases_use_qemu_names() {
        assert_eq!(QCODES.len(), 150);
        for c in ' '..='~' {
            for key in char_keys(c).unwrap() {
                assert!(QCODES.contains(&key), "{c:?}: {key}");
            }
        }
        for (alias, qcode) in ALIASES {
            assert!(QCODES.contains(qcode), "{alias}: {qcode}");
        }
    }
}
