//! The x86 boot protocol header of a bzImage: tells a 32-bit kernel from a
//! 64-bit one before it is booted.
//!
//! Since boot protocol 2.12 (Linux 3.8) the setup header carries
//! `xloadflags` at offset `0x236`, whose bit 0 (`XLF_KERNEL_64`) is set
//! exactly when the kernel was built with `CONFIG_X86_64`
//! (`arch/x86/boot/header.S`). Older or foreign images give no answer.

use std::io::Read;
use std::path::Path;

use kgym_core::stage::build::Arch;

use crate::error::{Error, Result};

/// Where the `HdrS` signature is.
const SIGNATURE_AT: usize = 0x202;
/// Where the boot protocol version is (after the signature).
const VERSION_AT: usize = 0x206;
/// Where `xloadflags` is.
const XLOADFLAGS_AT: usize = 0x236;
/// The first protocol version with `xloadflags`.
const MIN_VERSION: u16 = 0x020c;
/// `XLF_KERNEL_64`: a 64-bit kernel.
const XLF_KERNEL_64: u16 = 1;

/// The architecture of a bzImage from its first bytes; `None` when they are
/// not a bzImage setup header of protocol 2.12 or later.
pub(crate) fn arch_from_header(head: &[u8]) -> Option<Arch> {
    let rd16 = |at: usize| head.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if head.get(SIGNATURE_AT..SIGNATURE_AT + 4) != Some(b"HdrS") || rd16(VERSION_AT)? < MIN_VERSION {
        return None;
    }
    let flags = rd16(XLOADFLAGS_AT)?;
    Some(if flags & XLF_KERNEL_64 != 0 { Arch::X86_64 } else { Arch::I386 })
}

/// The architecture of the bzImage at `path`, from its x86 boot protocol
/// header: `xloadflags` (offset `0x236`, boot protocol 2.12 and later, i.e.
/// Linux 3.8+) has bit 0 (`XLF_KERNEL_64`) set exactly for a
/// `CONFIG_X86_64` kernel. `None` when the file is no such bzImage.
///
/// ```no_run
/// use kgym_core::stage::build::Arch;
/// let arch = kgym_vm::detect_arch("bzImage".as_ref())?.unwrap_or(Arch::X86_64);
/// # Ok::<(), kgym_vm::Error>(())
/// ```
pub fn detect_arch(path: &Path) -> Result<Option<Arch>> {
    let mut head = Vec::with_capacity(XLOADFLAGS_AT + 2);
    std::fs::File::open(path)
        .and_then(|f| f.take(XLOADFLAGS_AT as u64 + 2).read_to_end(&mut head))
        .map_err(Error::io(path))?;
    Ok(arch_from_header(&head))
}

/// Checks that `path` is a kernel QEMU can boot directly: a regular file
/// with the x86 boot header (`HdrS`) of a bzImage. Says what is wrong
/// otherwise — missing, a directory (e.g. a build's output folder), empty,
/// an ELF file (vmlinux instead of bzImage), anything else — as an
/// [`Error::InvalidRequest`]. Returns the arch its header names (protocol
/// 2.12 or later), else `None`.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let err = kgym_vm::check_kernel(dir.path()).unwrap_err();
/// assert!(err.to_string().contains("is a directory, not a bzImage"), "{err}");
/// ```
pub fn check_kernel(path: &Path) -> Result<Option<Arch>> {
    let bad = |what: String| Err(Error::InvalidRequest { reason: format!("kernel {}: {what}", path.display()) });
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return bad("no such file".into()),
        Err(e) => return Err(Error::Io { path: path.to_owned(), source: e }),
    };
    if meta.is_dir() {
        return bad("is a directory, not a bzImage (give the bzImage file in it)".into());
    }
    if !meta.is_file() {
        return bad("is not a regular file, not a bzImage".into());
    }
    if meta.len() == 0 {
        return bad("is empty, not a bzImage".into());
    }
    let mut head = Vec::with_capacity(XLOADFLAGS_AT + 2);
    std::fs::File::open(path)
        .and_then(|f| f.take(XLOADFLAGS_AT as u64 + 2).read_to_end(&mut head))
        .map_err(Error::io(path))?;
    if head.get(SIGNATURE_AT..SIGNATURE_AT + 4) != Some(b"HdrS") {
        let what = if head.starts_with(b"\x7fELF") {
            "is an ELF file (vmlinux?), not a bzImage (give arch/x86/boot/bzImage)"
        } else {
            "is not a bzImage (no x86 boot header)"
        };
        return bad(what.into());
    }
    Ok(arch_from_header(&head))
}

