//! Stack frames of a report's text, for symbolization: every line that
//! names `func+0xoff/0xsize` (optionally `[module]`) is a frame.

use std::sync::LazyLock;

use regex::Regex;

use crate::Frame;

/// A frame found on one line, with where its `+0x../0x..` ends (where a
/// location is inserted).
pub(crate) struct LineFrame {
    pub frame: Frame,
    /// Byte offset in the line just after `/0xsize`.
    pub insert_at: usize,
    /// Byte range of the `[module buildid]` block, when it has a build id.
    pub module_block: Option<(usize, usize)>,
}

/// The frame named on `line`, if any: the first `name+0xoff/0xsize` whose
/// name follows blanks (optionally with `(` and a `3:` prefix), with an
/// optional `[module]` or `[module buildid]` after it. Hand-written (it runs
/// on every report line); `tests::agrees_with_the_pattern` holds it to the
/// equivalent regular expression.
pub(crate) fn frame_of_line(line: &str) -> Option<LineFrame> {
    let b = line.as_bytes();
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&b[from..], b"+0x").map(|i| from + i) {
        from = at + 1;
        if let Some(frame) = frame_at(line, at) {
            return Some(frame);
        }
    }
    None
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
}

fn hex_len(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(*c)).count()
}

/// The frame whose `+0x` is at `plus`.
fn frame_at(line: &str, plus: usize) -> Option<LineFrame> {
    let b = line.as_bytes();
    let name_start = plus - b[..plus].iter().rev().take_while(|&&c| is_name_byte(c)).count();
    if name_start == plus {
        return None;
    }
    // Before the name: optional `N:`, optional `(`, then at least one blank.
    let mut i = name_start;
    if i > 0 && b[i - 1] == b':' {
        let digits = b[..i - 1].iter().rev().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            i -= digits + 1;
        }
    }
    if i > 0 && b[i - 1] == b'(' {
        i -= 1;
    }
    if i == 0 || !matches!(b[i - 1], b' ' | b'\t') {
        return None;
    }
    let off_start = plus + 3;
    let off_len = hex_len(&b[off_start..]);
    let slash = off_start + off_len;
    if off_len == 0 || !b[slash..].starts_with(b"/0x") {
        return None;
    }
    let size_start = slash + 3;
    let size_len = hex_len(&b[size_start..]);
    if size_len == 0 {
        return None;
    }
    let insert_at = size_start + size_len;
    let (module, module_block) = module_after(line, insert_at);
    Some(LineFrame {
        frame: Frame {
            function: line[name_start..plus].to_owned(),
            offset: Some(u64::from_str_radix(&line[off_start..slash], 16).ok()?),
            size: Some(u64::from_str_radix(&line[size_start..insert_at], 16).ok()?),
            module,
            location: None,
        },
        insert_at,
        module_block,
    })
}

/// ` [module]` or ` [module buildid ...]` at `at`: the module name, and the
/// block's range when it has a build id.
fn module_after(line: &str, at: usize) -> (Option<String>, Option<(usize, usize)>) {
    let b = line.as_bytes();
    let open = if b.get(at) == Some(&b' ') { at + 1 } else { at };
    if b.get(open) != Some(&b'[') {
        return (None, None);
    }
    let name_len = b[open + 1..].iter().take_while(|&&c| is_name_byte(c)).count();
    if name_len == 0 {
        return (None, None);
    }
    let name_end = open + 1 + name_len;
    let module = Some(line[open + 1..name_end].to_owned());
    // With a build id the block runs to the line's last `]`.
    if b.get(name_end) == Some(&b' ')
        && let Some(close) = memchr::memrchr(b']', &b[name_end..]).map(|i| name_end + i)
    {
        return (module, Some((at, close + 1)));
    }
    if b.get(name_end) == Some(&b']') { (module, None) } else { (None, None) }
}

/// All frames of a report text, in order.
pub(crate) fn frames_of(text: &str) -> Vec<Frame> {
    text.lines().filter_map(frame_of_line).map(|f| f.frame).collect()
}

/// `text` with each frame line carrying its frame's location, the way
/// syzkaller prints symbolized reports (`func+0x1f/0x40 fs/open.c:123`);
/// a module build id is dropped for readability (`[ext4]`).
pub(crate) fn with_locations(text: &str, frames: &[Frame]) -> String {
    let mut out = String::with_capacity(text.len() + frames.len() * 24);
    let mut next = frames.iter();
    for line in text.split_inclusive('\n') {
        let Some(lf) = frame_of_line(line.trim_end_matches('\n')) else {
            out.push_str(line);
            continue;
        };
        let Some(location) = next.next().and_then(|f| f.location.as_deref()) else {
            out.push_str(line);
            continue;
        };
        out.push_str(&line[..lf.insert_at]);
        out.push(' ');
        out.push_str(location);
        let rest = &line[lf.insert_at..];
        match (lf.module_block, &lf.frame.module) {
            (Some((s, e)), Some(module)) => {
                out.push_str(&line[lf.insert_at..s]);
                out.push_str(" [");
                out.push_str(module);
                out.push(']');
                out.push_str(&line[e..]);
            }
            _ => out.push_str(rest),
        }
    }
    out
}

