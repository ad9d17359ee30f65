//! The generated initramfs: a static busybox for the guest's architecture
//! ([`find_busybox_for`]), an `/init` script that mounts `/proc`, `/sys`,
//! `/dev`, prints [`USERSPACE_MARKER`] and runs the reproducer in a loop,
//! and the reproducer's files.
//!
//! The archive is written directly in the kernel's `newc` cpio format (no
//! root rights needed for device nodes, no `cpio` binary), uncompressed: the
//! kernel unpacks it faster than a gzip one under TCG.

use std::path::{Path, PathBuf};

use kgym_core::stage::build::Arch;

use crate::elf::{self, Unfit};
use crate::error::{Error, Result};
use crate::guest_arch::GuestArch;

/// Printed by init once `/proc`, `/sys` and `/dev` are up: the boot reached
/// userspace.
pub const USERSPACE_MARKER: &str = "KGYM-USERSPACE-READY";

/// Printed by the guest's loop before each run of the reproducer. Not one
/// of syzkaller's execution lines: a loop restarting a failing program must
/// not look like a program that executes.
pub const RUN_MARKER: &str = "running the reproducer";

/// Where `/init` finds the reproducer's files in the initramfs.
pub const GUEST_DIR: &str = "/kgym";

/// Paths searched for a static busybox for an x86_64 guest when none is
/// configured (Debian's `busybox-static` on an amd64 host).
pub const BUSYBOX_CANDIDATES: &[&str] = &["/bin/busybox", "/usr/bin/busybox", "/usr/sbin/busybox"];

/// Where `scripts/setup.sh` installs a static 32-bit busybox (Debian's
/// `busybox-static:i386`) for i386 guests: the host's busybox is 64-bit,
/// and a 32-bit kernel cannot execute it.
pub const BUSYBOX_I386: &str = "/opt/kgym/busybox-i386/bin/busybox";

/// The paths searched, in order, for the busybox of an `arch` guest: for
/// x86_64 [`BUSYBOX_CANDIDATES`]; for i386 [`BUSYBOX_I386`], then
/// [`BUSYBOX_CANDIDATES`] (a host busybox only qualifies if it is a 32-bit
/// i386 binary, as on an i386 host).
pub(crate) fn busybox_candidates(arch: GuestArch) -> Vec<PathBuf> {
    let first = match arch {
        GuestArch::X86_64 => None,
        GuestArch::I386 => Some(BUSYBOX_I386),
    };
    first.into_iter().chain(BUSYBOX_CANDIDATES.iter().copied()).map(PathBuf::from).collect()
}

/// What an `arch` guest needs as its busybox, and how to get it.
fn busybox_need(arch: GuestArch) -> String {
    match arch {
        GuestArch::X86_64 => "an x86_64 guest needs a static 64-bit busybox: install busybox-static \
                         (apt-get install busybox-static)"
            .into(),
        GuestArch::I386 => format!(
            "an i386 guest needs a static 32-bit busybox: run scripts/setup.sh, which installs one at {BUSYBOX_I386}"
        ),
    }
}

/// Checks that `path` is a static busybox a `guest` can execute: an
/// ELF file of the guest's class and machine ([`Error::GuestBinaryArch`]
/// otherwise), statically linked ([`Error::ToolMissing`] otherwise).
fn check_for(guest: GuestArch, path: &Path) -> Result<()> {
    let arch = Arch::from(guest);
    match elf::unfit_for(path, arch).map_err(Error::io(path))? {
        None => Ok(()),
        Some(Unfit::Dynamic) => Err(Error::ToolMissing {
            tool: "busybox".into(),
            hint: format!("{} is dynamically linked; {}", path.display(), busybox_need(guest)),
        }),
        Some(unfit) => Err(Error::GuestBinaryArch {
            what: "busybox".into(),
            path: path.to_owned(),
            found: unfit.describe(),
            guest: arch,
            need: busybox_need(guest),
        }),
    }
}

/// A static busybox for an `arch` guest: `explicit` when given (checked
/// with `check_for`), else the first of [`busybox_candidates`] that
/// passes the check. When none does, [`Error::ToolMissing`] says what each
/// candidate found is and where to get the right one.
pub fn find_busybox_for(arch: Arch, explicit: Option<&Path>) -> Result<PathBuf> {
    let guest = GuestArch::try_from(arch)?;
    match explicit {
        Some(p) => check_for(guest, p).map(|()| p.to_owned()),
        None => find_in(guest, &busybox_candidates(guest)),
    }
}