/// The arch to boot `path` as when nobody said: what its boot header says,
/// else x86_64 (an unreadable kernel is reported by the run itself).
pub fn boot_arch(path: &Path) -> Arch {
    detect_arch(path).ok().flatten().unwrap_or(Arch::X86_64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u16, xloadflags: u16) -> Vec<u8> {
        let mut h = vec![0u8; 0x240];
        h[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        h[SIGNATURE_AT..SIGNATURE_AT + 4].copy_from_slice(b"HdrS");
        h[VERSION_AT..VERSION_AT + 2].copy_from_slice(&version.to_le_bytes());
        h[XLOADFLAGS_AT..XLOADFLAGS_AT + 2].copy_from_slice(&xloadflags.to_le_bytes());
        h
    }

    #[test]
    fn xloadflags_tell_the_arch() {
        // 6.1 x86_64: XLF_KERNEL_64 | XLF_5LEVEL; i386: only EFI handover bits.
        assert_eq!(arch_from_header(&header(0x020f, 0x21)), Some(Arch::X86_64));
        assert_eq!(arch_from_header(&header(0x020f, 0x04)), Some(Arch::I386));
        assert_eq!(arch_from_header(&header(0x020f, 0)), Some(Arch::I386));
    }

    #[test]
    fn old_protocols_and_other_files_give_no_answer() {
        assert_eq!(arch_from_header(&header(0x020b, 0x01)), None);
        let mut not_hdrs = header(0x020f, 0x01);
        not_hdrs[SIGNATURE_AT] = b'X';
        assert_eq!(arch_from_header(&not_hdrs), None);
        assert_eq!(arch_from_header(&header(0x020f, 0x01)[..0x237]), None);
        assert_eq!(arch_from_header(b"\x7fELF"), None);
    }

    #[test]
    fn kernels_that_are_no_bzimage_are_refused_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let cases = [
            (dir.path().join("missing"), "no such file"),
            (dir.path().to_owned(), "is a directory, not a bzImage"),
            (file("empty", b""), "is empty, not a bzImage"),
            (file("vmlinux", b"\x7fELF\x02\x01\x01"), "is an ELF file (vmlinux?), not a bzImage"),
            (file("text", b"hello"), "is not a bzImage"),
        ];
        for (path, want) in cases {
            let err = check_kernel(&path).unwrap_err();
            assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
            assert!(err.to_string().contains(want), "{}: {err}", path.display());
        }
        assert_eq!(check_kernel(&file("bz", &header(0x020f, 0x21))).unwrap(), Some(Arch::X86_64));
        assert_eq!(check_kernel(&file("old", &header(0x020b, 0x01))).unwrap(), None);
    }

    #[test]
    fn missing_files_are_io_errors() {
        let err = detect_arch(Path::new("/nonexistent/bzImage")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }

    #[test]
    fn cached_test_kernels_match_their_configs() {
        // Present once any kernel test has run; a unit test never builds it.
        let k = kgym_testkit::test_cache_dir().join("kernels");
        for dir in std::fs::read_dir(k).into_iter().flatten().flatten() {
            let (bz, config) = (dir.path().join("bzImage"), dir.path().join("config"));
            let Ok(config) = std::fs::read_to_string(&config) else { continue };
            if !bz.is_file() {
                continue;
            }
            let want = if config.lines().any(|l| l == "CONFIG_X86_64=y") { Arch::X86_64 } else { Arch::I386 };
            assert_eq!(detect_arch(&bz).unwrap(), Some(want), "{}", bz.display());
        }
    }
}
