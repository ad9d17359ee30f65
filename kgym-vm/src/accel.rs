//! Choosing KVM or TCG.
//!
//! `/dev/kvm` existing is not enough: on some hosts (nested virtualization,
//! missing CPU features) a KVM guest hangs without printing a byte. So in
//! [`AccelMode::Auto`] a short real boot decides: the run's kernel is booted
//! under `-accel kvm` with a two-line init that prints a marker; if the marker
//! does not appear within the probe timeout, TCG is used. The answer is
//! cached per process and, optionally, on disk (keyed by the QEMU binary and
//! the host kernel, valid for a day), so the probe costs once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kgym_core::stage::reproduce::Accel;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::initramfs::CpioWriter;
use crate::process;

/// How the runner picks the accelerator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelMode {
    /// KVM when a probe boot works, else TCG.
    #[default]
    Auto,
    /// Always KVM (no probe).
    Kvm,
    /// Always TCG.
    Tcg,
}

impl FromStr for AccelMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            _ => Err(Error::InvalidRequest { reason: format!("accelerator {s:?}: expected auto, kvm or tcg") }),
        }
    }
}

/// The state of `/dev/kvm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmDevice {
    /// No `/dev/kvm`.
    Missing,
    /// It exists but cannot be opened read-write (permissions).
    Inaccessible(String),
    /// It can be opened.
    Usable,
}

impl KvmDevice {
    /// Looks at `path` (normally `/dev/kvm`).
    pub fn check(path: &Path) -> Self {
        match std::fs::OpenOptions::new().read(true).write(true).open(path) {
            Ok(_) => Self::Usable,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::Missing,
            Err(e) => Self::Inaccessible(e.to_string()),
        }
    }
}

/// What a KVM probe boot showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The guest reached userspace after this long.
    Booted(Duration),
    /// No marker within the timeout (the guest hangs under KVM).
    TimedOut(Duration),
    /// QEMU refused to start with KVM (its stderr).
    QemuFailed(String),
}

/// The accelerator chosen and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelDecision {
    /// The accelerator.
    pub accel: Accel,
    /// Why, for logs and results.
    pub reason: String,
}

/// The decision logic, apart from the probing: `probe` is only consulted in
/// [`AccelMode::Auto`] with a usable device (and `None` means "not probed").
pub fn decide(mode: AccelMode, device: &KvmDevice, probe: Option<&ProbeResult>) -> AccelDecision {
    let d = |accel, reason: String| AccelDecision { accel, reason };
    match (mode, device, probe) {
        (AccelMode::Tcg, ..) => d(Accel::Tcg, "TCG requested".into()),
        (AccelMode::Kvm, ..) => d(Accel::Kvm, "KVM requested".into()),
        (AccelMode::Auto, KvmDevice::Missing, _) => d(Accel::Tcg, "/dev/kvm does not exist".into()),
        (AccelMode::Auto, KvmDevice::Inaccessible(e), _) => d(Accel::Tcg, format!("/dev/kvm cannot be opened: {e}")),
        (AccelMode::Auto, KvmDevice::Usable, None) => d(Accel::Tcg, "KVM was not probed".into()),
        (AccelMode::Auto, KvmDevice::Usable, Some(ProbeResult::Booted(t))) => {
            d(Accel::Kvm, format!("a KVM probe guest reached userspace in {:.1}s", t.as_secs_f64()))
        }
        (AccelMode::Auto, KvmDevice::Usable, Some(ProbeResult::TimedOut(t))) => {
            d(Accel::Tcg, format!("a KVM probe guest printed nothing within {}s (KVM hangs here)", t.as_secs()))
        }
        (AccelMode::Auto, KvmDevice::Usable, Some(ProbeResult::QemuFailed(e))) => {
            d(Accel::Tcg, format!("QEMU failed to start with KVM: {e}"))
        }
    }
}

