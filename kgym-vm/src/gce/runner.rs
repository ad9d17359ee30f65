//! [`GceRunner`]: a [`VmRunner`] on Compute Engine instances.
//!
//! A run: the reproducer prepared (compiled, or syzkaller's binaries) before
//! anything costs money, an image from the disk tarball already in the
//! bucket, N instances booted from it; per instance, its serial port read
//! by offsets and fed to the same console watch as the QEMU runner's
//! (crash parser, no-output and boot watchdogs, report wait) while the
//! reproducer is copied in and run over SSH the way the QEMU disk-image
//! path does it (the instance's internal IP, as syzkaller's `vm/gce`), until
//! a crash (per the stop policy), the budget's end or cancellation; then
//! the verdict, symbolized with the request's vmlinux. The instances and
//! the image are deleted afterwards whatever happened (see the `cleanup`
//! module).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use kgym_core::stage::reproduce::{Accel, StopPolicy};
use kgym_core::{ArtifactKey, ArtifactStore};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cleanup::{CleanupGuard, Created};
use super::client::{ComputeClient, InstanceSpec, OperationScope};
use super::serial::SerialOffsets;
use crate::error::{Error, Result};
use crate::outcome::{BootEnd, BootRecord, SpecialCrash};
use crate::qemu::Timeouts;
use crate::qemu::boot::Event;
use crate::qemu::watch::{Ending, Liveness, Tick, Watch};
use crate::repro::syz::SyzkallerProvider;
use crate::repro::{self, ReproTools};
use crate::runner::{RunContext, RunOutput, RunRequest, UserspaceSpec, VmRunner};
use crate::ssh::SshTarget;

/// The longest name prefix: with `-{time}-{pid}-{counter}-image` (at most
/// 39 more) a name stays within GCE's 63.
const MAX_PREFIX: usize = 24;

/// The machine type used when none is set.
pub const DEFAULT_MACHINE_TYPE: &str = "e2-standard-2";

/// Runs reproducers' kernels on Compute Engine instances.
///
/// The run's disk is [`UserspaceSpec::Image`] whose `path` names a gzip'd
/// tar holding `disk.raw` already in Cloud Storage: `gs://bucket/object.tar.gz`,
/// or an object key in the runner's [bucket](GceRunner::with_bucket)
/// ([`pack_disk`](super::pack_disk) makes one). The kernel must be inside
/// that disk: GCE boots the disk, not [`RunRequest::kernel`]. The disk
/// image's `ssh_key` and `ssh_user` log in to run the reproducer (on port
/// [22](GceRunner::with_ssh_port) of the instance's internal IP: the
/// runner works from inside the instances' VPC, as kGym's reproducer VMs).
///
/// The machine type is the request's `gce:<type>` ([`RunRequest::machine`]),
/// else the runner's [default](GceRunner::with_machine_type).
#[derive(Debug, Clone)]
pub struct GceRunner {
    client: ComputeClient,
    bucket: Option<String>,
    machine_type: String,
    serial_poll: Duration,
    name_prefix: String,
    cleanup_timeout: Duration,
    timeouts: Timeouts,
    ssh_port: u16,
    reproducer_in_image: bool,
    tools: ReproTools,
    work_dir: PathBuf,
    uploads: Option<ArtifactStore>,
}

/// Where `images.insert` reads a run's disk from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DiskSource {
    /// A tarball already in Cloud Storage: its URL.
    InBucket(String),
    /// A local raw disk to pack with the request's kernel and upload.
    Local(PathBuf),
}

impl GceRunner {
    /// A runner over `client`: machine type [`DEFAULT_MACHINE_TYPE`],
    /// serial port read every 5 s, resources named `kgym-...`, syzkaller's
    /// watchdogs ([`Timeouts::default`]), SSH on port 22, C reproducers
    /// compiled with `gcc`, syzkaller built into the user's cache.
    pub fn new(client: ComputeClient) -> Self {
        let work_dir = std::env::temp_dir();
        let cache = dirs::cache_dir().map_or_else(|| work_dir.join("kgym-syzkaller"), |d| d.join("kgym/syzkaller"));
        Self {
            client,
            bucket: None,
            machine_type: DEFAULT_MACHINE_TYPE.into(),
            serial_poll: Duration::from_secs(5),
            name_prefix: "kgym".into(),
            cleanup_timeout: Duration::from_secs(300),
            timeouts: Timeouts::default(),
            ssh_port: 22,
            reproducer_in_image: false,
            tools: ReproTools {
                cc: crate::process::find_program("gcc").unwrap_or_else(|| "gcc".into()),
                syzkaller: SyzkallerProvider::new(crate::SYZKALLER_REPO, cache),
            },
            work_dir,
            uploads: None,
        }
    }

