//! Text that applications chose (lock keys, and whatever else the store hands back),
//! made safe to print on a terminal: every character that could move the cursor, clear
//! the screen, start a new line or reorder what follows is written as a visible escape,
//! so that an application can neither forge nor hide rows of `ls`, nor rewrite `show`
//! or the `release` prompt.
//!
//! | in the text | printed |
//! |---|---|
//! | newline, carriage return, tab | `\n`, `\r`, `\t` |
//! | other C0 controls and DEL | `\x1b`, `\x00`, `\x7f` |
//! | C1 controls (U+0080–U+009F) | `\u{9b}` |
//! | bidirectional overrides and isolates, zero-width characters, line and paragraph separators, byte-order mark | `\u{202e}` |
//! | a backslash | `\\` (so that an escape in the output always means one character) |
//!
//! Everything else, including non-ASCII letters, is printed as it is. Text that is not
//! UTF-8 never gets here: the library leaves keys that are not UTF-8 out of its listings
//! (no lock of it has one), and the command line refuses arguments that are not. JSON
//! output does not go through here: serde_json escapes control characters itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every character that is not safe on a terminal escaped.
pub fn text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    push_escaped(&mut out, text);
    Cow::Owned(out)
}

/// A whole message for stderr, which may span lines on purpose (a parser's report
/// quoting a configuration file): newlines and tabs stay, every other unsafe character
/// is escaped. Interpolated keys are escaped with [`text`] before they get here.
pub fn message(message: &str) -> Cow<'_, str> {
    if !message
        .chars()
        .any(|c| needs_escape(c) && !matches!(c, '\n' | '\t' | '\\'))
    {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' | '\t' | '\\' => out.push(c),
            c => push_char(&mut out, c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || invisible(c)
}

/// Characters that are not controls but change how the text around them reads:
/// bidirectional overrides, embeddings and isolates (they reorder what follows, the
/// "Trojan Source" characters), zero-width characters, line and paragraph separators,
/// the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        push_char(out, c);
    }
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_ascii_control() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_text_is_borrowed_as_it_is() {
        for safe in [
            "jobs:nightly-report",
            "billing:{tenant-7}:job",
            "café ünïcödé 日本",
        ] {
            assert!(matches!(text(safe), Cow::Borrowed(s) if s == safe));
        }
    }

    #[test]
    fn controls_are_escaped_visibly() {
        assert_eq!(text("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(text("row\nforged"), "row\\nforged");
        assert_eq!(text("\r\t\0\x7f"), "\\r\\t\\x00\\x7f");
        assert_eq!(text("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(text("a\\x1b"), "a\\\\x1b", "a backslash is doubled");
    }

    #[test]
    fn invisible_reordering_characters_are_escaped() {
        assert_eq!(text("admin\u{202e}gnp.exe"), "admin\\u{202e}gnp.exe");
        assert_eq!(
            text("a\u{200b}b\u{2066}c\u{feff}"),
            "a\\u{200b}b\\u{2066}c\\u{feff}"
        );
        assert_eq!(text("line\u{2028}sep"), "line\\u{2028}sep");
    }

    #[test]
    fn messages_keep_their_own_lines() {
        assert_eq!(message("line 1\n  | url\n"), "line 1\n  | url\n");
        assert_eq!(message("a\\b"), "a\\b");
        assert_eq!(message("x\x1b[31my\rz"), "x\\x1b[31my\\rz");
    }
}
