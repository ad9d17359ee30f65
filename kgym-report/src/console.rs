//! Console text: turning raw serial bytes into clean lines, and reading the
//! printk prefix (`[  12.345678][ T123] `) of each line.
//!
//! Real console output has carriage returns, ANSI colour codes from the
//! userspace, and bytes that are not UTF-8 (binary garbage, truncated
//! multi-byte characters). Matching works on a cleaned copy; positions are
//! mapped back to the raw log at the end.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

static LOGIN: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b" login: "));
static PREFIX_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"] "));
static QUESTIONABLE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b" ? "));
static EOI: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"<EOI>"));

/// A console log ready for matching: cleaned text plus the way back to raw
/// byte offsets.
#[derive(Debug)]
pub(crate) struct Console<'a> {
    text: Cow<'a, str>,
    /// Present when cleaning changed something: one entry per line.
    map: Option<Vec<LineMap>>,
    raw_len: usize,
}

/// Where one cleaned line sits in the cleaned text and in the raw log.
#[derive(Debug, Clone, Copy)]
struct LineMap {
    clean_start: usize,
    raw_start: usize,
    /// Raw offset of the line's end (its `\n`, or the end of the log).
    raw_end: usize,
}

impl<'a> Console<'a> {
    /// Cleans `raw`: drops `\r` and ANSI escape sequences, replaces invalid
    /// UTF-8 with U+FFFD. Borrows when there is nothing to clean.
    pub(crate) fn new(raw: &'a [u8]) -> Self {
        if memchr::memchr2(b'\r', 0x1b, raw).is_none()
            && let Ok(text) = std::str::from_utf8(raw)
        {
            return Self { text: Cow::Borrowed(text), map: None, raw_len: raw.len() };
        }
        let mut text = String::with_capacity(raw.len());
        let mut map = Vec::new();
        let mut raw_start = 0;
        while raw_start < raw.len() {
            let (raw_end, next) = match memchr::memchr(b'\n', &raw[raw_start..]) {
                Some(i) => (raw_start + i, raw_start + i + 1),
                None => (raw.len(), raw.len()),
            };
            map.push(LineMap { clean_start: text.len(), raw_start, raw_end });
            clean_line_into(&raw[raw_start..raw_end], &mut text);
            if next > raw_end {
                text.push('\n');
            }
            raw_start = next;
        }
        Self { text: Cow::Owned(text), map: Some(map), raw_len: raw.len() }
    }

    /// The cleaned text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Maps an offset in the cleaned text that is a line start or a line
    /// end back to the raw log.
    pub(crate) fn raw_offset(&self, clean: usize) -> usize {
        let Some(map) = &self.map else { return clean };
        let idx = map.partition_point(|m| m.clean_start <= clean);
        if idx == 0 {
            return 0;
        }
        let line = map[idx - 1];
        if clean == line.clean_start {
            return line.raw_start;
        }
        let clean_end = map.get(idx).map_or(self.text.len(), |next| next.clean_start - 1);
        if clean >= clean_end {
            return line.raw_end.min(self.raw_len);
        }
        (line.raw_start + (clean - line.clean_start)).min(line.raw_end)
    }
}

/// Appends one raw line (without its `\n`) to `out`, cleaned.
pub(crate) fn clean_line_into(raw: &[u8], out: &mut String) {
    let lossy = String::from_utf8_lossy(raw);
    if !lossy.contains(['\r', '\x1b']) {
        out.push_str(&lossy);
        return;
    }
    let mut chars = lossy.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' => skip_escape(&mut chars),
            c => out.push(c),
        }
    }
}

/// Skips the rest of an escape sequence whose ESC was just read: CSI
/// (`ESC [ params final`), OSC (`ESC ] ... BEL` or `ESC ] ... ESC \`), or a
/// two-character escape.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            // Parameter and intermediate bytes, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        Some(']') => {
            while let Some(c) = chars.next() {
                if c == '\x07' {
                    break;
                }
                if c == '\x1b' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        _ => {}
    }
}

