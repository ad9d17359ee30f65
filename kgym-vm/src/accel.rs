//! Choosing KVM or TCG, from evidence that separates the host from the
//! kernel.
//!
//! `/dev/kvm` existing is not enough: on some hosts (nested virtualization,
//! missing CPU features) a KVM guest hangs without printing a byte. And a
//! kernel that does not boot under KVM says nothing about the host when it
//! would not boot under TCG either. So in [`AccelMode::Auto`]:
//!
//! 1. a guest that needs no kernel (a BIOS boot sector, see
//!    [`crate::boot_sector`]) runs under KVM: if it prints nothing, KVM
//!    cannot run guests on this host → TCG, remembered;
//! 2. the run's kernel boots under KVM with a marker-printing init: if it
//!    gets there, KVM works → KVM, remembered;
//! 3. if not, the same kernel boots under TCG: if it gets there, KVM breaks
//!    Linux guests on this host → TCG, remembered; if it does not, the
//!    kernel explains the failure → TCG for this run, nothing remembered.
//!
//! Remembered decisions are cached per process and, optionally, on disk
//! (keyed by the QEMU binary and the host kernel, valid for a day). The
//! decision's reason says which evidence decided and whether it was cached.

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

use crate::boot_sector::{AfterMarker, boot_sector};
use crate::error::{Error, Result};
use crate::initramfs::CpioWriter;
use crate::process;

/// How the runner picks the accelerator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AccelMode {
    /// KVM when the host runs KVM guests (probed, see the module docs),
    /// else TCG.
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
pub(crate) enum KvmDevice {
    /// No `/dev/kvm`.
    Missing,
    /// It exists but cannot be opened read-write (permissions).
    Inaccessible(String),
    /// It can be opened.
    Usable,
}

impl KvmDevice {
    /// Looks at `path` (normally `/dev/kvm`).
    pub(crate) fn check(path: &Path) -> Self {
        match std::fs::OpenOptions::new().read(true).write(true).open(path) {
            Ok(_) => Self::Usable,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::Missing,
            Err(e) => Self::Inaccessible(e.to_string()),
        }
    }
}

/// What one probe boot showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeResult {
    /// The guest printed its marker after this long.
    Booted(Duration),
    /// No marker within the limit; `printed` console bytes before it.
    TimedOut {
        /// The limit.
        after: Duration,
        /// How much the guest printed.
        printed: usize,
    },
    /// QEMU exited without the marker (its first complaint, or what the
    /// guest printed last).
    Exited(String),
}

impl ProbeResult {
    fn booted(&self) -> bool {
        matches!(self, Self::Booted(_))
    }

    fn describe(&self) -> String {
        match self {
            Self::Booted(t) => format!("reached its marker in {:.1}s", t.as_secs_f64()),
            Self::TimedOut { after, printed: 0 } => format!("printed nothing in {}s", after.as_secs()),
            Self::TimedOut { after, printed } => {
                format!("printed {printed} bytes but no marker in {}s", after.as_secs())
            }
            Self::Exited(why) => format!("ended without its marker: {why}"),
        }
    }
}

/// The accelerator chosen and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccelDecision {
    /// The accelerator.
    pub(crate) accel: Accel,
    /// Why, for logs and results.
    pub(crate) reason: String,
}

impl AccelDecision {
    fn new(accel: Accel, reason: impl Into<String>) -> Self {
        Self { accel, reason: reason.into() }
    }
}

/// The probes of [`AccelMode::Auto`], as far as they went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Evidence {
    /// The boot sector under KVM.
    pub(crate) host: Option<ProbeResult>,
    /// The run's kernel under KVM.
    pub(crate) kernel_kvm: Option<ProbeResult>,
    /// The run's kernel under TCG.
    pub(crate) kernel_tcg: Option<ProbeResult>,
}

/// Whether a decision may be remembered for other runs (other kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remember {
    /// It says something about the host.
    Yes,
    /// It says something about this kernel only.
    No,
}

/// What the evidence decides; [`None`] while it needs the next probe.
pub(crate) fn judge(e: &Evidence) -> Option<(AccelDecision, Remember)> {
    let host = e.host.as_ref()?;
    if !host.booted() {
        let why = format!("KVM cannot run a guest on this host: a boot sector under KVM {}", host.describe());
        return Some((AccelDecision::new(Accel::Tcg, why), Remember::Yes));
    }
    let kvm = e.kernel_kvm.as_ref()?;
    if kvm.booted() {
        let why = format!("a boot sector and the run's kernel ran under KVM (the kernel {})", kvm.describe());
        return Some((AccelDecision::new(Accel::Kvm, why), Remember::Yes));
    }
    let tcg = e.kernel_tcg.as_ref()?;
    Some(if tcg.booted() {
        let why = format!(
            "KVM breaks Linux guests on this host: the run's kernel {} under TCG but under KVM {}",
            tcg.describe(),
            kvm.describe()
        );
        (AccelDecision::new(Accel::Tcg, why), Remember::Yes)
    } else {
        let why = format!(
            "the run's kernel booted neither under KVM ({}) nor under TCG ({}): that is the kernel's doing, \
             so nothing is remembered about this host",
            kvm.describe(),
            tcg.describe()
        );
        (AccelDecision::new(Accel::Tcg, why), Remember::No)
    })
}

