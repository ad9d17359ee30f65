//! Just enough of an ELF header to tell what a guest binary is: the
//! architecture it runs on and whether it needs a dynamic loader.
//!
//! A busybox or reproducer built for the wrong architecture never runs in
//! the guest, and the guest only says `No working init found` (or nothing),
//! so binaries are checked on the host before a VM is booted. The header is
//! read by hand: the class (byte 4), the data encoding (byte 5), `e_machine`
//! (offset 18) and the program headers for `PT_INTERP`.

use std::io::Read;
use std::path::Path;

use kgym_core::stage::build::Arch;

/// `e_machine` of 32-bit x86 (`EM_386`).
pub const EM_386: u16 = 3;
/// `e_machine` of x86-64 (`EM_X86_64`).
pub const EM_X86_64: u16 = 62;

/// How much of a file [`ElfInfo::read`] looks at: the header and, in any
/// executable a linker writes, the program headers right after it.
const HEAD_BYTES: u64 = 64 * 1024;

/// What an ELF header says about a binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfInfo {
    /// `ELFCLASS64` (else `ELFCLASS32`).
    pub is_64: bool,
    /// The `e_machine` field.
    pub machine: u16,
    /// It has a `PT_INTERP` program header: it needs a dynamic loader (and
    /// a libc) that the initramfs does not have.
    pub dynamic: bool,
}

impl ElfInfo {
    /// Parses the start of a file (its header and program headers); `None`
    /// when it is not a little-endian ELF file.
    pub fn parse(elf: &[u8]) -> Option<Self> {
        if elf.len() < 52 || &elf[..4] != b"\x7fELF" || elf[5] != 1 {
            return None;
        }
        let is_64 = match elf[4] {
            1 => false,
            2 => true,
            _ => return None,
        };
        let machine = rd16(elf, 18);
        let (phoff, phentsize, phnum) = if is_64 {
            (rd64(elf, 0x20), rd16(elf, 0x36) as usize, rd16(elf, 0x38) as usize)
        } else {
            (rd32(elf, 0x1c) as usize, rd16(elf, 0x2a) as usize, rd16(elf, 0x2c) as usize)
        };
        let dynamic = (0..phnum).any(|i| rd32(elf, phoff.saturating_add(i * phentsize)) == 3);
        Some(Self { is_64, machine, dynamic })
    }

    /// Reads the header of the file at `path`; `Ok(None)` when it is not an
    /// ELF file.
    pub fn read(path: &Path) -> std::io::Result<Option<Self>> {
        let mut head = Vec::new();
        std::fs::File::open(path)?.take(HEAD_BYTES).read_to_end(&mut head)?;
        Ok(Self::parse(&head))
    }

    /// The guest architecture whose kernel runs this binary natively:
    /// 64-bit x86-64 → x86_64, 32-bit i386 → i386; anything else (x32,
    /// other CPUs) → `None`.
    pub fn arch(&self) -> Option<Arch> {
        match (self.is_64, self.machine) {
            (true, EM_X86_64) => Some(Arch::X86_64),
            (false, EM_386) => Some(Arch::I386),
            _ => None,
        }
    }

    /// What the binary is, for error messages: `an x86_64 binary`, `an
    /// i386 binary`, `a 32-bit x86-64 (x32) binary`, `a 64-bit binary for
    /// ELF machine 183`.
    pub fn describe(&self) -> String {
        match (self.arch(), self.is_64, self.machine) {
            (Some(a), ..) => format!("an {} binary", a.as_str()),
            (None, false, EM_X86_64) => "a 32-bit x86-64 (x32) binary".into(),
            (None, is_64, m) => format!("a {}-bit binary for ELF machine {m}", if is_64 { 64 } else { 32 }),
        }
    }
}

/// What keeps a file from running as a static program in a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// Not a (little-endian) ELF file.
    NotElf,
    /// An ELF binary of another architecture ([`ElfInfo::describe`]).
    OtherArch(String),
    /// Of the right architecture but dynamically linked.
    Dynamic,
}

impl Unfit {
    /// As error messages say it: `not an ELF executable`, `an x86_64
    /// binary`, `dynamically linked`.
    pub fn describe(&self) -> String {
        match self {
            Self::NotElf => "not an ELF executable".into(),
            Self::OtherArch(what) => what.clone(),
            Self::Dynamic => "dynamically linked".into(),
        }
    }
}

