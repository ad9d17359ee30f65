//! [`SerialOffsets`]: one instance's serial port read by offsets.
//!
//! `getSerialPortOutput` answers `contents` from `start` to `next`; the
//! next read asks from `next`. The instance keeps only the last MiB or so:
//! when the answer's `start` is past what was asked, the bytes between
//! were lost, and the log says so (a report cut there may be incomplete).
//! The text itself goes to the same console watch as the QEMU runner's.

use super::client::SerialPortOutput;

/// Where the next read of one instance's serial port starts.
#[derive(Debug, Default)]
pub(crate) struct SerialOffsets {
    /// The `start` of the next read.
    pub(crate) next: u64,
    /// Bytes the instance's buffer dropped before they were read.
    pub(crate) lost: u64,
}

impl SerialOffsets {
    /// Takes one read's answer (asked from `self.next`); a note for the
    /// log when output was lost.
    pub(crate) fn take(&mut self, out: &SerialPortOutput) -> Option<String> {
        let note = (out.start > self.next).then(|| {
            let lost = out.start - self.next;
            self.lost += lost;
            format!("{lost} bytes of serial output lost (asked from {}, got from {})", self.next, out.start)
        });
        // `next` only moves forward: a stale answer cannot rewind the read.
        self.next = self.next.max(out.next);
        note
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(contents: &str, start: u64) -> SerialPortOutput {
        SerialPortOutput { contents: contents.into(), start, next: start + contents.len() as u64 }
    }

    #[test]
    fn offsets_advance_and_lost_output_is_noted() {
        let mut c = SerialOffsets::default();
        assert!(c.take(&chunk("hello\n", 0)).is_none());
        assert_eq!(c.next, 6);
        // The buffer wrapped: 100 bytes from 6 are gone.
        let note = c.take(&chunk("world\n", 106)).unwrap();
        assert_eq!((c.next, c.lost), (112, 100));
        assert_eq!(note, "100 bytes of serial output lost (asked from 6, got from 106)");
    }

    #[test]
    fn an_empty_or_stale_answer_keeps_the_offset() {
        let mut c = SerialOffsets::default();
        c.take(&chunk("abc", 0));
        c.take(&SerialPortOutput { contents: String::new(), start: 3, next: 3 });
        c.take(&chunk("a", 0));
        assert_eq!((c.next, c.lost), (3, 0));
    }
}
