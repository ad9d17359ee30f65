//! SLOW (about a minute; runs in CI): the disk-image userspace. The test
//! builds its own ext4 image (busybox, dropbear and its libraries, an SSH
//! key), boots the buggy kernel with `root=/dev/vda`, and the reproducer
//! reaches the guest over SSH through QEMU's user-mode network.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use kgym_core::stage::reproduce::{ImageAbility, Reproducer};
use kgym_vm::outcome::BootEnd;
use kgym_vm::{DiskImage, RunRequest, UserspaceSpec, VmRunner};

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

fn run(cmd: &mut Command) {
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
fn build_image(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
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

#[tokio::test]
async fn slow_disk_image_reproduces_over_ssh() {
    if !have_tools()
        || ["dropbear", "ssh", "ssh-keygen", "mkfs.ext4", "ldd"].iter().any(|t| kgym_testkit::require_tool(t).is_none())
    {
        return;
    }
    let k = bug_kernel().await;
    let dir = tempfile::tempdir().unwrap();
    let (image, key) = build_image(dir.path());
    let work = dir.path().join("work");
    let runner = runner_in(&work).boot_timeout(Duration::from_secs(120)).build().unwrap();
    let (ctx, log) = context();
    let req = RunRequest::new(&k.bzimage, Reproducer::c(read_bug_file("repro.c")))
        .vmlinux(&k.vmlinux)
        .userspace(UserspaceSpec::Image(DiskImage::new(&image, &key)))
        .budget(Duration::from_secs(300));
    let image_before = std::fs::read(&image).unwrap();
    let out = runner.run(req, &ctx).await.unwrap();
    let boot = &out.boots[0];
    let console = String::from_utf8_lossy(&boot.log);
    assert!(out.crashed, "{:?}\nprogress: {:?}\nconsole: {console}", out.boots, log.lines());
    assert_eq!(out.title.as_deref(), Some(BUG_TITLE));
    assert_eq!(out.image_ability, ImageAbility::Normal);
    assert!(matches!(boot.end, BootEnd::Crash { .. }));
    assert!(boot.userspace_after.is_some(), "ssh never answered");
    assert!(log.lines().iter().any(|l| l.contains("ssh up after")), "{:?}", log.lines());
    assert!(console.contains("test image: sshd started"), "booted from the disk: {console}");
    // The reproducer ran through the SSH session.
    assert!(console.contains("kgym: running the reproducer (run 0)"), "{console}");
    assert!(console.contains("kgym-repro: valid note: 0"), "{console}");
    // Snapshot mode: the image is untouched.
    assert!(std::fs::read(&image).unwrap() == image_before, "the image was modified");
}
