//! [`GceRunner`]: a [`VmRunner`] on Compute Engine instances.
//!
//! A run: an image from the disk tarball already in the bucket, N
//! instances booted from it, each instance's serial port read by offsets
//! and fed to the live crash parser until a crash (per the stop policy),
//! the budget's end or cancellation; then the verdict. The instances and
//! the image are deleted afterwards whatever happened (see
//! the `cleanup` module).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use kgym_core::stage::reproduce::{Accel, StopPolicy};
use tokio_util::sync::CancellationToken;

use super::cleanup::{CleanupGuard, Created};
use super::client::{ComputeClient, InstanceSpec, OperationScope};
use super::serial::SerialConsole;
use crate::error::{Error, Result};
use crate::outcome::{BootEnd, BootRecord};
use crate::runner::{RunContext, RunOutput, RunRequest, UserspaceSpec, VmRunner};

/// The longest name prefix: with `-{time}-{pid}-{counter}-image` (at most
/// 39 more) a name stays within GCE's 63.
const MAX_PREFIX: usize = 24;

/// The machine type used when none is set.
pub const DEFAULT_MACHINE_TYPE: &str = "e2-standard-2";

/// Runs reproducers' kernels on Compute Engine instances.
///
/// The run's disk is [`UserspaceSpec::Image`] whose `path` names a gzip'd
/// tar holding `disk.raw` already in Cloud Storage: `gs://bucket/object.tar.gz`,
/// or an object key in the runner's [bucket](GceRunner::with_bucket). The
/// kernel must be inside that disk: GCE boots the disk, not
/// [`RunRequest::kernel`].
///
/// The machine type is the request's `gce:<type>` ([`RunRequest::machine`]),
/// else the runner's [default](GceRunner::with_machine_type).
///
/// Not done yet: delivering the reproducer over SSH (the disk must run it
/// at boot), symbolizing reports with the vmlinux, packing the disk
/// tarball.
#[derive(Debug, Clone)]
pub struct GceRunner {
    client: ComputeClient,
    bucket: Option<String>,
    machine_type: String,
    serial_poll: Duration,
    name_prefix: String,
    cleanup_timeout: Duration,
    report_wait: Duration,
}

impl GceRunner {
    /// A runner over `client`: machine type [`DEFAULT_MACHINE_TYPE`],
    /// serial port read every 5 s, resources named `kgym-...`.
    pub fn new(client: ComputeClient) -> Self {
        Self {
            client,
            bucket: None,
            machine_type: DEFAULT_MACHINE_TYPE.into(),
            serial_poll: Duration::from_secs(5),
            name_prefix: "kgym".into(),
            cleanup_timeout: Duration::from_secs(300),
            report_wait: Duration::from_secs(15),
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

    /// How long a started crash report may take to complete before it is
    /// taken as it is (the QEMU runner's `Timeouts::report`, 15 s by
    /// default; builder style).
    pub fn with_report_wait(mut self, wait: Duration) -> Self {
        self.report_wait = wait;
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
            return Err(bad(
                "a GCE run boots a disk image: set UserspaceSpec::Image to its .tar.gz in Cloud Storage".into()
            ));
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

    fn validate(&self, req: &RunRequest) -> Result<String> {
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
        self.disk_source_url(req)
    }
}

#[async_trait]
impl VmRunner for GceRunner {
    async fn run(&self, req: RunRequest, ctx: &RunContext) -> Result<RunOutput> {
        let source = self.validate(&req)?;
        let started = Instant::now();
        let run_name = unique_name(&self.name_prefix);
        let created = Arc::new(Mutex::new(Created::default()));
        // Deletes what the run created: below on every path, or from its
        // drop if this future is dropped mid-run.
        let mut guard = CleanupGuard::new(self.client.clone(), Arc::clone(&created), self.cleanup_timeout);
        let result = tokio::select! {
            r = self.run_body(&req, &source, &run_name, &created, started, ctx) => r,
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
    async fn run_body(
        &self,
        req: &RunRequest,
        source: &str,
        run_name: &str,
        created: &Mutex<Created>,
        started: Instant,
        ctx: &RunContext,
    ) -> Result<RunOutput> {
        let client = &self.client;
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
        let boots = futures::future::try_join_all(
            names.iter().enumerate().map(|(i, name)| self.watch_instance(i as u32, name, &watch, ctx)),
        )
        .await?;
        Ok(verdict(boots, machine_type, client.zone(), started, ctx))
    }

    /// Reads one instance's serial port until its boot ends.
    async fn watch_instance(&self, i: u32, name: &str, watch: &RunWatch, ctx: &RunContext) -> Result<BootRecord> {
        let boot_start = Instant::now();
        let mut console = SerialConsole::new();
        let mut up_at = None;
        let (end, report, crash_at) = loop {
            let out = self.client.serial_port_output(name, console.next).await?;
            let now = Instant::now();
            let mut report = console.take(&out, now);
            // The parser completes some reports only at the console's end:
            // give a started one `report_wait`, then take what it has.
            if report.is_none() && console.report_started().is_some_and(|s| now - s >= self.report_wait) {
                report = console.finish();
            }
            if console.seen_output {
                // Without SSH the first console output is the sign the
                // instance runs (an approximation of "userspace is up").
                up_at.get_or_insert(now);
            }
            if let Some(report) = report {
                break (BootEnd::Crash { title: report.title.clone() }, Some(report), Some(now));
            }
            if now >= watch.deadline || watch.stop.is_cancelled() {
                let end = if now >= watch.deadline { BootEnd::BudgetEnded } else { BootEnd::Stopped };
                // A report still being printed counts with what it has.
                break match console.finish() {
                    Some(r) => (BootEnd::Crash { title: r.title.clone() }, Some(r), Some(now)),
                    None => (end, None, None),
                };
            }
            let wait = self.serial_poll.min(watch.deadline.saturating_duration_since(now));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = watch.stop.cancelled() => {}
            }
        };
        if console.lost > 0 {
            ctx.line(format!("instance {i} ({name}): {} bytes of serial output lost", console.lost));
        }
        if let BootEnd::Crash { title } = &end {
            ctx.line(format!("instance {i} ({name}): crashed: {title}"));
            watch.crashed(i);
        }
        let secs = |t: Instant| t.duration_since(watch.started).as_secs_f64();
        Ok(BootRecord {
            instance: i,
            run: 0,
            started: secs(boot_start),
            ended: secs(Instant::now()),
            userspace_after: up_at.map(|t: Instant| t.duration_since(boot_start).as_secs_f64()),
            crash_at: crash_at.map(secs),
            end,
            // Deleting the instance happens after the verdict.
            stop_seconds: 0.0,
            report,
            log: std::mem::take(&mut console.log),
        })
    }
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
