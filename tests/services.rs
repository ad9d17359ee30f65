//! The stock services as an operator meets them: `--help`, refused
//! arguments and settings, and worker pools across processes — a
//! `kscheduler` and a `kreproducer` declaring `KGYM_LABELS`: a stage that
//! requires another pool is left for that pool, one of its own pool runs.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Service, example};
use kgym::core::stage::reproduce::{FileRef, KernelRef, ReproduceArgs, Reproducer};
use kgym::core::{JobSpec, JobStatus, StageKind, StageSpec};
use kgym::sched::{Scheduler, SchedulerExt};

fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).env_remove("KGYM_TOKEN").env("KGYM_SERVER", "http://127.0.0.1:9");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_settings_and_stray_arguments_are_refused() {
    for (name, settings) in [
        (
            "kscheduler",
            &["KGYM_LISTEN", "KGYM_TOKEN", "KGYM_DATA", "KGYM_ARTIFACTS", "KGYM_AMQP", "KGYM_LEASE_TTL"][..],
        ),
        ("kbuilder", &["KGYM_SERVER", "KGYM_SLOTS", "KGYM_HOST", "KGYM_LABELS"][..]),
        (
            "kreproducer",
            &["KGYM_SERVER", "KGYM_SLOTS", "KGYM_HOST", "KGYM_LABELS", "KGYM_GCE_PROJECT", "KGYM_GCE_BUCKET"][..],
        ),
    ] {
        let Some(program) = example(name) else { return };
        let out = run(&program, &["--help"], &[]);
        let help = text(&out.stdout);
        assert!(out.status.success(), "{name} --help: {}\n{}", out.status, text(&out.stderr));
        assert!(help.starts_with(&format!("{name}: ")), "{help}");
        assert!(help.contains(&format!("Usage: {name} [--help]")), "{help}");
        for s in settings {
            assert!(help.contains(s), "{name} --help does not mention {s}:\n{help}");
        }
        let out = run(&program, &["--listen", "0.0.0.0:80"], &[]);
        assert_eq!(out.status.code(), Some(2), "{name} took a stray argument: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("\"--listen\""), "{}", text(&out.stderr));
    }
}

#[test]
fn bad_labels_stop_a_worker_before_it_starts() {
    let Some(program) = example("kreproducer") else { return };
    let data = tempfile::tempdir().unwrap();
    let data = data.path().to_str().unwrap();
    for (labels, says) in [("pool", "not key=value"), ("pool=big,arch=arm 64", "\"arch\"")] {
        let out = run(&program, &[], &[("KGYM_LABELS", labels), ("KGYM_DATA", data)]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "KGYM_LABELS={labels:?}: {err}");
        assert!(err.contains("KGYM_LABELS") && err.contains(says), "KGYM_LABELS={labels:?}: {err}");
    }
}

/// A GCE project without the bucket its images come from is refused at
/// start (with the `gce` feature; without it, the project itself is).
#[test]
fn a_gce_project_without_a_bucket_stops_kreproducer_before_it_starts() {
    let Some(program) = example("kreproducer") else { return };
    let data = tempfile::tempdir().unwrap();
    let out = run(&program, &[], &[("KGYM_GCE_PROJECT", "kgym-test"), ("KGYM_DATA", data.path().to_str().unwrap())]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let says = if cfg!(feature = "gce") { "KGYM_GCE_BUCKET is not" } else { "without the gce feature" };
    assert!(err.contains("KGYM_GCE_PROJECT") && err.contains(says), "{err}");
}

#[test]
fn a_bad_lease_ttl_stops_kscheduler_before_it_serves() {
    let Some(program) = example("kscheduler") else { return };
    let data = tempfile::tempdir().unwrap();
    let data = data.path().to_str().unwrap();
    for (ttl, says) in [("soon", "not a duration"), ("200ms", "at least 1s")] {
        let env = [("KGYM_LEASE_TTL", ttl), ("KGYM_DATA", data), ("KGYM_LISTEN", "127.0.0.1:0")];
        let out = run(&program, &[], &env);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "KGYM_LEASE_TTL={ttl:?}: {err}");
        assert!(err.contains("KGYM_LEASE_TTL") && err.contains(says), "KGYM_LEASE_TTL={ttl:?}: {err}");
    }
}

#[test]
fn a_worker_runs_the_stages_of_its_pool_only() {
    pools_across_processes(&[]);
}

