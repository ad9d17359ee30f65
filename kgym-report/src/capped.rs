//! A console line gathered from chunks in bounded memory: an endless line
//! (`/dev/zero`, userspace output without a newline) keeps its head, where
//! the printk prefix is, and its newest bytes, where a kernel line printed
//! after it would be.

use crate::stream::MAX_LINE_BYTES;

/// A line gathered from chunks, kept within `MAX_LINE_BYTES`: its first
/// half and its latest half.
#[derive(Debug, Default)]
pub(crate) struct CappedLine {
    bytes: Vec<u8>,
    /// Bytes dropped from the middle.
    dropped: usize,
}

impl CappedLine {
    /// Appends `more` to the line.
    pub(crate) fn push(&mut self, more: &[u8]) {
        const HALF: usize = MAX_LINE_BYTES / 2;
        if self.bytes.len() + more.len() <= MAX_LINE_BYTES {
            self.bytes.extend_from_slice(more);
            return;
        }
        // Fill the head, then keep only the newest bytes as the tail.
        let head_room = HALF.saturating_sub(self.bytes.len());
        let (head, rest) = more.split_at(head_room.min(more.len()));
        self.bytes.extend_from_slice(head);
        let keep = rest.len().min(HALF);
        self.dropped += rest.len() - keep;
        self.bytes.extend_from_slice(&rest[rest.len() - keep..]);
        if self.bytes.len() > MAX_LINE_BYTES {
            let excess = self.bytes.len() - MAX_LINE_BYTES;
            self.bytes.drain(HALF..HALF + excess);
            self.dropped += excess;
        }
    }

    /// The line so far and the bytes dropped from its middle; starts anew.
    pub(crate) fn take(&mut self) -> (Vec<u8>, usize) {
        (std::mem::take(&mut self.bytes), std::mem::take(&mut self.dropped))
    }

    /// Bytes held.
    pub(crate) fn held(&self) -> usize {
        self.bytes.len()
    }

    /// Nothing gathered (nothing held, nothing dropped).
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.dropped == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_kept_whole() {
        let mut l = CappedLine::default();
        l.push(b"abc");
        l.push(b"def");
        assert_eq!(l.take(), (b"abcdef".to_vec(), 0));
        assert!(l.is_empty());
    }

    #[test]
    fn long_lines_keep_head_and_newest_tail() {
        const HALF: usize = MAX_LINE_BYTES / 2;
        for step in [1000, HALF + 7, 3 * MAX_LINE_BYTES] {
            let line: Vec<u8> = (0..5 * MAX_LINE_BYTES).map(|i| (i % 251) as u8).collect();
            let mut l = CappedLine::default();
            for chunk in line.chunks(step) {
                l.push(chunk);
                assert!(l.bytes.len() <= MAX_LINE_BYTES);
            }
            let (kept, dropped) = l.take();
            assert_eq!(kept.len(), MAX_LINE_BYTES, "step {step}");
            assert_eq!(dropped, line.len() - MAX_LINE_BYTES, "step {step}");
            assert_eq!(&kept[..HALF], &line[..HALF], "head, step {step}");
            assert_eq!(&kept[HALF..], &line[line.len() - HALF..], "tail, step {step}");
        }
    }
}