/// What a probe boots.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// `qemu-system-*`.
    pub qemu: PathBuf,
    /// A bootable kernel (the run's own).
    pub kernel: PathBuf,
    /// A static busybox for the probe's init.
    pub busybox: PathBuf,
    /// How long the guest gets to reach userspace.
    pub timeout: Duration,
    /// Where the probe writes its initramfs.
    pub work_dir: PathBuf,
}

const PROBE_MARKER: &str = "KGYM-KVM-PROBE-OK";

/// Boots `spec.kernel` under KVM with a marker-printing init.
pub async fn probe_kvm(spec: &ProbeSpec, cancel: &CancellationToken) -> Result<ProbeResult> {
    let busybox = std::fs::read(&spec.busybox).map_err(Error::io(&spec.busybox))?;
    let mut w = CpioWriter::new();
    w.dir("/bin", 0o755).dir("/dev", 0o755).dir("/proc", 0o755);
    w.char_device("/dev/console", 0o600, 5, 1);
    w.file("/bin/busybox", 0o755, &busybox);
    let init = format!("#!/bin/busybox sh\necho {PROBE_MARKER}\n/bin/busybox poweroff -f\n");
    w.file("/init", 0o755, init.as_bytes());
    let dir =
        tempfile::Builder::new().prefix("kvm-probe-").tempdir_in(&spec.work_dir).map_err(Error::io(&spec.work_dir))?;
    let initrd = dir.path().join("probe.cpio");
    std::fs::write(&initrd, w.finish()).map_err(Error::io(&initrd))?;

    let mut cmd = process::command(&spec.qemu);
    cmd.args(["-accel", "kvm", "-cpu", "host,migratable=off", "-m", "256", "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(&spec.kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    let program = spec.qemu.display().to_string();
    let (mut child, mut guard) = process::spawn_piped(&mut cmd, &program)?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Spawn { program: program.clone(), source: std::io::Error::other("no stdout pipe") })?;
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let result = loop {
        tokio::select! {
            n = stdout.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    // QEMU exited: either the probe powered off (marker
                    // seen) or QEMU refused KVM.
                    if contains(&seen, PROBE_MARKER) {
                        break ProbeResult::Booted(started.elapsed());
                    }
                    let out = child.wait_with_output().await.map_err(|source| Error::Spawn { program: program.clone(), source })?;
                    // One line: QEMU's first complaint is the cause.
                    let tail = process::output_tail(&out, 5);
                    let first = tail.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no output");
                    break ProbeResult::QemuFailed(first.to_owned());
                }
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if contains(&seen, PROBE_MARKER) {
                        break ProbeResult::Booted(started.elapsed());
                    }
                }
            },
            () = tokio::time::sleep_until((started + spec.timeout).into()) => break ProbeResult::TimedOut(spec.timeout),
            () = cancel.cancelled() => {
                guard.kill();
                return Err(Error::Cancelled);
            }
        }
    };
    guard.kill();
    Ok(result)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

static PROCESS_CACHE: LazyLock<tokio::sync::Mutex<HashMap<String, AccelDecision>>> = LazyLock::new(Default::default);