/// Whether a frame line names the exact faulting instruction (`RIP:`,
/// `pc :`...) rather than a return address.
pub(crate) fn is_exact_pc_line(line: &str) -> bool {
    static EXACT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?:IP|NIP|pc |PC is at):? ").expect("compiles"));
    EXACT.is_match(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame line format as a regular expression: captures name,
    /// offset, size, module block, module, build id.
    static FRAME_RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?:\[<(?:(?:0x)?[0-9a-f]+)>\])?[ \t]+\(?(?:[0-9]+:)?([a-zA-Z0-9_.]+)\+0x([0-9a-f]+)/0x([0-9a-f]+)( ?\[([a-zA-Z0-9_.]+)( .*)?\])?\)?",
        )
        .expect("frame pattern compiles")
    });

    /// Name, offset, size, module, end of size, build-id block.
    type Parts = (String, u64, u64, Option<String>, usize, Option<(usize, usize)>);

    fn by_pattern(line: &str) -> Option<Parts> {
        let c = FRAME_RE.captures(line)?;
        let hex = |i: usize| u64::from_str_radix(&c[i], 16).ok();
        let block = match (c.get(4), c.get(6)) {
            (Some(b), Some(_)) => Some((b.start(), b.end())),
            _ => None,
        };
        Some((c[1].to_owned(), hex(2)?, hex(3)?, c.get(5).map(|m| m.as_str().to_owned()), c.get(3)?.end(), block))
    }

    #[test]
    fn agrees_with_the_pattern() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/syzkaller-reports");
        let mut lines: Vec<String> = [
            " foo+0x1/0x2",
            "(foo+0x1/0x2)",
            " 3:foo+0x1/0x2",
            "x foo+0x1/0x2 [m]",
            " f+0x1/0x2 [m 12 ab] tail] x",
            " f+0x1/0x2 [m",
            " f+0x1/0x2 [m ",
            "a+0x1/0x2 b+0x3/0x4",
            " RIP: 0010:f.cold+0x1/0x2",
            " (x+0xg/0x1) y+0x1/0x2",
            "\tf+0x1/0x2[m]",
            " f+0x/0x2",
            " f+0x1/0x",
            " +0x1/0x2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for entry in std::fs::read_dir(dir).expect("fixtures") {
            let data = std::fs::read(entry.expect("entry").path()).expect("fixture");
            lines.extend(String::from_utf8_lossy(&data).lines().filter(|l| l.contains("+0x")).map(str::to_owned));
        }
        assert!(lines.len() > 10_000);
        for line in &lines {
            let mine = frame_of_line(line).map(|f| {
                (
                    f.frame.function,
                    f.frame.offset.unwrap(),
                    f.frame.size.unwrap(),
                    f.frame.module,
                    f.insert_at,
                    f.module_block,
                )
            });
            assert_eq!(mine, by_pattern(line), "line {line:?}");
        }
    }

    #[test]
    fn parses_frame_lines() {
        let f = frame_of_line(" ext4_fill_super+0x1f/0x40 [ext4]").unwrap().frame;
        assert_eq!(f.function, "ext4_fill_super");
        assert_eq!((f.offset, f.size), (Some(0x1f), Some(0x40)));
        assert_eq!(f.module.as_deref(), Some("ext4"));
        let f = frame_of_line("RIP: 0010:foo.cold+0x5/0x10").unwrap().frame;
        assert_eq!(f.function, "foo.cold");
        assert!(frame_of_line("Call Trace:").is_none());
    }

    #[test]
    fn inserts_locations() {
        let text = "Call Trace:\n do_x+0x1/0x2\n mod_y+0x3/0x4 [m 0123abcd]\n";
        let mut frames = frames_of(text);
        frames[0].location = Some("fs/x.c:1".into());
        frames[1].location = Some("drivers/m.c:2".into());
        assert_eq!(
            with_locations(text, &frames),
            "Call Trace:\n do_x+0x1/0x2 fs/x.c:1\n mod_y+0x3/0x4 drivers/m.c:2 [m]\n"
        );
    }
}
