//! What reaches the terminal: text from the spec made inert, and output
//! that ends quietly when its reader has gone (`appliance inspect | head`).
//!
//! A spec is input from whoever wrote it. Echoed raw, a name or a reason
//! could print a line that looks like ours (`\nerror: ...`), move the cursor
//! back over a real error (`\r`), or send escape sequences to the terminal
//! (`\x1b]...`). [`inert`] makes such text visible instead of effective.

use std::fmt;
use std::io::{self, Write};

/// `text` with every control character (newline, CR, tab, ESC, DEL, the C1
/// range) and every bidirectional override written as a visible escape
/// (`\n`, `\r`, `\t`, `\u{1b}`), so it stays on its line and does nothing
/// to the terminal. For values from the spec put into one of our lines.
pub fn inert(text: &str) -> String {
    escape(text, false)
}

/// Like [`inert`] but keeps newlines: for whole messages whose lines are
/// ours but may carry spec text that [`inert`] did not see.
pub fn inert_lines(text: &str) -> String {
    escape(text, true)
}

fn escape(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_invisible_control(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Format characters that act like controls: bidirectional overrides and
/// isolates, which reorder what a reader sees ("Trojan Source"), and the
/// Unicode line and paragraph separators, which YAML 1.1 and JavaScript
/// read as line breaks.
pub const INVISIBLE_CONTROLS: &[char] = &[
    '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}',
    '\u{2067}', '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}',
];

fn is_invisible_control(c: char) -> bool {
    INVISIBLE_CONTROLS.contains(&c)
}

/// Standard output was closed by its reader (`| head -1`): not a failure of
/// the command, so `main` exits 0 without a word, as cargo does.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` to standard output as it is. A closed pipe is
/// [`StdoutClosed`]; any other failure is an error with its cause.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("failed to write to standard output")),
    }
}

/// [`print`] with a final newline.
pub fn println(text: &str) -> anyhow::Result<()> {
    print(&format!("{text}\n"))
}

/// For lines printed before a verdict that the exit code carries
/// (`check`, `generate --check`): a closed pipe must not turn a failure into
/// exit 0, so it is ignored here and the command goes on to its verdict.
pub fn unless_closed(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(error) if error.is::<StdoutClosed>() => Ok(()),
        other => other,
    }
}

/// Writes a message to standard error with [`inert_lines`]. Errors are
/// ignored: with stderr gone there is nowhere left to report them, and a
/// long operation should not stop halfway because nobody reads its log.
pub fn eprintln(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{}", inert_lines(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(inert("a\n error: forged"), "a\\n error: forged");
        assert_eq!(inert("\x1b[31mred\r\t"), "\\u{1b}[31mred\\r\\t");
        assert_eq!(inert("bell\u{7}\u{7f}\u{9b}"), "bell\\u{7}\\u{7f}\\u{9b}");
        assert_eq!(inert("abc\u{202e}cba"), "abc\\u{202e}cba");
        assert_eq!(inert("näme `x` \"q\" \\"), "näme `x` \"q\" \\");
    }

    #[test]
    fn whole_messages_keep_their_lines() {
        assert_eq!(
            inert_lines("error: x\x1b[2K\nhint: y\r"),
            "error: x\\u{1b}[2K\nhint: y\\r"
        );
    }
}