    /// The bucket of disk tarballs named by object key (builder style).
    pub fn with_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The instances' machine type when the request's machine is no
    /// `gce:<type>`, e.g. `e2-standard-2` (builder style).
    pub fn with_machine_type(mut self, machine_type: impl Into<String>) -> Self {
        self.machine_type = machine_type.into();
        self
    }

    /// How often each instance's serial port is read (builder style).
    pub fn with_serial_poll(mut self, every: Duration) -> Self {
        self.serial_poll = every;
        self
    }

    /// The start of every image and instance name: lowercase letters,
    /// digits and `-`, at most 24 characters (builder style).
    pub fn with_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// The watchdogs, as the QEMU runner's (builder style). Instances are
    /// real machines: `no_output` is not scaled as under TCG.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// How long a started crash report may take to complete before it is
    /// taken as it is ([`Timeouts::report`], 15 s by default; builder style).
    pub fn with_report_wait(mut self, wait: Duration) -> Self {
        self.timeouts.report = wait;
        self
    }

    /// The instances' SSH port (builder style; 22 by default).
    pub fn with_ssh_port(mut self, port: u16) -> Self {
        self.ssh_port = port;
        self
    }

    /// The disk runs the reproducer itself at boot: no SSH, the first
    /// serial output counts as userspace being up (builder style).
    pub fn with_reproducer_in_image(mut self) -> Self {
        self.reproducer_in_image = true;
        self
    }

    /// Where syzkaller's binaries come from (builder style).
    pub fn with_syzkaller(mut self, provider: SyzkallerProvider) -> Self {
        self.tools.syzkaller = provider;
        self
    }

    /// The C compiler of C reproducers (builder style; `gcc`).
    pub fn with_cc(mut self, cc: impl Into<PathBuf>) -> Self {
        self.tools.cc = cc.into();
        self
    }

    /// Where local disks are uploaded: a store writing to the runner's
    /// [bucket](GceRunner::with_bucket) (`ArtifactStore::gcs(bucket)`;
    /// builder style). With it a run's [`UserspaceSpec::Image`] may be a
    /// local raw disk (a kGym-style `bullseye.raw`): the run packs it with
    /// [`RunRequest::kernel`] in its `/boot` ([`pack_disk`](super::pack_disk)),
    /// uploads it as `gce-disks/{run}.tar.gz` and deletes it afterwards.
    pub fn with_disk_uploads(mut self, store: ArtifactStore) -> Self {
        self.uploads = Some(store);
        self
    }