/// What the probes boot.
#[derive(Debug, Clone)]
pub(crate) struct ProbeSpec {
    /// `qemu-system-*`.
    pub(crate) qemu: PathBuf,
    /// The run's kernel.
    pub(crate) kernel: PathBuf,
    /// A static busybox for the kernel probe's init; without one only the
    /// host probe runs.
    pub(crate) busybox: Option<PathBuf>,
    /// How long a guest gets under KVM (a working KVM boots these in well
    /// under a second).
    pub(crate) kvm_timeout: Duration,
    /// How long the kernel gets under TCG.
    pub(crate) tcg_timeout: Duration,
    /// Where the probes write their files.
    pub(crate) work_dir: PathBuf,
}

const PROBE_MARKER: &str = "KGYM-ACCEL-PROBE-OK";

/// What a probe guest boots from.
enum ProbeGuest<'a> {
    /// The boot sector, from a floppy image.
    BootSector(&'a Path),
    /// A kernel and an initramfs whose init prints the marker.
    Kernel { kernel: &'a Path, initrd: &'a Path },
}

/// Boots `guest` under `accel` until it prints [`PROBE_MARKER`], QEMU
/// exits, or `timeout` passes.
async fn probe(
    qemu: &Path,
    accel: Accel,
    guest: ProbeGuest<'_>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<ProbeResult> {
    let mut cmd = process::command(qemu);
    match accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host,migratable=off"]),
        Accel::Tcg | Accel::Cloud => cmd.args(["-accel", "tcg"]),
    };
    cmd.args(["-m", "256", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none"]).args([
        "-serial",
        "stdio",
        "-no-reboot",
    ]);
    match guest {
        ProbeGuest::BootSector(image) => {
            cmd.arg("-drive").arg(format!("file={},format=raw,if=floppy,readonly=on", image.display()));
        }
        ProbeGuest::Kernel { kernel, initrd } => {
            cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
            cmd.args(["-append", "console=ttyS0 earlyprintk=serial panic=-1"]);
        }
    }
    let program = qemu.display().to_string();
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
                    if contains(&seen, PROBE_MARKER) {
                        break ProbeResult::Booted(started.elapsed());
                    }
                    let out = child.wait_with_output().await.map_err(|source| Error::Spawn { program: program.clone(), source })?;
                    // One line: QEMU's first complaint is the cause; else
                    // the guest's last words.
                    let stderr = process::output_tail(&out, 5);
                    let console = String::from_utf8_lossy(&seen).into_owned();
                    let why = first_line(&stderr)
                        .or_else(|| console.lines().rev().map(str::trim).find(|l| !l.is_empty()))
                        .unwrap_or("no output");
                    break ProbeResult::Exited(why.to_owned());
                }
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if contains(&seen, PROBE_MARKER) {
                        break ProbeResult::Booted(started.elapsed());
                    }
                }
            },
            () = tokio::time::sleep_until((started + timeout).into()) => {
                break ProbeResult::TimedOut { after: timeout, printed: seen.len() };
            }
            () = cancel.cancelled() => {
                guard.kill();
                return Err(Error::Cancelled);
            }
        }
    };
    guard.kill();
    Ok(result)
}

fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Can KVM run a guest on this host at all: the boot sector under KVM.
pub(crate) async fn probe_host(
    qemu: &Path,
    dir: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<ProbeResult> {
    let image = dir.join("probe-sector.img");
    std::fs::write(&image, boot_sector(PROBE_MARKER, AfterMarker::Halt)).map_err(Error::io(&image))?;
    probe(qemu, Accel::Kvm, ProbeGuest::BootSector(&image), timeout, cancel).await
}

/// Does the run's kernel reach userspace under `accel`.
pub(crate) async fn probe_kernel(
    spec: &ProbeSpec,
    busybox: &Path,
    accel: Accel,
    cancel: &CancellationToken,
) -> Result<ProbeResult> {
    let initrd = spec.work_dir.join("probe.cpio");
    if !initrd.is_file() {
        let busybox_bytes = std::fs::read(busybox).map_err(Error::io(busybox))?;
        let mut w = CpioWriter::new();
        w.dir("/bin", 0o755).dir("/dev", 0o755).dir("/proc", 0o755);
        w.char_device("/dev/console", 0o600, 5, 1);
        w.file("/bin/busybox", 0o755, &busybox_bytes);
        let init = format!("#!/bin/busybox sh\necho {PROBE_MARKER}\n/bin/busybox poweroff -f\n");
        w.file("/init", 0o755, init.as_bytes());
        std::fs::write(&initrd, w.finish()).map_err(Error::io(&initrd))?;
    }
    let timeout = if accel == Accel::Kvm { spec.kvm_timeout } else { spec.tcg_timeout };
    let guest = ProbeGuest::Kernel { kernel: &spec.kernel, initrd: &initrd };
    probe(&spec.qemu, accel, guest, timeout, cancel).await
}

/// Runs the probes the evidence still needs, in order, until [`judge`]
/// decides; without a busybox the kernel probes cannot run, and then a
/// working KVM gives TCG for this run only.
pub(crate) async fn gather(spec: &ProbeSpec, cancel: &CancellationToken) -> Result<(AccelDecision, Remember)> {
    let dir = tempfile::Builder::new()
        .prefix("accel-probe-")
        .tempdir_in(&spec.work_dir)
        .map_err(Error::io(&spec.work_dir))?;
    let spec = ProbeSpec { work_dir: dir.path().to_owned(), ..spec.clone() };
    let mut e = Evidence {
        host: Some(probe_host(&spec.qemu, dir.path(), spec.kvm_timeout, cancel).await?),
        ..Default::default()
    };
    if let Some(done) = judge(&e) {
        return Ok(done);
    }
    let Some(busybox) = spec.busybox.clone() else {
        let why = "KVM runs a boot sector here, but without a static busybox no Linux guest could be probed: \
                   TCG for this run, nothing remembered";
        return Ok((AccelDecision::new(Accel::Tcg, why), Remember::No));
    };
    e.kernel_kvm = Some(probe_kernel(&spec, &busybox, Accel::Kvm, cancel).await?);
    if let Some(done) = judge(&e) {
        return Ok(done);
    }
    e.kernel_tcg = Some(probe_kernel(&spec, &busybox, Accel::Tcg, cancel).await?);
    Ok(judge(&e).unwrap_or_else(|| unreachable!("all evidence is in")))
}

/// Which remembered decision: the host key and the disk cache it goes with.
type CacheKey = (String, Option<PathBuf>);

/// Decisions remembered by this process.
static PROCESS_CACHE: LazyLock<tokio::sync::Mutex<HashMap<CacheKey, AccelDecision>>> = LazyLock::new(Default::default);

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

/// Picks the accelerator for a run: the mode when it is not `Auto`, else a
/// remembered decision (this process, then `disk_cache`), else the probes.
pub(crate) async fn resolve(
    mode: AccelMode,
    spec: &ProbeSpec,
    disk_cache: Option<&Path>,
    cancel: &CancellationToken,
) -> Result<AccelDecision> {
    match mode {
        AccelMode::Tcg => return Ok(AccelDecision::new(Accel::Tcg, "TCG requested")),
        AccelMode::Kvm => return Ok(AccelDecision::new(Accel::Kvm, "KVM requested")),
        AccelMode::Auto => {}
    }
    match KvmDevice::check(Path::new("/dev/kvm")) {
        KvmDevice::Usable => {}
        KvmDevice::Missing => return Ok(AccelDecision::new(Accel::Tcg, "/dev/kvm does not exist")),
        KvmDevice::Inaccessible(e) => {
            return Ok(AccelDecision::new(Accel::Tcg, format!("/dev/kvm cannot be opened: {e}")));
        }
    }
    let key = (cache_key(&spec.qemu), disk_cache.map(Path::to_owned));
    // Held across the probes: concurrent runs wait for one probe.
    let mut cache = PROCESS_CACHE.lock().await;
    if let Some(d) = cache.get(&key) {
        return Ok(d.clone());
    }
    if let Some(d) = disk_cache.and_then(|p| read_disk(p, &key.0)) {
        tracing::debug!(reason = %d.reason, "accelerator from the disk cache");
        let d = AccelDecision::new(d.accel, format!("{} (remembered)", d.reason.trim_end_matches(" (remembered)")));
        cache.insert(key, d.clone());
        return Ok(d);
    }
    let span = tracing::info_span!("accel_probe", qemu = %spec.qemu.display());
    let (decision, remember) = gather(spec, cancel).instrument(span).await?;
    tracing::debug!(accel = ?decision.accel, reason = %decision.reason, ?remember, "accelerator chosen");
    if remember == Remember::Yes {
        if let Some(p) = disk_cache {
            write_disk(p, &key.0, &decision);
        }
        cache.insert(key, decision.clone());
    }
    Ok(decision)
}

#[cfg(test)]
mod tests;
