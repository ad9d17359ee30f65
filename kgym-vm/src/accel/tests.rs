use super::*;

fn booted() -> ProbeResult {
    ProbeResult::Booted(Duration::from_millis(300))
}

fn hung() -> ProbeResult {
    ProbeResult::TimedOut { after: Duration::from_secs(10), printed: 0 }
}

#[test]
fn a_host_that_cannot_run_a_boot_sector_under_kvm_gets_tcg_for_good() {
    assert_eq!(judge(&Evidence::default()), None, "nothing probed yet");
    let (d, remember) = judge(&Evidence { host: Some(hung()), ..Default::default() }).unwrap();
    assert_eq!((d.accel, remember), (Accel::Tcg, Remember::Yes));
    assert!(
        d.reason.contains("KVM cannot run a guest on this host") && d.reason.contains("printed nothing"),
        "{}",
        d.reason
    );
    let failed = ProbeResult::Exited("failed to initialize kvm: Permission denied".into());
    let (d, remember) = judge(&Evidence { host: Some(failed), ..Default::default() }).unwrap();
    assert_eq!((d.accel, remember), (Accel::Tcg, Remember::Yes));
    assert!(d.reason.contains("Permission denied"), "{}", d.reason);
}

#[test]
fn the_kernel_decides_only_what_it_can_tell_apart() {
    let host = Some(booted());
    assert_eq!(judge(&Evidence { host: host.clone(), ..Default::default() }), None, "the kernel probe is next");
    // Boots under KVM: KVM, for every kernel.
    let (d, remember) = judge(&Evidence { host: host.clone(), kernel_kvm: Some(booted()), kernel_tcg: None }).unwrap();
    assert_eq!((d.accel, remember), (Accel::Kvm, Remember::Yes));
    // Not under KVM: TCG must say whether the kernel is to blame.
    assert_eq!(judge(&Evidence { host: host.clone(), kernel_kvm: Some(hung()), kernel_tcg: None }), None);
    let (d, remember) =
        judge(&Evidence { host: host.clone(), kernel_kvm: Some(hung()), kernel_tcg: Some(booted()) }).unwrap();
    assert_eq!((d.accel, remember), (Accel::Tcg, Remember::Yes));
    assert!(d.reason.contains("KVM breaks Linux guests on this host"), "{}", d.reason);
    let panicked = ProbeResult::Exited("Kernel panic - not syncing: VFS: Unable to mount root fs".into());
    let (d, remember) = judge(&Evidence { host, kernel_kvm: Some(hung()), kernel_tcg: Some(panicked) }).unwrap();
    assert_eq!((d.accel, remember), (Accel::Tcg, Remember::No));
    assert!(d.reason.contains("booted neither") && d.reason.contains("Unable to mount root fs"), "{}", d.reason);
}

#[test]
fn modes_parse() {
    assert_eq!("KVM".parse::<AccelMode>().unwrap(), AccelMode::Kvm);
    assert_eq!("auto".parse::<AccelMode>().unwrap(), AccelMode::Auto);
    assert!("hvf".parse::<AccelMode>().is_err());
}

#[test]
fn disk_cache_round_trips_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/accel.json");
    let d = AccelDecision::new(Accel::Tcg, "probe timed out");
    write_disk(&path, "k", &d);
    assert_eq!(read_disk(&path, "k"), Some(d.clone()));
    assert_eq!(read_disk(&path, "other"), None);
    let mut cache: DiskCache = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cache.entries.get_mut("k").unwrap().at_unix -= DISK_TTL.as_secs() + 1;
    std::fs::write(&path, serde_json::to_vec(&cache).unwrap()).unwrap();
    assert_eq!(read_disk(&path, "k"), None);
}

// Real probes on this host: QEMU, and the shared test kernel.

/// QEMU, busybox and the test kernel, or `None` (a skip outside CI).
async fn real_setup() -> Option<(PathBuf, PathBuf, kgym_testkit::KernelFiles)> {
    let qemu = kgym_testkit::require_tool("qemu-system-x86_64")?;
    let busybox = kgym_testkit::require_tool("busybox")?;
    if !kgym_testkit::test_kernel_available() {
        return None;
    }
    Some((qemu, busybox, kgym_testkit::test_kernel().await))
}

/// A copy of `bzimage` whose compressed kernel is damaged in the middle: the
/// boot loader loads it, the decompressor gives up, nothing boots.
fn broken_copy(bzimage: &Path, dir: &Path) -> PathBuf {
    let mut image = std::fs::read(bzimage).unwrap();
    let setup_sects = usize::from(if image[0x1f1] == 0 { 4 } else { image[0x1f1] });
    let u32_at = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap()) as usize;
    let (offset, length) = (u32_at(0x248), u32_at(0x24c));
    let middle = (setup_sects + 1) * 512 + offset + length / 2;
    for b in &mut image[middle..middle + 64 * 1024] {
        *b ^= 0x5a;
    }
    let path = dir.join("bzImage.broken");
    std::fs::write(&path, image).unwrap();
    path
}