    /// Where a run's temporary files go (builder style; the system's
    /// temporary directory).
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = dir.into();
        self
    }

    /// How long deleting the run's resources may take (builder style).
    pub fn with_cleanup_timeout(mut self, timeout: Duration) -> Self {
        self.cleanup_timeout = timeout;
        self
    }

    /// The Cloud Storage URL `images.insert` reads the disk from, for `req`.
    pub fn disk_source_url(&self, req: &RunRequest) -> Result<String> {
        let bad = |reason: String| Error::InvalidRequest { reason };
        let UserspaceSpec::Image(img) = &req.userspace else {
            return Err(bad("a GCE run boots a disk image: set UserspaceSpec::Image to its .tar.gz in Cloud Storage \
                 (or to a local raw disk, with the runner's disk uploads set)"
                .into()));
        };
        let path = img.path.to_str().ok_or_else(|| bad(format!("{} is not UTF-8", img.path.display())))?;
        let (bucket, object) = match path.strip_prefix("gs://") {
            Some(rest) => rest.split_once('/').ok_or_else(|| bad(format!("{path}: no object after the bucket")))?,
            None => {
                let bucket = self.bucket.as_deref().ok_or_else(|| {
                    bad(format!("{path} is an object key but the GceRunner has no bucket (with_bucket)"))
                })?;
                (bucket, path.trim_start_matches('/'))
            }
        };
        if bucket.is_empty() || !object.ends_with(".tar.gz") {
            return Err(bad(format!(
                "{path}: GCE images come from a gzip'd tar holding disk.raw (bucket/object.tar.gz)"
            )));
        }
        Ok(format!("https://storage.googleapis.com/{bucket}/{object}"))
    }

    fn validate(&self, req: &RunRequest) -> Result<DiskSource> {
        let bad = |reason: String| Err(Error::InvalidRequest { reason });
        if req.instances == 0 || req.instances > 64 {
            return bad(format!("instances must be 1..=64, got {}", req.instances));
        }
        if req.budget.is_zero() {
            return bad("the budget must be positive".into());
        }
        let p = &self.name_prefix;
        let ok = p.len() <= MAX_PREFIX
            && p.starts_with(|c: char| c.is_ascii_lowercase())
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return bad(format!("name prefix {p:?}: GCE names need [a-z][-a-z0-9]*, at most {MAX_PREFIX} here"));
        }
        self.disk_source(req)
    }

    /// A local raw disk to pack and upload (with uploads set, a path that
    /// is neither `gs://` nor a `.tar.gz` key), else the tarball's URL.
    fn disk_source(&self, req: &RunRequest) -> Result<DiskSource> {
        if let (Some(_), UserspaceSpec::Image(img)) = (&self.uploads, &req.userspace) {
            let path = &img.path;
            let text = path.to_string_lossy();
            if !text.starts_with("gs://") && !text.ends_with(".tar.gz") {
                let bad = |reason: String| Error::InvalidRequest { reason };
                if self.bucket.is_none() {
                    return Err(bad("disk uploads need the runner's bucket (with_bucket)".into()));
                }
                if !path.is_file() {
                    return Err(bad(format!("{}: no such local disk image to pack for GCE", path.display())));
                }
                if !req.kernel.is_file() {
                    return Err(bad(format!("{}: no such kernel to put in the disk", req.kernel.display())));
                }
                return Ok(DiskSource::Local(path.clone()));
            }
        }
        self.disk_source_url(req).map(DiskSource::InBucket)
    }
}

/// How the reproducer reaches an instance.
#[derive(Debug, Clone)]
struct Delivery {
    /// The login; its host is the instance's address once it runs.
    ssh: SshTarget,
    files: Vec<(String, PathBuf)>,
    command: String,
}

/// What every instance of a run shares.
struct InstanceSetup {
    delivery: Option<Delivery>,
    liveness: Liveness,
}

#[async_trait]
impl VmRunner for GceRunner {
    async fn run(&self, req: RunRequest, ctx: &RunContext) -> Result<RunOutput> {
        let source = self.validate(&req)?;
        let started = Instant::now();
        std::fs::create_dir_all(&self.work_dir).map_err(Error::io(&self.work_dir))?;
        let work = tempfile::Builder::new()
            .prefix("kgym-gce")
            .tempdir_in(&self.work_dir)
            .map_err(Error::io(&self.work_dir))?;
        // Before anything costs money: a reproducer that does not compile
        // fails here.
        let setup = self.prepare(&req, work.path(), ctx).await?;
        let run_name = unique_name(&self.name_prefix);
        let created = Arc::new(Mutex::new(Created::default()));
        // Deletes what the run created: below on every path, or from its
        // drop if this future is dropped mid-run.
        let mut guard = CleanupGuard::new(self.client.clone(), Arc::clone(&created), self.cleanup_timeout);
        let result = tokio::select! {
            r = self.run_body(&req, &source, &run_name, &created, &setup, work.path(), started, ctx) => r,
            () = ctx.cancel.cancelled() => Err(Error::Cancelled),
        };
        let cleaned = guard.cleanup(ctx).await;
        match (result, cleaned) {
            // The verdict is kept in the log; resources that may still
            // run (and cost) are what the caller must hear about.
            (Ok(out), Err(e)) => {
                ctx.line(format!("verdict before the failed cleanup: {}", out.title.as_deref().unwrap_or("no crash")));
                Err(e)
            }
            (result, _) => result,
        }
    }
}