fn find_in(guest: GuestArch, candidates: &[PathBuf]) -> Result<PathBuf> {
    let mut passed_over = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // /bin and /usr/bin are often one directory: look at each file once.
    for path in
        candidates.iter().filter(|p| p.is_file() && seen.insert(p.canonicalize().unwrap_or_else(|_| (*p).clone())))
    {
        match check_for(guest, path) {
            Ok(()) => return Ok(path.clone()),
            Err(Error::GuestBinaryArch { found, .. }) => passed_over.push(format!("{} is {found}", path.display())),
            Err(Error::ToolMissing { .. }) => passed_over.push(format!("{} is dynamically linked", path.display())),
            Err(e) => passed_over.push(e.to_string()),
        }
    }
    let mut hint = busybox_need(guest);
    if !passed_over.is_empty() {
        hint = format!("{hint} ({})", passed_over.join("; "));
    }
    Err(Error::ToolMissing { tool: format!("busybox for {} guests", Arch::from(guest).as_str()), hint })
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
        if elf::is_dynamic(&busybox) {
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
# Loopback, as every distribution brings it up: syz-execprog talks to its
# executor over TCP on localhost, and reproducers use it too.
/bin/busybox ifconfig lo 127.0.0.1 up 2>/dev/null
[ -e /bin/sh ] || /bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/root
cd {GUEST_DIR}
n=0
while true; do
  echo "kgym: {RUN_MARKER} (run $n)"
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
    use crate::elf::ElfInfo;

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
            busybox: find_busybox_for(Arch::X86_64, None).unwrap(),
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
            assert!(elf::is_dynamic(&gcc), "/bin/sh should be dynamic");
        }
        assert!(!elf::is_dynamic(b"#!/bin/sh\n"));
        if let Ok(bb) = find_busybox_for(Arch::X86_64, None) {
            assert!(!elf::is_dynamic(&std::fs::read(bb).unwrap()));
        }
    }

    fn write_fake(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn busybox_must_match_the_guest_arch() {
        use crate::elf::{EM_386, EM_X86_64, fake::elf};
        let dir = tempfile::tempdir().unwrap();
        let x64 = write_fake(dir.path(), "bb64", &elf(true, EM_X86_64, false));
        let i386 = write_fake(dir.path(), "bb32", &elf(false, EM_386, false));
        let i386_dyn = write_fake(dir.path(), "bb32-dyn", &elf(false, EM_386, true));
        let script = write_fake(dir.path(), "bb.sh", b"#!/bin/sh\n");
        check_for(GuestArch::X86_64, &x64).unwrap();
        check_for(GuestArch::I386, &i386).unwrap();
        let err = check_for(GuestArch::I386, &x64).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(&err, Error::GuestBinaryArch { guest: Arch::I386, path, .. } if *path == x64), "{err:?}");
        assert_eq!(
            msg,
            format!(
                "put busybox in an i386 guest: {} is an x86_64 binary; an i386 guest needs a static 32-bit \
                 busybox: run scripts/setup.sh, which installs one at /opt/kgym/busybox-i386/bin/busybox",
                x64.display()
            )
        );
        let err = check_for(GuestArch::X86_64, &i386).unwrap_err();
        assert!(err.to_string().contains("is an i386 binary; an x86_64 guest needs"), "{err}");
        let err = check_for(GuestArch::I386, &script).unwrap_err();
        assert!(matches!(&err, Error::GuestBinaryArch { found, .. } if found == "not an ELF executable"), "{err:?}");
        let err = check_for(GuestArch::I386, &i386_dyn).unwrap_err();
        assert!(matches!(&err, Error::ToolMissing { hint, .. } if hint.contains("dynamically linked")), "{err:?}");
        // An explicit busybox is checked, never replaced by a candidate.
        assert!(matches!(find_busybox_for(Arch::I386, Some(&x64)), Err(Error::GuestBinaryArch { .. })));
        assert_eq!(find_busybox_for(Arch::I386, Some(&i386)).unwrap(), i386);
    }

    #[test]
    fn lookup_takes_the_first_candidate_of_the_guest_arch() {
        use crate::elf::{EM_386, EM_X86_64, fake::elf};
        let dir = tempfile::tempdir().unwrap();
        let x64 = write_fake(dir.path(), "bb64", &elf(true, EM_X86_64, false));
        let i386 = write_fake(dir.path(), "bb32", &elf(false, EM_386, false));
        let i386_dyn = write_fake(dir.path(), "bb32-dyn", &elf(false, EM_386, true));
        let missing = dir.path().join("missing");
        let all = [missing.clone(), i386_dyn.clone(), x64.clone(), i386.clone()];
        assert_eq!(find_in(GuestArch::I386, &all).unwrap(), i386);
        assert_eq!(find_in(GuestArch::X86_64, &all).unwrap(), x64);
        // Only a 64-bit one for an i386 guest: say what was found and what is needed.
        let err = find_in(GuestArch::I386, &[missing, x64.clone(), i386_dyn.clone()]).unwrap_err();
        let Error::ToolMissing { tool, hint } = &err else { panic!("{err:?}") };
        assert_eq!(tool, "busybox for i386 guests");
        assert!(hint.starts_with("an i386 guest needs a static 32-bit busybox: run scripts/setup.sh"), "{hint}");
        assert!(hint.contains(&format!("{} is an x86_64 binary", x64.display())), "{hint}");
        assert!(hint.contains(&format!("{} is dynamically linked", i386_dyn.display())), "{hint}");
        // The i386 search order: the setup script's busybox first, then the host's.
        let c = busybox_candidates(GuestArch::I386);
        assert_eq!(c[0], Path::new(BUSYBOX_I386));
        assert_eq!(c[1..], busybox_candidates(GuestArch::X86_64)[..]);
    }

    #[test]
    fn the_installed_busyboxes_are_found_per_arch() {
        if kgym_testkit::require_tool("busybox").is_some() {
            let bb = find_busybox_for(Arch::X86_64, None).unwrap();
            assert_eq!(ElfInfo::read(&bb).unwrap().and_then(|i| i.arch()), Some(Arch::X86_64));
        }
        if !Path::new(BUSYBOX_I386).is_file() {
            kgym_testkit::skip_or_fail(&format!("{BUSYBOX_I386} is missing (run scripts/setup.sh)"));
            return;
        }
        assert_eq!(find_busybox_for(Arch::I386, None).unwrap(), Path::new(BUSYBOX_I386));
    }
}
