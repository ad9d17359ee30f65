//! The distributed deployment on one machine, for real: a RabbitMQ broker
//! (Debian's `rabbitmq-server`, started by the test without systemd),
//! `kscheduler` announcing ready stages on it, and `kbuilder` /
//! `kreproducer` processes sharing an artifact directory.
//!
//! - A real build + reproduce job, the workers on RabbitMQ (`KGYM_AMQP`):
//!   the builder that took the build is killed with SIGKILL mid-stage, the
//!   other builder gets the stage when the lease expires, RabbitMQ is
//!   stopped and started again while it builds, and the job finishes: the
//!   kernel built by the second builder boots in the reproducer.
//! - 500 one-stage jobs through the broker, which is stopped mid-run (half
//!   of them submitted while it is away) and started again, and then
//!   `kscheduler` is killed with SIGKILL and started again:
//!   every stage ran exactly once — one "stage started" line per job in
//!   the worker's log and one hand-out per job in the scheduler's job log.
#![cfg(feature = "amqp")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Service, example, wait_until};
use kgym::core::stage::build::{BaseConfig, BuildArgs, KernelConfig, KernelSource};
use kgym::core::stage::reproduce::{FileRef, KernelRef, ReproduceArgs, Reproducer};
use kgym::core::{JobId, JobSpec, JobStatus, StageIndex, StageKind, StageSpec};
use kgym::sched::http::HttpScheduler;
use kgym::sched::{Scheduler, SchedulerExt};
use kgym_testkit::rabbitmq::Broker;

/// A `kscheduler` on a free port announcing on `broker`, and the workers
/// added to it; all killed when dropped.
struct Cluster {
    scratch: tempfile::TempDir,
    server: String,
    kscheduler: std::path::PathBuf,
    env: Vec<(String, String)>,
    scheduler: Service,
    workers: Vec<(String, Service)>,
    rt: tokio::runtime::Runtime,
    client: HttpScheduler,
}

impl Cluster {
    /// `None` when the services are not built (outside CI).
    fn start(broker: &Broker, lease_ttl: &str) -> Option<Self> {
        let kscheduler = example("kscheduler")?;
        let scratch = kgym_testkit::scratch_data_dir();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = format!("http://127.0.0.1:{port}");
        let (listen, data, artifacts) =
            (format!("127.0.0.1:{port}"), dir(&scratch, "sched"), dir(&scratch, "artifacts"));
        let env = vec![
            ("KGYM_LISTEN".to_owned(), listen),
            ("KGYM_DATA".to_owned(), data),
            ("KGYM_ARTIFACTS".to_owned(), artifacts),
            ("KGYM_AMQP".to_owned(), broker.uri()),
            ("KGYM_AMQP_PREFIX".to_owned(), "cluster".to_owned()),
            ("KGYM_LEASE_TTL".to_owned(), lease_ttl.to_owned()),
        ];
        let scheduler = start_scheduler(&kscheduler, &env, scratch.path().join("kscheduler.log"));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = HttpScheduler::new(&server).unwrap();
        let cluster = Self { scratch, server, kscheduler, env, scheduler, workers: Vec::new(), rt, client };
        // A worker registers at start and exits when nobody answers: the
        // scheduler first.
        cluster.wait_for_scheduler();
        Some(cluster)
    }

    fn wait_for_scheduler(&self) {
        wait_until(
            "kscheduler answers",
            Duration::from_secs(60),
            || self.scheduler.output(),
            || self.rt.block_on(self.client.list(&Default::default())).is_ok(),
        );
    }

    /// Kills `kscheduler` with SIGKILL and starts it again on the same
    /// port and database.
    fn kill_and_restart_scheduler(&mut self) {
        self.scheduler.child.kill().unwrap();
        self.scheduler.child.wait().unwrap();
        let log = self.scratch.path().join("kscheduler-again.log");
        self.scheduler = start_scheduler(&self.kscheduler, &self.env, log);
        self.wait_for_scheduler();
    }

