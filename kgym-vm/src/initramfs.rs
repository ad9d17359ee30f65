//! The generated initramfs: the host's static busybox, an `/init` script
//! that mounts `/proc`, `/sys`, `/dev`, prints [`USERSPACE_MARKER`] and runs
//! the reproducer in a loop, and the reproducer's files.
//!
//! The archive is written directly in the kernel's `newc` cpio format (no
//! root rights needed for device nodes, no `cpio` binary), uncompressed: the
//! kernel unpacks it faster than a gzip one under TCG.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Printed by init once `/proc`, `/sys` and `/dev` are up: the boot reached
/// userspace.
pub const USERSPACE_MARKER: &str = "KGYM-USERSPACE-READY";

/// Printed before each execution of the reproducer (syzkaller's wording, so
/// the "not executing programs" watchdog works the same for both kinds).
pub const EXECUTING_MARKER: &str = "executing program";

/// Where `/init` finds the reproducer's files in the initramfs.
pub const GUEST_DIR: &str = "/kgym";

/// Paths searched for a static busybox when none is configured.
pub const BUSYBOX_CANDIDATES: &[&str] = &["/bin/busybox", "/usr/bin/busybox", "/usr/sbin/busybox"];

/// A static busybox for the guest: `explicit` when given, else the host's
/// (it must be statically linked: the initramfs has no libc).
pub fn find_busybox(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => {
            BUSYBOX_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| Error::ToolMissing {
                tool: "busybox".into(),
                hint: "install busybox-static (apt-get install busybox-static)".into(),
            })?
        }
    };
    let head = std::fs::read(&path).map_err(Error::io(&path))?;
    if is_dynamic_elf(&head) {
        return Err(Error::ToolMissing {
            tool: "busybox".into(),
            hint: format!("{} is dynamically linked; install busybox-static", path.display()),
        });
    }
    Ok(path)
}

/// `true` when `elf` has a `PT_INTERP` program header (a dynamic executable).
pub(crate) fn is_dynamic_elf(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return false;
    }
    let is64 = elf[4] == 2;
    let rd16 = |o: usize| elf.get(o..o + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let rd32 = |o: usize| elf.get(o..o + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let rd64 = |o: usize| {
        elf.get(o..o + 8).map_or(0, |b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize)
    };
    let (phoff, phentsize, phnum) =
        if is64 { (rd64(0x20), rd16(0x36), rd16(0x38)) } else { (rd32(0x1c), rd16(0x2a), rd16(0x2c)) };
    (0..phnum).any(|i| rd32(phoff + i * phentsize) == 3)
}

/// A `newc` cpio archive under construction.
#[derive(Debug, Default)]
pub struct CpioWriter {
    buf: Vec<u8>,
    next_ino: u32,
}

impl CpioWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self { buf: Vec::new(), next_ino: 1 }
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, perm: u32) -> &mut Self {
        self.entry(path, 0o040000 | perm, 0, (0, 0), &[])
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.entry(path, 0o100000 | perm, 1, (0, 0), data)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, 0o120777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(path, 0o020000 | perm, 1, (major, minor), &[])
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0, 1, (0, 0), 0);
        self.buf
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) -> &mut Self {
        let ino = self.next_ino;
        self.next_ino += 1;
        let name = path.trim_start_matches('/');
        self.header(name, ino, mode, nlink.max(if mode & 0o040000 != 0 { 2 } else { 1 }), rdev, data.len());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn header(&mut self, name: &str, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), size: usize) {
        let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
}

/// What goes into a generated initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// A static busybox binary.
    pub busybox: PathBuf,
    /// Files placed under [`GUEST_DIR`]: (name, host path).
    pub files: Vec<(String, PathBuf)>,
    /// The shell command that runs the reproducer once, from [`GUEST_DIR`].
    pub program: String,
    /// Seconds init waits between two executions.
    pub pause_secs: u32,
}

impl InitramfsSpec {
    /// The `/init` script.
    pub fn init_script(&self) -> String {
        init_script(&self.program, self.pause_secs)
    }

    /// Builds the archive.
    pub fn build(&self) -> Result<Vec<u8>> {
        let busybox = std::fs::read(&self.busybox).map_err(Error::io(&self.busybox))?;
        if is_dynamic_elf(&busybox) {
            return Err(Error::Initramfs { reason: format!("{} is not statically linked", self.busybox.display()) });
        }
        let mut w = CpioWriter::new();
        for d in ["/bin", "/sbin", "/dev", "/proc", "/sys", "/tmp", "/root", GUEST_DIR] {
            w.dir(d, 0o755);
        }
        w.char_device("/dev/console", 0o600, 5, 1);
        w.char_device("/dev/null", 0o666, 1, 3);
        w.file("/bin/busybox", 0o755, &busybox);
        // Applet links made here cost the guest nothing; `busybox --install`
        // at boot costs a noticeable part of a TCG boot. If the host cannot
        // list them, init installs them itself.
        for applet in busybox_applets(&self.busybox) {
            w.symlink(&format!("/bin/{applet}"), "busybox");
        }
        w.file("/init", 0o755, self.init_script().as_bytes());
        for (name, host) in &self.files {
            if name.contains('/') || name.is_empty() {
                return Err(Error::Initramfs { reason: format!("bad guest file name {name:?}") });
            }
            let data = std::fs::read(host).map_err(Error::io(host))?;
            w.file(&format!("{GUEST_DIR}/{name}"), 0o755, &data);
        }
        Ok(w.finish())
    }
}