/// The same with the scheduler announcing on a real RabbitMQ
/// (`KGYM_AMQP`): the other pool's announcement waits in its own durable
/// queue on the broker, the own pool's queue was drained.
#[cfg(feature = "amqp")]
#[test]
fn a_worker_runs_the_stages_of_its_pool_only_with_announcements_on_rabbitmq() {
    let Some(broker) = kgym_testkit::rabbitmq::Broker::start() else { return };
    if !pools_across_processes(&[("KGYM_AMQP", &broker.uri()), ("KGYM_AMQP_PREFIX", "svc")]) {
        return;
    }
    let queues = broker.queues();
    let depth = |name: &str| queues.iter().find(|(q, _)| q == name).map(|(_, n)| *n);
    assert_eq!(depth("svc.stage.reproduce.pool=small"), Some(1), "{queues:?}");
    assert_eq!(depth("svc.stage.reproduce.pool=big"), Some(0), "{queues:?}");
}

/// A `kscheduler` (with `sched_env` besides its usual settings) and a
/// `kreproducer` of `pool=big`: of two stages, the `pool=small` one
/// submitted first stays queued and the `pool=big` one runs. `false` when
/// the services are not built (outside CI).
fn pools_across_processes(sched_env: &[(&str, &str)]) -> bool {
    let (Some(kscheduler), Some(kreproducer)) = (example("kscheduler"), example("kreproducer")) else { return false };
    let scratch = kgym_testkit::scratch_data_dir();
    let dir = |name: &str| scratch.path().join(name).to_str().unwrap().to_owned();
    let (sched_data, repro_data, artifacts) = (dir("sched"), dir("repro"), dir("artifacts"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let mut env = vec![("KGYM_LISTEN", listen.as_str()), ("KGYM_DATA", &sched_data), ("KGYM_ARTIFACTS", &artifacts)];
    env.extend_from_slice(sched_env);
    let scheduler = Service::start(&kscheduler, &env, scratch.path().join("kscheduler.log"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sched = kgym::sched::http::HttpScheduler::new(&server).unwrap();
    // A worker registers at start and exits when nobody answers (systemd
    // or deploy/local.sh bring it back): the scheduler first.
    let started = Instant::now();
    while rt.block_on(sched.list(&Default::default())).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "kscheduler never answered:\n{}", scheduler.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    let worker = Service::start(
        &kreproducer,
        &[
            ("KGYM_SERVER", &server),
            ("KGYM_DATA", &repro_data),
            ("KGYM_ARTIFACTS", &artifacts),
            ("KGYM_HOST", "repro-big"),
            ("KGYM_LABELS", "pool=big,arch=x86_64"),
        ],
        scratch.path().join("kreproducer.log"),
    );
    let started = Instant::now();
    let me = loop {
        let workers = rt.block_on(sched.workers()).unwrap_or_default();
        if let Some(w) = workers.into_iter().find(|w| w.host == "repro-big" && w.live) {
            break w;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "repro-big never registered\nkscheduler:\n{}\nkreproducer:\n{}",
            scheduler.output(),
            worker.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(kgym::sched::labels::display(&me.labels), "arch=x86_64,pool=big");

    // A kernel that is not there: the stage fails at once where it runs.
    let missing = scratch.path().join("no-such-bzImage");
    let args = ReproduceArgs::new(
        KernelRef::Files { bzimage: FileRef::Path(missing), vmlinux: None },
        Reproducer::c("int main(void) { return 0; }"),
    );
    let job = |pool: &str| JobSpec {
        stages: vec![StageSpec::new(StageKind::reproduce(), &args).label("pool", pool)],
        ..JobSpec::new()
    };
    let other_pool = rt.block_on(sched.submit(job("small"))).unwrap();
    let own_pool = rt.block_on(sched.submit(job("big"))).unwrap();
    let done = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), sched.wait(own_pool)).await })
        .expect("the pool=big stage did not run within 2 minutes")
        .unwrap();
    assert_eq!(done.status, JobStatus::Finished);
    let failure = done.failure().expect("a missing kernel fails the stage").1;
    assert!(failure.message.contains("no-such-bzImage"), "{failure:?}");
    // The other pool's stage was submitted first, and is still waiting.
    std::thread::sleep(Duration::from_secs(2));
    let waiting = rt.block_on(sched.get(other_pool)).unwrap();
    assert_eq!(waiting.status, JobStatus::Pending, "repro-big ran a pool=small stage: {waiting:#?}");
    assert_eq!(waiting.worker, None);
    true
}
