//! Text inside XML and HTML (JUnit reports, `report.html`, the suite's index, coverage
//! pages), escaped in one place.

/// Text for an XML or HTML attribute or element: markup characters as entities, and
/// control characters that XML 1.0 forbids (a console's escape sequences) as `\u{..}`
/// text.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_forbidden_characters_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            escape("a\tb\nc\x1b[0m\u{ffff}"),
            "a\tb\nc\\u{1b}[0m\\u{ffff}"
        );
    }
}
