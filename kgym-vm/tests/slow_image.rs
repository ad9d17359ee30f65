//! SLOW (about a minute; runs in CI): the disk-image userspace. The test
//! builds its own ext4 image (busybox, dropbear and its libraries, an SSH
//! key), boots the buggy kernel with `root=/dev/vda`, and the reproducer
//! reaches the guest over SSH through QEMU's user-mode network.

mod common;

use std::time::Duration;

use common::image::build_image;
use common::*;
use kgym_core::stage::reproduce::{ImageAbility, Reproducer};
use kgym_vm::outcome::BootEnd;
use kgym_vm::{DiskImage, RunRequest, UserspaceSpec, VmRunner};

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
