//! The one rule set for job tags, applied wherever tags are written:
//! submit, reset, replacing and merging tags (kGym's `POST /jobs/{id}/keys`
//! merges too). Keys name things in URLs and listings, so they are short
//! and printable; values are bounded; a job carries a bounded number of
//! tags, so one job cannot grow to megabytes.

use kgym_core::Tags;

use crate::error::Problem;

/// Longest tag key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Longest tag value, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// Most tags one job may carry.
pub const MAX_TAGS: usize = 128;

/// What is wrong with `tags` taken alone (their count included), as
/// job-wide problems; empty when they are fine.
pub fn check(tags: &Tags) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (key, value) in tags {
        if key.is_empty() {
            problems.push(Problem::job("a tag has an empty key"));
        } else if key.len() > MAX_KEY_LEN {
            problems.push(Problem::job(format!("tag key {key:.40?}... is longer than {MAX_KEY_LEN} bytes")));
        } else if key.chars().any(char::is_control) {
            problems.push(Problem::job(format!("tag key {key:?} contains a control character")));
        }
        if value.len() > MAX_VALUE_LEN {
            problems.push(Problem::job(format!(
                "the value of tag {:?} is {} bytes, more than {MAX_VALUE_LEN}",
                shorten(key),
                value.len()
            )));
        }
    }
    if let Some(p) = check_count(tags.len()) {
        problems.push(p);
    }
    problems
}

/// The problem with a job carrying `n` tags, if any.
pub fn check_count(n: usize) -> Option<Problem> {
    (n > MAX_TAGS).then(|| Problem::job(format!("a job may carry at most {MAX_TAGS} tags, this one would carry {n}")))
}

fn shorten(key: &str) -> &str {
    let mut end = key.len().min(40);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn good_tags_pass() {
        assert!(check(&tags(&[("bug-reproduction-for", "abc"), ("composed-by", "")])).is_empty());
        let full: Tags = (0..MAX_TAGS).map(|i| (format!("k{i}"), "v".repeat(MAX_VALUE_LEN))).collect();
        assert!(check(&full).is_empty());
    }

    #[test]
    fn every_bad_tag_is_named() {
        let long_key = "k".repeat(MAX_KEY_LEN + 1);
        let big = "v".repeat(MAX_VALUE_LEN + 1);
        let problems = check(&tags(&[("", "x"), (&long_key, "x"), ("a\nb", "x"), ("ok", &big)]));
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(text[0].contains("empty key"), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("longer than 256 bytes")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("control character")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("\"ok\" is 4097 bytes")), "{text:#?}");
    }

    #[test]
    fn too_many_tags_are_one_problem() {
        let many: Tags = (0..100_000).map(|i| (format!("k{i}"), String::new())).collect();
        let problems = check(&many);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("at most 128 tags, this one would carry 100000"));
    }
}