/// The applets of `busybox` (`busybox --list`), or none when it cannot run
/// on this host.
fn busybox_applets(busybox: &Path) -> Vec<String> {
    let Ok(out) = std::process::Command::new(busybox).arg("--list").output() else { return Vec::new() };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| {
            !a.is_empty() && *a != "busybox" && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.[".contains(c))
        })
        .map(str::to_owned)
        .collect()
}

/// The init script: mount the pseudo file systems, announce userspace, run
/// `program` forever (the VM is stopped from outside).
pub fn init_script(program: &str, pause_secs: u32) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo {USERSPACE_MARKER}
/bin/busybox mount -t tmpfs tmpfs /tmp
[ -e /bin/sh ] || /bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/root
cd {GUEST_DIR}
n=0
while true; do
  echo "kgym: {EXECUTING_MARKER} $n"
  {program}
  echo "kgym: program exited with status $?"
  n=$((n+1))
  sleep {pause_secs}
done
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_terminated() {
        let mut w = CpioWriter::new();
        w.dir("/bin", 0o755).file("/init", 0o755, b"#!/bin/sh\n").symlink("/bin/sh", "busybox");
        w.char_device("/dev/console", 0o600, 5, 1);
        let out = w.finish();
        assert_eq!(&out[..6], b"070701");
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("bin\0") && text.contains("init\0") && text.contains("#!/bin/sh\n"));
        assert!(text.contains("TRAILER!!!\0"));
        // The console's rdev major/minor fields.
        let at = text.find("dev/console").unwrap() - 110;
        assert_eq!(&text[at + 78..at + 94], "0000000500000001");
    }

    #[test]
    fn cpio_lists_with_the_host_tool() {
        let Some(cpio) = kgym_testkit::require_tool("cpio") else {
            return;
        };
        let mut w = CpioWriter::new();
        w.dir("/a", 0o755).file("/a/f", 0o644, b"hello").symlink("/a/l", "f");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cpio");
        std::fs::write(&path, w.finish()).unwrap();
        let out = std::process::Command::new(cpio).args(["-t", "-F"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a\na/f\na/l\n");
    }

    #[test]
    fn init_announces_userspace_and_loops() {
        let s = init_script("./repro", 1);
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        let marker = s.find(USERSPACE_MARKER).unwrap();
        assert!(s.find("mount -t proc").unwrap() < marker);
        assert!(s.contains("while true; do") && s.contains("  ./repro\n"));
        assert!(s.find("--install").unwrap() > marker, "applet links are not on the boot path");
    }

    #[test]
    fn initramfs_holds_busybox_its_applets_init_and_the_files() {
        let Some(_) = kgym_testkit::require_tool("busybox") else { return };
        let dir = tempfile::tempdir().unwrap();
        let repro = dir.path().join("r");
        std::fs::write(&repro, b"\x7fELF-ish").unwrap();
        let spec = InitramfsSpec {
            busybox: find_busybox(None).unwrap(),
            files: vec![("kgym-repro".into(), repro)],
            program: "./kgym-repro".into(),
            pause_secs: 1,
        };
        let out = spec.build().unwrap();
        let text = String::from_utf8_lossy(&out);
        for name in ["bin/busybox\0", "bin/sh\0", "bin/sleep\0", "init\0", "kgym/kgym-repro\0", "dev/console\0"] {
            assert!(text.contains(name), "missing {name:?}");
        }
        let bad = InitramfsSpec { files: vec![("../x".into(), dir.path().join("r"))], ..spec };
        assert!(matches!(bad.build(), Err(Error::Initramfs { .. })));
    }

    #[test]
    fn dynamic_elves_are_recognized() {
        let gcc = std::fs::read("/bin/sh").unwrap_or_default();
        if !gcc.is_empty() {
            assert!(is_dynamic_elf(&gcc), "/bin/sh should be dynamic");
        }
        assert!(!is_dynamic_elf(b"#!/bin/sh\n"));
        if let Ok(bb) = find_busybox(None) {
            assert!(!is_dynamic_elf(&std::fs::read(bb).unwrap()));
        }
    }
}