/// Iterates the lines of `text` as `(start, end, line)`, where `end` is the
/// offset of the line's `\n` (or the end of text).
pub(crate) fn lines_from(text: &str, from: usize) -> impl Iterator<Item = (usize, usize, &str)> {
    let mut pos = from;
    std::iter::from_fn(move || {
        if pos >= text.len() {
            return None;
        }
        let start = pos;
        let end = memchr::memchr(b'\n', &text.as_bytes()[start..]).map_or(text.len(), |i| start + i);
        pos = end + 1;
        Some((start, end, &text[start..end]))
    })
}

/// The printk context of a line: who printed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context<'a> {
    /// No printk timestamp: raw output (userspace, or a kernel without
    /// `printk.time`).
    None,
    /// A timestamp without a caller id.
    Console,
    /// The caller id of `CONFIG_PRINTK_CALLER`, e.g. `[ T123]` or `[  C1]`.
    Caller(&'a str),
}

impl Context<'_> {
    /// A task caller id (`[ T123]`): lines of one task can be followed
    /// reliably, so more lines before the report are kept.
    pub(crate) fn is_task(&self) -> bool {
        matches!(self, Context::Caller(c) if caller_kind(c) == Some(b'T'))
    }

    /// A CPU caller id (`[ C1]`): interrupt context.
    pub(crate) fn is_cpu(&self) -> bool {
        matches!(self, Context::Caller(c) if caller_kind(c) == Some(b'C'))
    }

    /// Whether the line had a printk prefix at all.
    pub(crate) fn has_prefix(&self) -> bool {
        !matches!(self, Context::None)
    }

    /// Owned copy, for keeping across lines.
    pub(crate) fn to_owned_ctx(self) -> OwnedContext {
        match self {
            Context::None => OwnedContext::None,
            Context::Console => OwnedContext::Console,
            Context::Caller(c) => OwnedContext::Caller(c.to_owned()),
        }
    }
}

/// An owned [`Context`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedContext {
    None,
    Console,
    Caller(String),
}

impl OwnedContext {
    pub(crate) fn as_ctx(&self) -> Context<'_> {
        match self {
            OwnedContext::None => Context::None,
            OwnedContext::Console => Context::Console,
            OwnedContext::Caller(c) => Context::Caller(c),
        }
    }
}

/// `T` or `C` for a caller id that reads `[ *T<digits>]` / `[ *C<digits>]`.
fn caller_kind(id: &str) -> Option<u8> {
    let b = id.as_bytes();
    let inner = b.strip_prefix(b"[")?.strip_suffix(b"]")?;
    let inner = trim_leading_spaces(inner);
    let (&kind, digits) = inner.split_first()?;
    ((kind == b'T' || kind == b'C') && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)).then_some(kind)
}

fn trim_leading_spaces(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b' ').count();
    &b[n..]
}

/// Reads the printk prefix of a line.
///
/// The prefix is: optionally `** N printk messages dropped ** `, optionally
/// anything up to a ` login: ` (a getty prompt that the kernel output got
/// glued to; the last one that works wins), optionally a `<level>`, then
/// `[ seconds.micros]`, optionally a caller id `[ T123]`/`[ C1]`, then a
/// space.
pub(crate) fn context(line: &str) -> Context<'_> {
    const DROPPED_TAIL: &str = " printk messages dropped ** ";
    let b = line.as_bytes();
    let mut bases = [None, Some(0)];
    if let Some(rest) = line.strip_prefix("** ") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(DROPPED_TAIL) {
            bases[0] = Some(3 + digits + DROPPED_TAIL.len());
        }
    }
    for base in bases.into_iter().flatten() {
        if memchr::memchr(b'[', &b[base..]).is_none() {
            return Context::None;
        }
        // With a login prompt: the last ` login: ` after which a timestamp
        // follows; the scan goes from the back.
        let tail = &b[base..];
        if tail.len() >= 8 {
            let mut end = tail.len();
            while let Some(i) = LOGIN.rfind(&tail[..end]) {
                if let Some(ctx) = timestamp_at(line, base + i + 8) {
                    return ctx;
                }
                end = i + 7;
                if end < 8 {
                    break;
                }
            }
        }
        if let Some(ctx) = timestamp_at(line, base) {
            return ctx;
        }
    }
    Context::None
}