    /// Starts the stock service `program` as worker `host` with `slots`
    /// slots and the `extra` settings (`KGYM_AMQP`: the worker takes its
    /// stages from RabbitMQ), and waits until the scheduler lists it as
    /// live.
    fn add_worker_with(&mut self, program: &str, host: &str, slots: u32, extra: &[(&str, &str)]) -> Option<()> {
        let program = example(program)?;
        let (data, artifacts) = (dir(&self.scratch, host), dir(&self.scratch, "artifacts"));
        let slots = slots.to_string();
        let mut env = vec![
            ("KGYM_SERVER", self.server.as_str()),
            ("KGYM_DATA", &data),
            ("KGYM_ARTIFACTS", &artifacts),
            ("KGYM_HOST", host),
            ("KGYM_SLOTS", &slots),
        ];
        env.extend_from_slice(extra);
        let service = Service::start(&program, &env, self.scratch.path().join(format!("{host}.log")));
        self.workers.push((host.to_owned(), service));
        wait_until(
            &format!("{host} registers"),
            Duration::from_secs(60),
            || self.logs(),
            || {
                let workers = self.rt.block_on(self.client.workers()).unwrap_or_default();
                workers.iter().any(|w| w.host == host && w.live)
            },
        );
        Some(())
    }

    fn worker(&mut self, host: &str) -> &mut Service {
        &mut self.workers.iter_mut().find(|(h, _)| h == host).expect("a worker of that host").1
    }

    /// Every service's log, for failure messages.
    fn logs(&self) -> String {
        let mut all = format!("== kscheduler\n{}", self.scheduler.output());
        for (host, service) in &self.workers {
            all.push_str(&format!("\n== {host}\n{}", service.output()));
        }
        all
    }

    fn get(&self, id: JobId) -> kgym::core::Job {
        self.rt.block_on(self.client.get(id)).unwrap()
    }

    /// Waits for every job in `ids` to end.
    fn wait_all(&self, ids: &[JobId], limit: Duration) -> Vec<kgym::core::Job> {
        let all = futures::future::join_all(ids.iter().map(|id| self.client.wait(*id)));
        let done = self.rt.block_on(async { tokio::time::timeout(limit, all).await });
        let done = done.unwrap_or_else(|_| panic!("the jobs did not end within {limit:?}\n{}", self.logs()));
        done.into_iter().map(|r| r.unwrap()).collect()
    }
}

fn start_scheduler(kscheduler: &Path, env: &[(String, String)], log: std::path::PathBuf) -> Service {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Service::start(kscheduler, &env, log)
}

fn dir(scratch: &tempfile::TempDir, name: &str) -> String {
    scratch.path().join(name).to_str().unwrap().to_owned()
}

/// Lines of `log` that say `what` for job `id` (the worker runtime's stage
/// span carries `job=<id>`).
fn lines_of_job(log: &str, id: JobId, what: &str) -> usize {
    let job = format!("job={id} ");
    log.lines().filter(|l| l.contains(what) && l.contains(&job)).count()
}

/// A C reproducer that says hello and exits: the verdict is "no crash,
/// booted to userspace".
const HELLO: &str = "#include <stdio.h>\nint main(void) { printf(\"kgym-cluster: hello\\n\"); return 0; }\n";

