//! A raw ext4 disk image with SSH (busybox as init, dropbear, a fresh
//! key), for the disk-image and GCE tests.

use std::path::{Path, PathBuf};
use std::process::Command;

const IMAGE_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox --install -s /bin
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
/usr/sbin/dropbear -R -E -p 22
echo "test image: sshd started"
while true; do sleep 3600; done
"#;

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The shared libraries `bin` needs (from `ldd`), with the dynamic loader.
fn libraries(bin: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(str::to_owned))
        .collect()
}

/// A raw ext4 image with busybox as init and dropbear accepting `key`.
pub fn build_image(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    for d in ["bin", "sbin", "etc/dropbear", "dev", "proc", "sys", "tmp", "root/.ssh", "usr/sbin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox =
        kgym_vm::QemuRunner::builder().build().unwrap().busybox(kgym_core::stage::build::Arch::X86_64).unwrap();
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let dropbear = kgym_testkit::require_tool("dropbear").unwrap();
    std::fs::copy(&dropbear, root.join("usr/sbin/dropbear")).unwrap();
    for lib in libraries(&dropbear) {
        let dst = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &dst).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
    std::fs::write(root.join("sbin/init"), IMAGE_INIT).unwrap();
    run(Command::new("chmod").args(["755"]).arg(root.join("sbin/init")));
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let key = dir.join("id_ed25519");
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "kgym-test", "-f"]).arg(&key));
    std::fs::copy(dir.join("id_ed25519.pub"), root.join("root/.ssh/authorized_keys")).unwrap();
    run(Command::new("chmod").args(["700"]).arg(root.join("root")).arg(root.join("root/.ssh")));
    let image = dir.join("test.raw");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "kgym-test", "-d"]).arg(&root).arg(&image).arg("64M"));
    (image, key)
}