/// Matches `(<N>)?[ *N.N](\[ *[CT]N\])? ` at `at`.
fn timestamp_at(line: &str, at: usize) -> Option<Context<'_>> {
    let b = line.as_bytes();
    let mut i = at;
    if b.get(i) == Some(&b'<') {
        let d = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if d > 0 && b.get(i + 1 + d) == Some(&b'>') {
            i += d + 2;
        }
    }
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i += 1;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let d = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if d == 0 || b.get(i + d) != Some(&b'.') {
        return None;
    }
    i += d + 1;
    let d = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if d == 0 || b.get(i + d) != Some(&b']') {
        return None;
    }
    i += d + 1;
    // Caller id, when it is followed by the space.
    if b.get(i) == Some(&b'[') {
        let mut j = i + 1;
        while b.get(j) == Some(&b' ') {
            j += 1;
        }
        if matches!(b.get(j), Some(b'C' | b'T')) {
            let d = b[j + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if d > 0 && b.get(j + 1 + d) == Some(&b']') && b.get(j + 2 + d) == Some(&b' ') {
                return Some(Context::Caller(&line[i..j + 2 + d]));
            }
        }
    }
    (b.get(i) == Some(&b' ')).then_some(Context::Console)
}

/// Strips the printk prefix of a line with context `ctx`, and tells whether
/// the rest is a questionable stack frame (` ? func+0x..`, or PowerPC's
/// `(unreliable)`), which the unwinder is not sure about.
pub(crate) fn strip_prefix<'l>(line: &'l str, ctx: Context<'_>) -> (&'l str, bool) {
    if !ctx.has_prefix() {
        return (line, false);
    }
    let rest = match PREFIX_END.find(line.as_bytes()) {
        Some(i) => &line[i + 2..],
        None => line.get(1..).unwrap_or(""),
    };
    if EOI.find(rest.as_bytes()).is_none() {
        if let Some(i) = QUESTIONABLE.find(rest.as_bytes()) {
            return (&rest[i + 2..], true);
        }
        if let Some(body) = rest.strip_suffix(" (unreliable)") {
            return (body, true);
        }
    }
    (rest, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_printk_prefixes() {
        assert_eq!(context("[   12.345678] foo"), Context::Console);
        assert_eq!(context("[   12.345678][ T123] foo"), Context::Caller("[ T123]"));
        assert_eq!(context("[   12.345678][    C1] foo"), Context::Caller("[    C1]"));
        assert_eq!(context("<4>[ 1.2] foo"), Context::Console);
        assert_eq!(context("** 5 printk messages dropped ** [ 1.2][T5] x"), Context::Caller("[T5]"));
        assert_eq!(context("syzkaller login: [ 1.2][ T7] x"), Context::Caller("[ T7]"));
        assert_eq!(context("foo login: bar login: [ 1.2] x"), Context::Console);
        assert_eq!(context("no prefix"), Context::None);
        assert_eq!(context("[ 1.2]no space"), Context::None);
        assert_eq!(context("[ 1.2][ T7]no space"), Context::None);
        assert!(context("[ 1.2][ T7] x").is_task());
        assert!(context("[ 1.2][ C7] x").is_cpu());
    }

    #[test]
    fn strips_prefix_and_spots_questionable_frames() {
        let l = "[ 1.2][ T7]  ? foo+0x1/0x2";
        assert_eq!(strip_prefix(l, context(l)), (" foo+0x1/0x2", true));
        let l = "[ 1.2][ T7]  foo+0x1/0x2";
        assert_eq!(strip_prefix(l, context(l)), (" foo+0x1/0x2", false));
        assert_eq!(strip_prefix("x ? y", Context::None), ("x ? y", false));
    }

    #[test]
    fn cleans_and_maps_offsets() {
        let raw = b"ab\r\n\x1b[31mred\x1b[0m\n\xffz\n";
        let c = Console::new(raw);
        assert_eq!(c.text(), "ab\nred\n\u{fffd}z\n");
        assert_eq!(c.raw_offset(3), 4);
        assert_eq!(c.raw_offset(6), 16);
        assert_eq!(c.raw_offset(7), 17);
        let plain = Console::new(b"x\ny\n");
        assert_eq!(plain.raw_offset(2), 2);
    }
}
