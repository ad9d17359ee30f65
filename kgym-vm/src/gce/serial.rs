//! [`SerialConsole`]: one instance's serial port read by offsets, its text
//! fed to the live crash parser the QEMU runner uses
//! ([`StreamParser`](crate::report::StreamParser)).
//!
//! `getSerialPortOutput` answers `contents` from `start` to `next`; the
//! next read asks from `next`. The instance keeps only the last MiB or so:
//! when the answer's `start` is past what was asked, the bytes between
//! were lost, and the log says so (a report cut there may be incomplete).

use std::time::Instant;

use super::client::SerialPortOutput;
use crate::report::{Report, StreamEvent, StreamParser};

/// The most console output kept per instance (as the QEMU runner).
const MAX_LOG: usize = 64 << 20;

/// The serial console of one instance.
#[derive(Debug, Default)]
pub(crate) struct SerialConsole {
    parser: StreamParser,
    /// The console text kept for the boot record, with kgym's notes.
    pub(crate) log: Vec<u8>,
    truncated: bool,
    /// The `start` of the next read.
    pub(crate) next: u64,
    /// Bytes the instance's buffer dropped before they were read.
    pub(crate) lost: u64,
    /// Whether any output has arrived.
    pub(crate) seen_output: bool,
    /// When the report in progress started.
    report_started: Option<Instant>,
}

impl SerialConsole {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Takes one read's answer (asked from `self.next`) read at `now`; the
    /// report when one completed.
    pub(crate) fn take(&mut self, out: &SerialPortOutput, now: Instant) -> Option<Report> {
        if out.start > self.next {
            let lost = out.start - self.next;
            self.lost += lost;
            self.note(&format!(
                "{lost} bytes of serial output lost (asked from {}, got from {})",
                self.next, out.start
            ));
        }
        // `next` only moves forward: a stale answer cannot rewind the read.
        self.next = self.next.max(out.next);
        if out.contents.is_empty() {
            return None;
        }
        self.seen_output = true;
        self.append(out.contents.as_bytes());
        match self.parser.feed_bytes(out.contents.as_bytes()) {
            StreamEvent::Complete(report) => Some(*report),
            StreamEvent::Started => {
                self.report_started = Some(now);
                None
            }
            StreamEvent::Nothing => None,
        }
    }

    /// When a report started and has not completed yet.
    pub(crate) fn report_started(&self) -> Option<Instant> {
        self.report_started.filter(|_| self.parser.in_report())
    }

    /// The end of the console (budget, stop, instance gone): the report
    /// begun so far, if any.
    pub(crate) fn finish(&mut self) -> Option<Report> {
        if let StreamEvent::Complete(report) = self.parser.flush() {
            return Some(*report);
        }
        self.parser.finish()
    }

    /// A note of kgym's in the log, on a line of its own.
    pub(crate) fn note(&mut self, text: &str) {
        let sep = if self.log.last().is_none_or(|&b| b == b'\n') { "" } else { "\n" };
        self.append(format!("{sep}[kgym: {text}]\n").as_bytes());
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.log.len() + bytes.len() <= MAX_LOG {
            self.log.extend_from_slice(bytes);
        } else if !self.truncated {
            self.truncated = true;
            self.log.extend_from_slice(b"\n[kgym: console log truncated]\n");
        }
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
        let mut c = SerialConsole::new();
        let now = Instant::now();
        assert!(c.take(&chunk("hello\n", 0), now).is_none());
        assert_eq!(c.next, 6);
        // The buffer wrapped: 100 bytes from 6 are gone.
        assert!(c.take(&chunk("world\n", 106), now).is_none());
        assert_eq!((c.next, c.lost), (112, 100));
        let log = String::from_utf8(c.log.clone()).unwrap();
        assert!(log.contains("[kgym: 100 bytes of serial output lost (asked from 6, got from 106)]"), "{log}");
        assert!(log.ends_with("world\n"), "{log}");
    }

    #[test]
    fn an_empty_answer_keeps_the_offset() {
        let mut c = SerialConsole::new();
        c.take(&chunk("abc", 0), Instant::now());
        c.take(&SerialPortOutput { contents: String::new(), start: 3, next: 3 }, Instant::now());
        assert_eq!((c.next, c.lost), (3, 0));
        assert!(c.seen_output);
    }
}
