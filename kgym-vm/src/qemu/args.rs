//! The QEMU command line of one boot.

use std::path::{Path, PathBuf};

use kgym_core::MachineSpec;
use kgym_core::stage::reproduce::Accel;

use crate::guest_arch::GuestArch;

/// Disk image formats QEMU is told about explicitly (never guessed: a raw
/// image that looks like qcow2 must not be probed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// A raw disk.
    Raw,
    /// QEMU copy-on-write v2.
    Qcow2,
}

impl ImageFormat {
    /// Detects the format from the file's magic.
    pub fn detect(path: &Path) -> std::io::Result<Self> {
        use std::io::Read;
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path)?;
        let n = f.read(&mut magic)?;
        Ok(if n == 4 && &magic == b"QFI\xfb" { Self::Qcow2 } else { Self::Raw })
    }

    /// QEMU's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

/// Everything that varies between boots.
#[derive(Debug, Clone)]
pub struct QemuArgs {
    /// KVM or TCG.
    pub accel: Accel,
    /// CPUs and memory.
    pub machine: MachineSpec,
    /// The bzImage.
    pub kernel: PathBuf,
    /// The kernel command line.
    pub append: String,
    /// The initramfs, when booting one.
    pub initrd: Option<PathBuf>,
    /// A disk image (booted in snapshot mode: never modified).
    pub disk: Option<(PathBuf, ImageFormat)>,
    /// A host port forwarded to the guest's SSH port 22.
    pub ssh_port: Option<u16>,
    /// The QMP control socket: kgym listens on it, QEMU connects to it when
    /// it starts (so QMP is ready when QEMU is, without polling for a file).
    pub qmp_socket: PathBuf,
    /// Extra arguments appended verbatim.
    pub extra: Vec<String>,
}

/// The QEMU system emulator for `arch` (a 32-bit kernel boots in
/// `qemu-system-i386`).
pub(crate) fn qemu_program(arch: GuestArch) -> &'static str {
    match arch {
        GuestArch::X86_64 => "qemu-system-x86_64",
        GuestArch::I386 => "qemu-system-i386",
    }
}

impl QemuArgs {
    /// The arguments (without the program).
    pub fn to_args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_owned()));
        match self.accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host,migratable=off"]),
            // Cloud never reaches QEMU; treat it as the portable choice.
            Accel::Tcg | Accel::Cloud => push(&["-accel", "tcg"]),
        }
        let mem = self.machine.memory_mb.to_string();
        let cpus = self.machine.cpus.to_string();
        push(&["-m", &mem, "-smp", &cpus]);
        // No default devices (VGA, NIC, monitor): the serial port on stdout
        // is the console we parse; control goes over QMP. pvpanic lets a
        // kernel with its driver report a panic to QEMU (GUEST_PANICKED).
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"]);
        push(&["-device", "pvpanic"]);
        // A client socket: QEMU connects to kgym's listener while it starts.
        let qmp = format!("unix:{}", self.qmp_socket.display());
        push(&["-qmp", &qmp]);
        let kernel = self.kernel.display().to_string();
        push(&["-kernel", &kernel, "-append", &self.append]);
        if let Some(initrd) = &self.initrd {
            let initrd = initrd.display().to_string();
            push(&["-initrd", &initrd]);
        }
        if let Some((path, format)) = &self.disk {
            let drive = format!("file={},format={},if=virtio,snapshot=on", path.display(), format.as_str());
            push(&["-drive", &drive]);
        }
        if let Some(port) = self.ssh_port {
            let netdev = format!("user,id=net0,restrict=off,hostfwd=tcp:127.0.0.1:{port}-:22");
            push(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> QemuArgs {
        QemuArgs {
            accel: Accel::Tcg,
            machine: "2-1024".parse().unwrap(),
            kernel: "/k/bzImage".into(),
            append: "console=ttyS0 panic=1".into(),
            initrd: Some("/r/initrd.cpio".into()),
            disk: None,
            ssh_port: None,
            qmp_socket: "/r/qmp.sock".into(),
            extra: vec![],
        }
    }

    fn has(a: &[String], pair: [&str; 2]) -> bool {
        a.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1])
    }

    #[test]
    fn direct_kernel_boot_with_serial_and_qmp() {
        let a = base().to_args();
        assert!(has(&a, ["-accel", "tcg"]));
        assert!(has(&a, ["-m", "1024"]) && has(&a, ["-smp", "2"]));
        assert!(has(&a, ["-kernel", "/k/bzImage"]) && has(&a, ["-initrd", "/r/initrd.cpio"]));
        assert!(has(&a, ["-append", "console=ttyS0 panic=1"]));
        assert!(has(&a, ["-serial", "stdio"]) && a.contains(&"-no-reboot".to_owned()));
        assert!(has(&a, ["-qmp", "unix:/r/qmp.sock"]), "QEMU is the QMP client: {a:?}");
        assert!(has(&a, ["-device", "pvpanic"]));
        assert!(!a.iter().any(|x| x.starts_with("-netdev")));
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_images_boot_in_snapshot_mode_with_ssh() {
        let mut q = base();
        q.accel = Accel::Kvm;
        q.initrd = None;
        q.disk = Some(("/i/disk.qcow2".into(), ImageFormat::Qcow2));
        q.ssh_port = Some(10022);
        let a = q.to_args();
        assert!(has(&a, ["-accel", "kvm"]) && has(&a, ["-cpu", "host,migratable=off"]));
        assert!(has(&a, ["-drive", "file=/i/disk.qcow2,format=qcow2,if=virtio,snapshot=on"]));
        assert!(has(&a, ["-netdev", "user,id=net0,restrict=off,hostfwd=tcp:127.0.0.1:10022-:22"]));
        assert!(!a.contains(&"-initrd".to_owned()));
    }

    #[test]
    fn i386_uses_its_own_emulator_and_formats_are_detected() {
        assert_eq!(qemu_program(GuestArch::I386), "qemu-system-i386");
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(ImageFormat::detect(&q).unwrap(), ImageFormat::Qcow2);
        let r = dir.path().join("r");
        std::fs::write(&r, [0u8; 512]).unwrap();
        assert_eq!(ImageFormat::detect(&r).unwrap(), ImageFormat::Raw);
    }
}
