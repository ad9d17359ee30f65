//! A guest that needs no kernel: a 512-byte BIOS boot sector (booted from a
//! floppy image by QEMU's firmware) that writes a marker to the first
//! serial port and then halts, or first reports a panic through QEMU's
//! `pvpanic` device (I/O port 0x505, so QEMU emits `GUEST_PANICKED`).
//!
//! The KVM probe boots it to learn whether KVM can run a guest on this host
//! at all, whatever kernel a run brings; QMP tests boot it to see QEMU's
//! events for real.

/// What the guest does after printing its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterMarker {
    /// Halts forever.
    Halt,
    /// Writes "panicked" (1) to the pvpanic port, then halts.
    #[cfg_attr(not(test), allow(dead_code))]
    Panic,
}

/// COM1's data port.
const COM1: u16 = 0x3f8;
/// The ISA pvpanic device's port (QEMU's default `ioport`).
const PVPANIC: u16 = 0x505;
/// Where the BIOS loads a boot sector.
const LOAD_ADDRESS: u16 = 0x7c00;

/// The boot sector: 16-bit real-mode code, then the marker, padded to 510
/// bytes and signed `55 aa`. `marker` must be ASCII without NUL and fit.
pub(crate) fn boot_sector(marker: &str, after: AfterMarker) -> Vec<u8> {
    let [com_lo, com_hi] = COM1.to_le_bytes();
    let [pv_lo, pv_hi] = PVPANIC.to_le_bytes();
    let mut code: Vec<u8> = vec![
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xfc, // cld
        0xba, com_lo, com_hi, // mov dx, COM1
        0xbe, 0x00, 0x00, // mov si, <marker> (patched below)
        0xac, // next: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz done (+3)
        0xee, // out dx, al
        0xeb, 0xf8, // jmp next (-8)
    ];
    // done:
    match after {
        AfterMarker::Panic => code.extend_from_slice(&[
            0xba, pv_lo, pv_hi, // mov dx, PVPANIC
            0xb0, 0x01, // mov al, 1 (PVPANIC_PANICKED)
            0xee, // out dx, al
        ]),
        AfterMarker::Halt => code.extend_from_slice(&[0x90; 6]),
    }
    code.extend_from_slice(&[
        0xf4, // halt: hlt
        0xeb, 0xfd, // jmp halt (-3)
    ]);
    let marker_at = LOAD_ADDRESS + u16::try_from(code.len()).unwrap_or(u16::MAX);
    code[9..11].copy_from_slice(&marker_at.to_le_bytes());
    assert!(marker.is_ascii() && !marker.contains('\0'), "the marker must be plain ASCII");
    code.extend_from_slice(marker.as_bytes());
    code.extend_from_slice(b"\r\n\0");
    assert!(code.len() <= 510, "the marker does not fit in a boot sector");
    code.resize(510, 0);
    code.extend_from_slice(&[0x55, 0xaa]);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_sector_pointing_at_its_marker() {
        let s = boot_sector("HELLO", AfterMarker::Panic);
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        let at = usize::from(u16::from_le_bytes([s[9], s[10]]) - LOAD_ADDRESS);
        assert_eq!(&s[at..at + 8], b"HELLO\r\n\0");
        // The panic variant writes to 0x505; the halting one does not.
        assert!(s.windows(3).any(|w| w == [0xba, 0x05, 0x05]));
        let h = boot_sector("HELLO", AfterMarker::Halt);
        assert!(!h.windows(3).any(|w| w == [0xba, 0x05, 0x05]));
        assert_eq!(u16::from_le_bytes([h[9], h[10]]), u16::from_le_bytes([s[9], s[10]]));
    }
}