/// How long a decision on disk stays valid.
const DISK_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default, Serialize, Deserialize)]
struct DiskCache {
    entries: HashMap<String, DiskEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DiskEntry {
    decision: AccelDecision,
    at_unix: u64,
}

/// The cache key: the QEMU binary (path, size, mtime) and the host kernel.
fn cache_key(qemu: &Path) -> String {
    let meta = std::fs::metadata(qemu).ok();
    let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
    let mtime =
        meta.and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{}|{size}|{mtime}|{}", qemu.display(), host.trim())
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn read_disk(path: &Path, key: &str) -> Option<AccelDecision> {
    let text = std::fs::read_to_string(path).ok()?;
    let cache: DiskCache = serde_json::from_str(&text).ok()?;
    let e = cache.entries.get(key)?;
    (now_unix().saturating_sub(e.at_unix) < DISK_TTL.as_secs()).then(|| e.decision.clone())
}

fn write_disk(path: &Path, key: &str, decision: &AccelDecision) {
    let mut cache: DiskCache =
        std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    cache.entries.insert(key.to_owned(), DiskEntry { decision: decision.clone(), at_unix: now_unix() });
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // Write-then-rename so a concurrent reader never sees half a file.
    if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) {
        use std::io::Write;
        let ok = serde_json::to_vec_pretty(&cache).ok().is_some_and(|b| tmp.write_all(&b).is_ok());
        if ok {
            let _ = tmp.persist(path);
        }
    }
}

/// Picks the accelerator for `spec.qemu`: from the process cache, the disk
/// cache (`disk_cache`), or a probe boot.
pub async fn resolve(
    mode: AccelMode,
    spec: &ProbeSpec,
    disk_cache: Option<&Path>,
    cancel: &CancellationToken,
) -> Result<AccelDecision> {
    if mode != AccelMode::Auto {
        return Ok(decide(mode, &KvmDevice::Usable, None));
    }
    let device = KvmDevice::check(Path::new("/dev/kvm"));
    if device != KvmDevice::Usable {
        return Ok(decide(mode, &device, None));
    }
    let key = cache_key(&spec.qemu);
    // Held across the probe: concurrent runs wait for one probe.
    let mut cache = PROCESS_CACHE.lock().await;
    if let Some(d) = cache.get(&key) {
        return Ok(d.clone());
    }
    if let Some(d) = disk_cache.and_then(|p| read_disk(p, &key)) {
        tracing::debug!(reason = %d.reason, "accelerator from the disk cache");
        cache.insert(key, d.clone());
        return Ok(d);
    }
    let span = tracing::info_span!("kvm_probe", qemu = %spec.qemu.display());
    let probe = probe_kvm(spec, cancel).instrument(span).await?;
    let decision = decide(mode, &device, Some(&probe));
    tracing::debug!(accel = ?decision.accel, reason = %decision.reason, "accelerator chosen");
    if let Some(p) = disk_cache {
        write_disk(p, &key, &decision);
    }
    cache.insert(key, decision.clone());
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_modes_skip_the_probe() {
        assert_eq!(decide(AccelMode::Tcg, &KvmDevice::Usable, None).accel, Accel::Tcg);
        assert_eq!(decide(AccelMode::Kvm, &KvmDevice::Missing, None).accel, Accel::Kvm);
    }

    #[test]
    fn auto_needs_a_device_and_a_successful_probe() {
        assert_eq!(decide(AccelMode::Auto, &KvmDevice::Missing, None).accel, Accel::Tcg);
        let perm = decide(AccelMode::Auto, &KvmDevice::Inaccessible("permission denied".into()), None);
        assert_eq!(perm.accel, Accel::Tcg);
        assert!(perm.reason.contains("permission denied"));
        let ok = ProbeResult::Booted(Duration::from_millis(800));
        assert_eq!(decide(AccelMode::Auto, &KvmDevice::Usable, Some(&ok)).accel, Accel::Kvm);
        let hang = ProbeResult::TimedOut(Duration::from_secs(10));
        let d = decide(AccelMode::Auto, &KvmDevice::Usable, Some(&hang));
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("within 10s"), "{}", d.reason);
        let failed = ProbeResult::QemuFailed("unsupported MSR".into());
        assert_eq!(decide(AccelMode::Auto, &KvmDevice::Usable, Some(&failed)).accel, Accel::Tcg);
        assert_eq!(decide(AccelMode::Auto, &KvmDevice::Usable, None).accel, Accel::Tcg);
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
        let d = AccelDecision { accel: Accel::Tcg, reason: "probe timed out".into() };
        write_disk(&path, "k", &d);
        assert_eq!(read_disk(&path, "k"), Some(d.clone()));
        assert_eq!(read_disk(&path, "other"), None);
        let mut cache: DiskCache = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cache.entries.get_mut("k").unwrap().at_unix -= DISK_TTL.as_secs() + 1;
        std::fs::write(&path, serde_json::to_vec(&cache).unwrap()).unwrap();
        assert_eq!(read_disk(&path, "k"), None);
    }
}
