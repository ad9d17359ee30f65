//! Clean-up of titles: parts that change from run to run (pids, addresses,
//! numbers, line numbers, offsets) are replaced by fixed words, so that one
//! bug always gets one title.

use std::sync::LazyLock;

use regex::Regex;

/// Longest title kept: corrupted or interleaved lines can be very long.
const MAX_TITLE_LEN: usize = 120;

/// (pattern, replacement), applied in order, each until nothing changes.
const DYNAMIC_PARTS: &[(&str, &str)] = &[
    // Executor and test process ids.
    (r"syz-executor\.?[0-9]+((/|:)[0-9]+)?", "syz-executor"),
    (r"syzkaller[0-9]+((/|:)[0-9]+)?", "syzkaller"),
    // Anything that looks like an address.
    (r"([^a-zA-Z0-9])(?:0x)?[0-9a-f]{6,}", "${1}ADDR"),
    // IPv4 addresses.
    (r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})", "IP"),
    // File line numbers.
    (r"(\.[0-9A-Za-z_]+)(:[0-9]+)+", "${1}:LINE"),
    // `func+0x12/0x40`: offsets and sizes change between builds.
    (r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+", "${1}"),
    (r"CPU#[0-9]+", "CPU"),
    // Remaining decimal numbers (repeated: matches may overlap, as in 0,1,2).
    (r"([^0-9A-Za-z_])([0-9]+)([^0-9A-Za-z_]|$)", "${1}NUM${3}"),
    // Digits are kept in names (cfg80211), but not very long runs.
    (r"([0-9]+){7,}", "NUM"),
];

static DYNAMIC_RES: LazyLock<Vec<(Regex, &'static str)>> =
    LazyLock::new(|| DYNAMIC_PARTS.iter().map(|(p, r)| (Regex::new(p).expect("title pattern compiles"), *r)).collect());

/// The final form of a title.
pub(crate) fn clean_title(raw: &str) -> String {
    let mut title = raw.to_owned();
    for (re, with) in DYNAMIC_RES.iter() {
        loop {
            let next = re.replace_all(&title, *with);
            if next == title {
                break;
            }
            title = next.into_owned();
        }
    }
    sanitize(&title)
}

/// Keeps printable ASCII of the first [`MAX_TITLE_LEN`] bytes, turns tabs
/// into spaces, squeezes runs of spaces and trims.
fn sanitize(title: &str) -> String {
    let mut out = String::with_capacity(title.len().min(MAX_TITLE_LEN));
    let mut prev = b' ';
    for &b in title.as_bytes().iter().take(MAX_TITLE_LEN) {
        let b = if b == b'\t' { b' ' } else { b };
        if !(0x20..0x7f).contains(&b) || (b == b' ' && prev == b' ') {
            continue;
        }
        out.push(b as char);
        prev = b;
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_dynamic_parts() {
        assert_eq!(clean_title("INFO: task syz-executor.3:1234 blocked"), "INFO: task syz-executor blocked");
        assert_eq!(clean_title("BUG: at 0xffffffff81234567 x"), "BUG: at ADDR x");
        assert_eq!(clean_title("kernel BUG at fs/ext4/inode.c:123!"), "kernel BUG at fs/ext4/inode.c:LINE!");
        assert_eq!(clean_title("in foo+0x12/0x40 bar"), "in foo bar");
        assert_eq!(clean_title("a 1,2,3 b"), "a NUM,NUM,NUM b");
        assert_eq!(clean_title("in cfg80211_foo"), "in cfg80211_foo");
        assert_eq!(clean_title("lockup on CPU#1"), "lockup on CPU");
        assert_eq!(clean_title("peer 10.0.0.1 gone"), "peer IP gone");
    }

    #[test]
    fn sanitizes() {
        assert_eq!(sanitize("  a\t\tb \u{fffd} c  "), "a b c");
        assert_eq!(sanitize(&"x".repeat(200)).len(), MAX_TITLE_LEN);
    }
}
