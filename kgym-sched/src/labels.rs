//! The rules for labels (worker pools): what a worker may declare and a
//! stage may require, and the label sets a worker serves.
//!
//! A stage requiring labels `R` runs on a worker with labels `L` when
//! `R ⊆ L` (same keys, same values). Announcements travel on one queue per
//! kind and required label set ([`crate::queue::Route`]), so a worker waits
//! on the queues of every subset of its labels: a bounded number of labels
//! keeps that small (at most 2^[`MAX_LABELS`] queues per kind), and the
//! characters allowed keep label sets usable in queue names.

use kgym_core::Labels;

/// Most labels a worker may declare, or a stage require.
pub const MAX_LABELS: usize = 6;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// What is wrong with `labels` (empty when they are fine).
pub fn check(labels: &Labels) -> Vec<String> {
    let mut problems = Vec::new();
    if labels.len() > MAX_LABELS {
        problems.push(format!("at most {MAX_LABELS} labels are allowed, not {}", labels.len()));
    }
    for (key, value) in labels {
        if key.is_empty() || key.len() > MAX_LABEL_LEN || !key.bytes().all(key_byte) {
            problems.push(format!("label key {key:.70?} must be 1 to {MAX_LABEL_LEN} letters, digits or . _ - /"));
        }
        if value.len() > MAX_LABEL_LEN || !value.bytes().all(value_byte) {
            problems.push(format!(
                "the value of label {key:.70?} must be at most {MAX_LABEL_LEN} letters, digits or . _ - / :"
            ));
        }
    }
    problems
}

fn key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/')
}

fn value_byte(b: u8) -> bool {
    key_byte(b) || b == b':'
}

/// Every subset of `labels` (the empty set first): the label sets whose
/// stages a worker with `labels` may run.
pub(crate) fn subsets(labels: &Labels) -> Vec<Labels> {
    let all: Vec<(&String, &String)> = labels.iter().take(MAX_LABELS).collect();
    (0u32..1 << all.len())
        .map(|mask| {
            all.iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, (k, v))| ((*k).clone(), (*v).clone()))
                .collect()
        })
        .collect()
}

/// `labels` as `k=v,k=v` (keys in order): how they are shown and named.
pub fn display(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Parses `k=v,k=v` (the stock services' `KGYM_LABELS`); the error names the
/// first item that is not `key=value`. The result is not checked: see
/// [`check`].
pub fn parse(text: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("label {item:?} is not key=value"))?;
        labels.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn good_labels_pass_and_bad_ones_are_named() {
        assert!(check(&labels(&[("pool", "big"), ("arch", "arm64"), ("zone", "us-central1-a")])).is_empty());
        assert!(check(&labels(&[("machine", "gce:e2-standard-2")])).is_empty());
        let bad = check(&labels(&[("", "x"), ("sp ace", "x"), ("k", "a b")]));
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(bad.iter().any(|p| p.contains("\"sp ace\"")), "{bad:?}");
        let many: Labels = (0..7).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(check(&many)[0].contains("at most 6"), "{:?}", check(&many));
    }

    #[test]
    fn subsets_are_every_combination_once() {
        let l = labels(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let s = subsets(&l);
        assert_eq!(s.len(), 8);
        assert_eq!(s[0], Labels::new());
        assert!(s.contains(&labels(&[("a", "1"), ("c", "3")])));
        assert!(s.contains(&l));
        let unique: std::collections::BTreeSet<_> = s.iter().collect();
        assert_eq!(unique.len(), 8);
    }

    #[test]
    fn parse_and_display_round_trip() {
        let l = parse(" pool=big, arch=arm64 ,").unwrap();
        assert_eq!(l, labels(&[("arch", "arm64"), ("pool", "big")]));
        assert_eq!(display(&l), "arch=arm64,pool=big");
        assert!(parse("pool").unwrap_err().contains("\"pool\""));
        assert_eq!(parse("").unwrap(), Labels::new());
    }
}