#[test]
fn a_job_survives_a_killed_builder_and_a_broker_restart() {
    if !kgym_testkit::test_kernel_available() || kgym_testkit::require_tool("qemu-system-x86_64").is_none() {
        return;
    }
    let Some(mut broker) = Broker::start() else { return };
    // The workers are on RabbitMQ (the deployment's default): the broker is
    // their only way to the scheduler, so the lease outlasts its restart.
    let Some(mut cluster) = Cluster::start(&broker, "30s") else { return };
    let uri = broker.uri();
    let amqp = [("KGYM_AMQP", uri.as_str()), ("KGYM_AMQP_PREFIX", "cluster")];
    for (program, host) in [("kbuilder", "builder-a"), ("kbuilder", "builder-b"), ("kreproducer", "repro")] {
        if cluster.add_worker_with(program, host, 1, &amqp).is_none() {
            return;
        }
        let log = cluster.worker(host).output();
        assert!(log.contains("claiming stages from RabbitMQ"), "{host} is not on RabbitMQ:\n{log}");
    }

    let build = BuildArgs::new(
        KernelSource::tarball(kgym_testkit::KERNEL_TARBALL),
        KernelConfig::Base {
            base: BaseConfig::Tinyconfig,
            fragments: vec![kgym_testkit::MINIMAL_BOOT_FRAGMENT.to_owned()],
        },
    );
    let mut reproduce = ReproduceArgs::new(KernelRef::FromStage { stage: StageIndex(0) }, Reproducer::c(HELLO));
    reproduce.budget = Duration::from_secs(20);
    let spec = JobSpec::new().stage(StageKind::build(), &build).stage(StageKind::reproduce(), &reproduce);
    let id = cluster.rt.block_on(cluster.client.submit(spec)).unwrap();

    // The build goes to one of the two builders; kill it with SIGKILL a few
    // seconds into the stage (it is extracting or compiling).
    let mut first = None;
    wait_until(
        "a builder takes the build",
        Duration::from_secs(120),
        || cluster.logs(),
        || {
            first = cluster.get(id).worker;
            first.is_some()
        },
    );
    let first = first.unwrap();
    let (killed, other) =
        if first.starts_with("builder-a") { ("builder-a", "builder-b") } else { ("builder-b", "builder-a") };
    std::thread::sleep(Duration::from_secs(5));
    let record = cluster.get(id);
    assert_eq!(record.status, JobStatus::InProgress, "{record:#?}\n{}", cluster.logs());
    assert_eq!(record.results.len(), 0, "the build ended within 5 s: {record:#?}");
    cluster.worker(killed).child.kill().unwrap();
    cluster.worker(killed).child.wait().unwrap();

    // The broker hands the dead builder's unacked announcement to the other
    // at once, whose claim the live lease refuses; the lease expires (30 s)
    // and the stage is announced again: the other builder takes it. While
    // it builds, the broker goes down and comes back (its heartbeats wait
    // for it; the reproduce stage may be announced while it is down: the
    // scheduler keeps the announcement and publishes it again).
    wait_until(
        &format!("{other} takes the build over"),
        Duration::from_secs(120),
        || cluster.logs(),
        || cluster.get(id).worker.is_some_and(|w| w.starts_with(other)),
    );
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    broker.start_again();

    let done = cluster.wait_all(&[id], Duration::from_secs(3600)).remove(0);
    assert!(done.succeeded(), "{:#?}\n{}", done.failure(), cluster.logs());
    assert!(done.results[0].worker.as_deref().is_some_and(|w| w.starts_with(other)), "{:#?}", done.results[0]);
    assert_eq!(done.results[1].value["crashed"], false, "{:#?}", done.results[1]);
    assert_eq!(done.results[1].value["image_ability"], "normal", "the kernel did not boot: {:#?}", done.results[1]);
    // The stage ran twice in all, the second time as attempt 2 on the
    // other builder; the killed one never reported.
    let other_log = cluster.worker(other).output();
    assert!(
        other_log
            .lines()
            .any(|l| l.contains("stage started") && l.contains(&format!("job={id} ")) && l.contains("attempt=2")),
        "{other} did not log the build's second attempt:\n{other_log}"
    );
    assert_eq!(lines_of_job(&cluster.worker(killed).output(), id, "stage reported"), 0);
    // The scheduler stops counting the killed builder as live once it has
    // been silent for the worker TTL (90 s).
    wait_until(
        &format!("{killed} is listed as gone"),
        Duration::from_secs(150),
        || cluster.logs(),
        || {
            let workers = cluster.rt.block_on(cluster.client.workers()).unwrap_or_default();
            workers.iter().any(|w| w.host == killed && !w.live)
        },
    );
}

#[test]
fn five_hundred_jobs_through_rabbitmq_each_run_exactly_once() {
    five_hundred_jobs(Workers::Http);
}

/// The same with the worker on RabbitMQ too (`KGYM_AMQP`): it consumes the
/// announcement queue itself and claims, heartbeats and reports through
/// kscheduler's request queue. The broker is then the worker's only way
/// to the scheduler, so the lease outlasts the broker's restart (a longer
/// outage would expire leases: the stage would run again, which is the
/// lease doing its job).
#[test]
fn five_hundred_jobs_with_the_worker_on_rabbitmq_each_run_exactly_once() {
    five_hundred_jobs(Workers::Amqp);
}

/// How the worker reaches the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workers {
    /// `KGYM_SERVER`: claims over HTTP, kscheduler consumes the queues.
    Http,
    /// `KGYM_AMQP`: the worker consumes the queues, requests on RabbitMQ.
    Amqp,
}