/// Why `path` cannot run as a static program in an `arch` guest (its
/// architecture is checked first); `None` when it can.
pub fn unfit_for(path: &Path, arch: Arch) -> std::io::Result<Option<Unfit>> {
    Ok(match ElfInfo::read(path)? {
        None => Some(Unfit::NotElf),
        Some(i) if i.arch() != Some(arch) => Some(Unfit::OtherArch(i.describe())),
        Some(i) if i.dynamic => Some(Unfit::Dynamic),
        Some(_) => None,
    })
}

/// `true` when `elf` is an ELF file with a `PT_INTERP` program header (a
/// dynamically linked executable).
pub fn is_dynamic(elf: &[u8]) -> bool {
    ElfInfo::parse(elf).is_some_and(|i| i.dynamic)
}

fn rd16(b: &[u8], at: usize) -> u16 {
    b.get(at..at.saturating_add(2)).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

fn rd32(b: &[u8], at: usize) -> u32 {
    b.get(at..at.saturating_add(4)).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn rd64(b: &[u8], at: usize) -> usize {
    b.get(at..at.saturating_add(8))
        .map_or(0, |b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize)
}

/// Minimal ELF images for tests: a header and program headers, nothing
/// else.
#[cfg(test)]
pub(crate) mod fake {
    /// An executable of the given class and machine, with a `PT_INTERP`
    /// when `dynamic` (and a `PT_LOAD` either way).
    pub fn elf(is_64: bool, machine: u16, dynamic: bool) -> Vec<u8> {
        let (ehsize, phentsize) = if is_64 { (64usize, 56usize) } else { (52, 32) };
        let types: &[u32] = if dynamic { &[1, 3] } else { &[1] };
        let mut b = vec![0u8; ehsize + phentsize * types.len()];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = if is_64 { 2 } else { 1 };
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        let n = types.len() as u16;
        if is_64 {
            b[0x20..0x28].copy_from_slice(&(ehsize as u64).to_le_bytes());
            b[0x36..0x38].copy_from_slice(&(phentsize as u16).to_le_bytes());
            b[0x38..0x3a].copy_from_slice(&n.to_le_bytes());
        } else {
            b[0x1c..0x20].copy_from_slice(&(ehsize as u32).to_le_bytes());
            b[0x2a..0x2c].copy_from_slice(&(phentsize as u16).to_le_bytes());
            b[0x2c..0x2e].copy_from_slice(&n.to_le_bytes());
        }
        for (i, t) in types.iter().enumerate() {
            let at = ehsize + i * phentsize;
            b[at..at + 4].copy_from_slice(&t.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::fake::elf;
    use super::*;

    #[test]
    fn class_and_machine_give_the_guest_arch() {
        let x64 = ElfInfo::parse(&elf(true, EM_X86_64, false)).unwrap();
        assert_eq!((x64.arch(), x64.dynamic), (Some(Arch::X86_64), false));
        assert_eq!(x64.describe(), "an x86_64 binary");
        let i386 = ElfInfo::parse(&elf(false, EM_386, true)).unwrap();
        assert_eq!((i386.arch(), i386.dynamic), (Some(Arch::I386), true));
        assert_eq!(i386.describe(), "an i386 binary");
        // Right machine, wrong class: neither runs on its "own" kernel.
        let x32 = ElfInfo::parse(&elf(false, EM_X86_64, false)).unwrap();
        assert_eq!(x32.arch(), None);
        assert!(x32.describe().contains("x32"), "{}", x32.describe());
        let arm64 = ElfInfo::parse(&elf(true, 183, false)).unwrap();
        assert_eq!(arm64.arch(), None);
        assert_eq!(arm64.describe(), "a 64-bit binary for ELF machine 183");
    }

    #[test]
    fn non_elves_and_truncated_headers_are_not_elves() {
        assert_eq!(ElfInfo::parse(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(ElfInfo::parse(&elf(true, EM_X86_64, false)[..40]), None);
        let mut big_endian = elf(false, EM_386, false);
        big_endian[5] = 2;
        assert_eq!(ElfInfo::parse(&big_endian), None);
        // Program headers past the end of what was read: not dynamic, no panic.
        let mut bad = elf(true, EM_X86_64, true);
        bad[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(ElfInfo::parse(&bad).map(|i| i.dynamic), Some(false));
    }

    #[test]
    fn real_host_binaries() {
        // /bin/sh is a dynamic executable of the host's architecture.
        if let Ok(Some(sh)) = ElfInfo::read(Path::new("/bin/sh")) {
            assert!(sh.dynamic, "/bin/sh should be dynamic");
            if cfg!(target_arch = "x86_64") {
                assert_eq!(sh.arch(), Some(Arch::X86_64));
            }
        }
        assert_eq!(ElfInfo::read(Path::new("/etc/hostname")).ok().flatten(), None);
    }
}
