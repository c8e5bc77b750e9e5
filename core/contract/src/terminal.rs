//! Text the agent or the bundle could have written, made safe for your terminal.
//!
//! A terminal acts on more than `ESC [`: other escape sequences (OSC titles and hyperlinks,
//! DCS, …), C1 controls (which some terminals take for `ESC` plus a letter), a lone carriage
//! return or backspace that rewrites what was printed, and Unicode's bidirectional controls,
//! which make text read otherwise than it is. Every one of them is escaped here as visible
//! text (`\x1b`, `\u{202e}`), so what bottle prints of a log, a queue file or a path is
//! exactly what is there, and never drives the terminal. Only the live attached session of
//! the agent stays raw.

use std::borrow::Cow;

/// Whether `c` would act on a terminal or hide what text says: a control character other
/// than newline and tab (C0, DEL, C1), a bidirectional or invisible format control, a line or
/// paragraph separator, a blank that is no space (Hangul fillers), a variation selector, a tag
/// character (invisible text), or a private-use one (drawn as anything a font likes).
pub fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{061c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e000}'..='\u{f8ff}'
                | '\u{e0000}'..='\u{e0fff}'
                | '\u{f0000}'..='\u{10ffff}'
        )
}

/// `raw` with everything [`is_unsafe`] escaped as visible text; newlines and tabs are kept.
pub fn safe(raw: &str) -> Cow<'_, str> {
    escaped(raw, is_unsafe)
}

/// [`safe`] for one line of a list: newlines and tabs escaped too (`\x0a`), so a name
/// cannot start a line of its own.
pub fn one_line(raw: &str) -> Cow<'_, str> {
    escaped(raw, |c| is_unsafe(c) || c == '\n' || c == '\t')
}

/// `raw` with every character `escape` picks written as visible text.
fn escaped(raw: &str, escape: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !raw.chars().any(&escape) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if !escape(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_shown_not_acted_on_and_plain_text_is_untouched() {
        assert!(matches!(safe("plain\ttext\nline two"), Cow::Borrowed(_)));
        for (raw, shown) in [
            ("\x1b[31mred", "\\x1b[31mred"),
            ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
            (
                "\x1b]8;;http://evil/\x1b\\link",
                "\\x1b]8;;http://evil/\\x1b\\link",
            ),
            ("\u{9b}31m", "\\x9b31m"),
            ("ok\rEVIL", "ok\\x0dEVIL"),
            ("a\x08\x08b", "a\\x08\\x08b"),
            ("\u{202e}txt.exe", "\\u{202e}txt.exe"),
            ("del\x7f", "del\\x7f"),
            ("hello\u{e0041}\u{e0042}", "hello\\u{e0041}\\u{e0042}"),
            ("a\u{2028}b\u{2029}c", "a\\u{2028}b\\u{2029}c"),
            ("x\u{061c}\u{00ad}y", "x\\u{61c}\\xady"),
            ("\u{3164}\u{ffa0}", "\\u{3164}\\u{ffa0}"),
            ("e\u{fe0f}", "e\\u{fe0f}"),
        ] {
            assert_eq!(safe(raw), shown, "{raw:?}");
            assert!(!safe(raw).chars().any(is_unsafe));
        }
    }

    #[test]
    fn one_line_escapes_newlines_and_tabs_too() {
        assert!(matches!(one_line("src/main.rs"), Cow::Borrowed(_)));
        assert_eq!(
            one_line("a\nremoved src/main.rs\t\x1b[2J"),
            "a\\x0aremoved src/main.rs\\x09\\x1b[2J"
        );
    }
}