fn spec(qemu: &Path, kernel: &Path, busybox: &Path, dir: &Path) -> ProbeSpec {
    ProbeSpec {
        qemu: qemu.to_owned(),
        kernel: kernel.to_owned(),
        busybox: Some(busybox.to_owned()),
        kvm_timeout: Duration::from_secs(5),
        tcg_timeout: Duration::from_secs(30),
        work_dir: dir.to_owned(),
    }
}

#[tokio::test]
async fn the_probe_guests_work_under_tcg_so_a_kvm_failure_is_evidence() {
    let Some((qemu, busybox, k)) = real_setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    // The boot sector needs no kernel: under TCG it always prints.
    let image = dir.path().join("sector.img");
    std::fs::write(&image, boot_sector(PROBE_MARKER, AfterMarker::Halt)).unwrap();
    let sector =
        probe(&qemu, Accel::Tcg, ProbeGuest::BootSector(&image), Duration::from_secs(20), &cancel).await.unwrap();
    assert!(sector.booted(), "{sector:?}");
    // The test kernel's probe init under TCG.
    let s = spec(&qemu, &k.bzimage, &busybox, dir.path());
    let kernel = probe_kernel(&s, &busybox, Accel::Tcg, &cancel).await.unwrap();
    assert!(kernel.booted(), "{kernel:?}");
    // The damaged kernel does not get there, under TCG either.
    let broken = broken_copy(&k.bzimage, dir.path());
    let s = ProbeSpec { tcg_timeout: Duration::from_secs(10), ..spec(&qemu, &broken, &busybox, dir.path()) };
    let none = probe_kernel(&s, &busybox, Accel::Tcg, &cancel).await.unwrap();
    assert!(!none.booted(), "{none:?}");
}

/// Both directions with the kernel probes for real, the host probe's
/// answer given as "KVM runs guests" (on this nested host it does not, so
/// `resolve` would stop at the host probe): a kernel that cannot boot at
/// all is not remembered; a good kernel is, whichever way KVM goes here.
#[tokio::test]
async fn a_kernel_that_cannot_boot_is_never_remembered_and_a_good_one_is() {
    let Some((qemu, busybox, k)) = real_setup().await else { return };
    if KvmDevice::check(Path::new("/dev/kvm")) != KvmDevice::Usable {
        return kgym_testkit::skip_or_fail("/dev/kvm cannot be opened");
    }
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let evidence = |kernel: &Path| {
        let s = spec(&qemu, kernel, &busybox, dir.path());
        let (busybox, cancel) = (busybox.clone(), cancel.clone());
        async move {
            let cpio = s.work_dir.join("probe.cpio");
            let _ = std::fs::remove_file(&cpio);
            let kvm = probe_kernel(&s, &busybox, Accel::Kvm, &cancel).await.unwrap();
            let tcg = probe_kernel(&s, &busybox, Accel::Tcg, &cancel).await.unwrap();
            Evidence { host: Some(booted()), kernel_kvm: Some(kvm), kernel_tcg: Some(tcg) }
        }
    };
    let broken = broken_copy(&k.bzimage, dir.path());
    let e = evidence(&broken).await;
    let (d, remember) = judge(&e).unwrap();
    assert_eq!((d.accel, remember), (Accel::Tcg, Remember::No), "{e:?}: {}", d.reason);
    let e = evidence(&k.bzimage).await;
    let (d, remember) = judge(&e).unwrap();
    assert_eq!(remember, Remember::Yes, "{e:?}: {}", d.reason);
    eprintln!("good kernel here: {:?}: {}", d.accel, d.reason);
}

/// The whole decision on this host, twice with fresh caches: with the
/// damaged kernel and with the good one. The damaged kernel must not make
/// the remembered answer differ from the good kernel's.
#[tokio::test]
async fn resolve_on_this_host_remembers_only_what_the_host_explains() {
    let Some((qemu, busybox, k)) = real_setup().await else { return };
    if KvmDevice::check(Path::new("/dev/kvm")) != KvmDevice::Usable {
        return kgym_testkit::skip_or_fail("/dev/kvm cannot be opened");
    }
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let broken = broken_copy(&k.bzimage, dir.path());
    let mut remembered = Vec::new();
    for (name, kernel) in [("broken", &broken), ("good", &k.bzimage)] {
        let cache = dir.path().join(format!("{name}.json"));
        let d =
            resolve(AccelMode::Auto, &spec(&qemu, kernel, &busybox, dir.path()), Some(&cache), &cancel).await.unwrap();
        eprintln!("{name}: {:?}: {}", d.accel, d.reason);
        remembered.push(read_disk(&cache, &cache_key(&qemu)));
        if name == "good" {
            assert_eq!(remembered[1].as_ref(), Some(&d), "a good kernel's decision is remembered");
            // The second lookup comes from this process's memory.
            let s = spec(&qemu, kernel, &busybox, dir.path());
            let again = resolve(AccelMode::Auto, &s, Some(&cache), &cancel);
            let again = tokio::time::timeout(Duration::from_secs(1), again).await.expect("no probe").unwrap();
            assert_eq!(again, d);
        }
    }
    if let Some(from_broken) = &remembered[0] {
        assert_eq!(Some(from_broken), remembered[1].as_ref(), "the broken kernel changed the remembered answer");
    }
}