impl GceRunner {
    /// The reproducer's files and command (none when the image runs it).
    async fn prepare(&self, req: &RunRequest, dir: &std::path::Path, ctx: &RunContext) -> Result<InstanceSetup> {
        if self.reproducer_in_image {
            return Ok(InstanceSetup { delivery: None, liveness: Liveness::ConsoleOutput });
        }
        let UserspaceSpec::Image(img) = &req.userspace else {
            unreachable!("validate accepted only disk images");
        };
        let prepared = repro::prepare(&req.reproducer, req.arch, &self.tools, dir, &ctx.cancel).await?;
        for note in &prepared.notes {
            ctx.line(note.clone());
        }
        let ssh = SshTarget::new("", self.ssh_port, img.ssh_user.clone(), &img.ssh_key).with_private_key_copy(dir)?;
        let liveness = if prepared.prints_executions { Liveness::ExecutionLines } else { Liveness::ConsoleOutput };
        Ok(InstanceSetup {
            delivery: Some(Delivery { ssh, files: prepared.files, command: prepared.command }),
            liveness,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_body(
        &self,
        req: &RunRequest,
        source: &DiskSource,
        run_name: &str,
        created: &Mutex<Created>,
        setup: &InstanceSetup,
        work: &std::path::Path,
        started: Instant,
        ctx: &RunContext,
    ) -> Result<RunOutput> {
        let client = &self.client;
        let source = match source {
            DiskSource::InBucket(url) => url.clone(),
            DiskSource::Local(disk) => self.upload_disk(disk, &req.kernel, run_name, created, work, ctx).await?,
        };
        let source = source.as_str();
        let machine_type = req.machine.gce.map_or_else(|| self.machine_type.clone(), |t| t.to_string());
        let machine_type = machine_type.as_str();
        let image = format!("{run_name}-image");
        // Recorded before the call: a call that times out may still create it.
        lock(created).image = Some(image.clone());
        ctx.line(format!("creating image {image} from {source}"));
        let call = format!("images.insert {image}");
        let op = client.insert_image(&image, source).await?;
        client.wait(OperationScope::Global, op, &call).await?;

        let names: Vec<String> = (0..req.instances).map(|i| format!("{run_name}-{i}")).collect();
        lock(created).instances.extend(names.iter().cloned());
        ctx.line(format!("creating {} {machine_type} instance(s) in {}", names.len(), client.zone()));
        let image = image.as_str();
        futures::future::try_join_all(names.iter().map(|name| async move {
            let spec =
                InstanceSpec { name: name.clone(), machine_type: machine_type.to_owned(), image: image.to_owned() };
            let call = format!("instances.insert {name}");
            let op = client.insert_instance(&spec).await?;
            client.wait(OperationScope::Zone, op, &call).await
        }))
        .await?;

        let watch = RunWatch {
            deadline: started + req.budget,
            stop: CancellationToken::new(),
            crashed: Mutex::new(HashSet::new()),
            policy: req.policy,
            instances: req.instances,
            started,
        };
        let mut boots = futures::future::try_join_all(
            names.iter().enumerate().map(|(i, name)| self.watch_instance(i as u32, name, &watch, setup, ctx)),
        )
        .await?;
        if let Some(vmlinux) = &req.vmlinux {
            crate::qemu::run::symbolize_all(vmlinux, &mut boots, ctx).await?;
        }
        Ok(verdict(boots, machine_type, client.zone(), started, ctx))
    }

    /// Packs `disk` with `kernel` and uploads it to the bucket; its URL.
    async fn upload_disk(
        &self,
        disk: &std::path::Path,
        kernel: &std::path::Path,
        run_name: &str,
        created: &Mutex<Created>,
        work: &std::path::Path,
        ctx: &RunContext,
    ) -> Result<String> {
        let (Some(store), Some(bucket)) = (&self.uploads, &self.bucket) else {
            unreachable!("disk_source checked the store and the bucket");
        };
        let tarball = work.join("disk.tar.gz");
        ctx.line(format!("packing {} with the kernel in {}", disk.display(), super::KERNEL_PATH));
        super::pack_disk(disk, kernel, &tarball, &ctx.cancel).await?;
        let key = format!("gce-disks/{run_name}.tar.gz");
        let key = ArtifactKey::parse(&key).map_err(|e| Error::InvalidRequest { reason: e.to_string() })?;
        lock(created).upload = Some((store.clone(), key.clone()));
        ctx.line(format!("uploading the disk to gs://{bucket}/{key}"));
        store.put_file(&key, &tarball).await.map_err(|source| Error::Artifact { key: key.to_string(), source })?;
        Ok(format!("https://storage.googleapis.com/{bucket}/{key}"))
    }

    /// Watches one instance until its boot ends: its serial port read by
    /// offsets into the console watch, the reproducer delivered over SSH
    /// beside it.
    async fn watch_instance(
        &self,
        i: u32,
        name: &str,
        run: &RunWatch,
        setup: &InstanceSetup,
        ctx: &RunContext,
    ) -> Result<BootRecord> {
        let boot_start = Instant::now();
        let no_output = self.timeouts.no_output_for(Accel::Cloud);
        let mut w = Watch::new(boot_start, false, setup.liveness, self.timeouts, no_output);
        let mut serial = SerialOffsets::default();
        let (tx, mut rx) = mpsc::channel::<Event>(256);
        // The SSH side stops with this boot, whatever ends it.
        let session = ctx.cancel.child_token();
        let _stop_session = session.clone().drop_guard();
        let mut delivering = false;
        if let Some(d) = &setup.delivery {
            delivering = true;
            let deadline = boot_start + self.timeouts.boot;
            let client = self.client.clone();
            tokio::spawn(deliver(client, name.to_owned(), d.clone(), deadline, tx, session.clone()));
        } else {
            drop(tx);
        }
        let mut next_read = boot_start;
        let ending: Ending = 'watch: loop {
            if Instant::now() >= next_read {
                let out = self.client.serial_port_output(name, serial.next).await?;
                let now = Instant::now();
                next_read = now + self.serial_poll;
                if let Some(note) = serial.take(&out) {
                    ctx.line(format!("instance {i} ({name}): {note}"));
                    w.note(&note);
                }
                if !out.contents.is_empty() {
                    // Without SSH the first console output is the sign the
                    // instance runs (an approximation of "userspace is up").
                    if setup.delivery.is_none() && w.userspace_at.is_none() {
                        w.userspace(now);
                    }
                    if let Some(end) = w.console(out.contents.as_bytes(), now) {
                        break end;
                    }
                }
            }
            match w.tick(Instant::now(), run.deadline, run.stop.is_cancelled()) {
                Tick::End(end) => break *end,
                // The console has been quiet: is the instance still up? One
                // that stopped (a guest that powered off) has said all.
                Tick::CheckStatus => match self.client.get_instance(name).await {
                    Ok(inst) if matches!(inst.status.as_str(), "STOPPING" | "STOPPED" | "TERMINATED" | "SUSPENDED") => {
                        // What it printed last is still to be read.
                        let out = self.client.serial_port_output(name, serial.next).await?;
                        let now = Instant::now();
                        if let Some(end) = w.console(out.contents.as_bytes(), now) {
                            break end;
                        }
                        w.note(&format!("Compute Engine reports the instance {}", inst.status));
                        break w.closed(now);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, instance = %name, "instances.get failed"),
                },
                Tick::Continue => {}
            }
            // Watchdogs are checked at least every second.
            let wake = tokio::time::Instant::from_std(next_read.min(Instant::now() + Duration::from_secs(1)));
            tokio::select! {
                ev = rx.recv(), if delivering => {
                    let now = Instant::now();
                    match ev {
                        None => delivering = false,
                        Some(Event::SshReady) => {
                            w.userspace(now);
                            let after = now.duration_since(boot_start).as_secs_f64();
                            ctx.line(format!("instance {i} ({name}): ssh up after {after:.1}s"));
                        }
                        Some(Event::SetupFailed(reason)) => {
                            w.note(&format!("setup failed: {reason}"));
                            ctx.line(format!("instance {i} ({name}): setup failed: {reason}"));
                            break 'watch w.special(SpecialCrash::DidNotBoot, now);
                        }
                        Some(Event::Session(bytes, at)) => w.session(&bytes, at),
                        Some(Event::SessionEnded(status)) => w.session_ended(&status, now),
                        Some(_) => {}
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
                () = run.stop.cancelled(), if !run.stop.is_cancelled() => {}
            }
        };
        // As the QEMU runner: kernel crashes count for the stop policy; a
        // special verdict (no output, did not boot) ends this instance only
        // (an instance is not rebooted: it is one boot).
        match &ending.end {
            BootEnd::Crash { title } => {
                ctx.line(format!("instance {i} ({name}): crashed: {title}"));
                run.crashed(i);
            }
            BootEnd::Special { special } => ctx.line(format!("instance {i} ({name}): {}", special.title())),
            BootEnd::BudgetEnded | BootEnd::Stopped => {}
        }
        let secs = |t: Instant| t.saturating_duration_since(run.started).as_secs_f64();
        Ok(BootRecord {
            instance: i,
            run: 0,
            started: secs(boot_start),
            ended: secs(Instant::now()),
            userspace_after: w.userspace_at.map(|t| t.duration_since(boot_start).as_secs_f64()),
            crash_at: w.crash_at.filter(|_| !matches!(ending.end, BootEnd::BudgetEnded | BootEnd::Stopped)).map(secs),
            end: ending.end,
            // Deleting the instance happens after the verdict.
            stop_seconds: 0.0,
            report: ending.report,
            log: std::mem::take(&mut w.log),
        })
    }
}

/// Waits for the instance's internal address, then delivers and runs the
/// reproducer over SSH (the QEMU disk-image path's code), reporting to `tx`.
async fn deliver(
    client: ComputeClient,
    name: String,
    d: Delivery,
    deadline: Instant,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    let host = loop {
        let wait = tokio::select! {
            got = client.get_instance(&name) => match got {
                Ok(instance) => match instance.internal_ip() {
                    Some(ip) => break ip.to_owned(),
                    None => Duration::from_secs(1),
                },
                Err(e @ Error::GceNotFound { .. }) => {
                    let _ = tx.send(Event::SetupFailed(kgym_core::failure::error_chain(&e))).await;
                    return;
                }
                // Reads are retried by the client already; try again later.
                Err(e) => {
                    tracing::debug!(error = %e, instance = %name, "instances.get failed");
                    Duration::from_secs(2)
                }
            },
            () = cancel.cancelled() => return,
        };
        if Instant::now() + wait >= deadline {
            // The boot watchdog reports it.
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return,
        }
    };
    let target = SshTarget { host, ..d.ssh };
    crate::qemu::deliver::over_ssh(target, d.files, d.command, deadline, tx, cancel).await;
}

/// What the instances of one run share.
struct RunWatch {
    deadline: Instant,
    stop: CancellationToken,
    crashed: Mutex<HashSet<u32>>,
    policy: StopPolicy,
    instances: u32,
    started: Instant,
}

impl RunWatch {
    /// Instance `i` crashed: stops the others when the policy says so.
    fn crashed(&self, i: u32) {
        let all = {
            let mut c = lock(&self.crashed);
            c.insert(i);
            c.len() as u32 >= self.instances
        };
        match self.policy {
            StopPolicy::FirstCrash => self.stop.cancel(),
            StopPolicy::AllInstances if all => self.stop.cancel(),
            StopPolicy::AllInstances | StopPolicy::Budget => {}
        }
    }
}

fn verdict(
    mut boots: Vec<BootRecord>,
    machine_type: &str,
    zone: &str,
    started: Instant,
    ctx: &RunContext,
) -> RunOutput {
    boots.sort_by(|a, b| a.ended.total_cmp(&b.ended));
    let out = RunOutput::from_boots(
        boots,
        Accel::Cloud,
        format!("Compute Engine {machine_type} in {zone}"),
        started.elapsed().as_secs_f64(),
        None,
    );
    ctx.line(format!(
        "verdict: {} ({}), {} instance(s) in {:.1}s",
        out.title.as_deref().unwrap_or("no crash"),
        out.message,
        out.boots.len(),
        out.seconds
    ));
    out
}

/// `{prefix}-{time}{counter}` in base 16: unique per process and time, a
/// valid GCE name (the instances add `-{i}`, the image `-image`).
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}-{:x}-{n:x}", millis & 0xff_ffff_ffff, std::process::id())
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        let (a, b) = (unique_name("kgym"), unique_name("kgym"));
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.len() + "-image".len() <= 63, "{n}");
            // The longest prefix, time, pid and counter still fit.
            let worst =
                format!("{}-{:x}-{:x}-{:x}-image", "p".repeat(MAX_PREFIX), 0xff_ffff_ffffu64, u32::MAX, u32::MAX);
            assert!(worst.len() <= 63, "{worst}");
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{n}");
        }
    }
}