fn five_hundred_jobs(workers: Workers) {
    const JOBS: usize = 500;
    let Some(mut broker) = Broker::start() else { return };
    let lease = if workers == Workers::Amqp { "30s" } else { "5s" };
    let Some(mut cluster) = Cluster::start(&broker, lease) else { return };
    let uri = broker.uri();
    let amqp: &[(&str, &str)] =
        if workers == Workers::Amqp { &[("KGYM_AMQP", &uri), ("KGYM_AMQP_PREFIX", "cluster")] } else { &[] };
    if cluster.add_worker_with("kreproducer", "repro", 8, amqp).is_none() {
        return;
    }
    if workers == Workers::Amqp {
        let log = cluster.workers[0].1.output();
        assert!(log.contains("claiming stages from RabbitMQ"), "the worker is not on RabbitMQ:\n{log}");
        assert!(cluster.scheduler.output().contains("answering workers on RabbitMQ"), "{}", cluster.logs());
    }
    // A stage the worker ends at once: its kernel is not there.
    let missing = cluster.scratch.path().join("no-such-bzImage");
    let args = ReproduceArgs::new(
        KernelRef::Files { bzimage: FileRef::Path(missing), vmlinux: None },
        Reproducer::c("int main(void) { return 0; }"),
    );
    let spec = || JobSpec { stages: vec![StageSpec::new(StageKind::reproduce(), &args)], ..JobSpec::new() };
    let submit = |n: usize| -> Vec<JobId> {
        cluster.rt.block_on(async {
            let submits = (0..n).map(|_| cluster.client.submit(spec()));
            futures::future::join_all(submits).await.into_iter().map(|r| r.unwrap()).collect()
        })
    };
    // Half of them, then the broker goes down mid-run; the other half is
    // submitted while it is away (the scheduler keeps their announcements
    // and publishes them when it is back).
    let mut ids = submit(JOBS / 2);
    let repro_log = |cluster: &Cluster| cluster.workers[0].1.output();
    wait_until(
        "100 stages reported",
        Duration::from_secs(300),
        || cluster.logs(),
        || repro_log(&cluster).matches("stage reported").count() >= 100,
    );
    broker.stop();
    ids.extend(submit(JOBS - JOBS / 2));
    std::thread::sleep(Duration::from_secs(2));
    broker.start_again();
    // Then the scheduler is killed and started again: it announces again
    // what is ready and not leased; the queues may now hold an
    // announcement twice, and leases keep the stage from running twice.
    wait_until(
        "300 stages reported",
        Duration::from_secs(300),
        || cluster.logs(),
        || repro_log(&cluster).matches("stage reported").count() >= 300,
    );
    cluster.kill_and_restart_scheduler();

    let done = cluster.wait_all(&ids, Duration::from_secs(600));
    for job in &done {
        assert_eq!(job.status, JobStatus::Finished, "{job:#?}");
        let failure = job.failure().expect("a missing kernel fails the stage").1;
        assert!(failure.message.contains("no-such-bzImage"), "{failure:?}");
    }
    // Exactly once, as the worker saw it ...
    let log = repro_log(&cluster);
    let twice: Vec<_> = ids.iter().filter(|id| lines_of_job(&log, **id, "stage started") != 1).collect();
    assert!(twice.is_empty(), "jobs whose stage did not start exactly once: {twice:?}");
    // A report the killed scheduler recorded but could not answer is
    // refused when the worker sends it again (the stage is done).
    let refused = log.lines().filter(|l| l.contains("result refused")).count();
    assert_eq!(log.matches("stage reported").count() + refused, JOBS, "{log}");
    // ... and as the scheduler recorded it.
    let db = Path::new(&dir(&cluster.scratch, "sched")).join(kgym::DATABASE_FILE);
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    // The scheduler logs every hand-out into the job's log in the claim's
    // transaction ("stage 0 (reproduce) handed to ... (attempt N)").
    let mut handouts = conn
        .prepare(
            "SELECT job_id, COUNT(*) FROM job_log WHERE stage = 0 AND worker IS NULL \
             AND line LIKE 'stage 0 (reproduce) handed to %' GROUP BY job_id",
        )
        .unwrap();
    let per_job: Vec<(i64, i64)> =
        handouts.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(per_job.len(), JOBS, "jobs with a hand-out in the scheduler's log");
    // A claim the killed scheduler committed but could not answer is lost
    // to the worker and handed out again once its lease expires: at most
    // one per worker slot (8) can be in flight at the kill.
    let more: Vec<_> = per_job.iter().filter(|(_, n)| *n != 1).collect();
    assert!(more.len() <= 8 && more.iter().all(|(_, n)| *n == 2), "jobs handed out more than once: {more:?}");
    drop(broker);
}
