//! `deploy/`: the gcloud commands `deploy/gce.sh` runs, checked with
//! `DRY_RUN=1` (which prints them and runs nothing: no gcloud, no network),
//! its refusals of bad settings, and `deploy/local.sh` run for real with the
//! stock services: both workers register with the scheduler over loopback,
//! and SIGTERM stops all three within 30 s.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const PROJECT: &str = "kgym-test";
const ZONE: &str = "europe-west4-b";
const BUCKET: &str = "kgym-test-artifacts";
const REPO: &str = "https://git.example.com/kgym.git";
const TOKEN: &str = "0123456789abcdef";

fn root() -> PathBuf {
    // gce.sh names its startup script by its physical path (pwd -P).
    Path::new(env!("CARGO_MANIFEST_DIR")).canonicalize().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// gce.sh's quoting of one word, so the expected lines hold for any
/// checkout path.
fn quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs `deploy/gce.sh` with `DRY_RUN=1` and only `env` set (a caller's
/// own PROJECT or TOKEN must not leak in). A `gcloud` that records its
/// calls comes first on PATH: a dry run must never call it.
fn gce(args: &[&str], env: &[(&str, &str)]) -> Output {
    let fake = tempfile::tempdir().unwrap();
    let called = fake.path().join("gcloud-was-called");
    let gcloud = fake.path().join("gcloud");
    std::fs::write(&gcloud, format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", called.display())).unwrap();
    std::fs::set_permissions(&gcloud, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake.path().display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(root().join("deploy/gce.sh"));
    cmd.args(args).env_clear().env("PATH", path).env("DRY_RUN", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(!called.exists(), "DRY_RUN=1 called gcloud: {}", std::fs::read_to_string(&called).unwrap_or_default());
    out
}

/// The printed commands (`+ ...` lines), without the prefix.
fn commands(out: &Output) -> Vec<String> {
    let stdout = text(&out.stdout);
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    for line in &lines {
        assert!(line.starts_with("+ gcloud "), "a dry run printed something else than a command: {line:?}");
    }
    lines.iter().map(|l| l["+ ".len()..].to_owned()).collect()
}

fn bash_available() -> bool {
    kgym_testkit::require_tool("bash").is_some()
}

fn up_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("PROJECT", PROJECT),
        ("ZONE", ZONE),
        ("BUCKET", BUCKET),
        ("KGYM_REPO", REPO),
        ("BUILDERS", "2"),
        ("REPRODUCERS", "1"),
    ];
    env.extend_from_slice(extra);
    env
}

#[test]
fn gce_up_creates_the_bucket_the_rule_and_every_vm() {
    if !bash_available() {
        return;
    }
    let out = gce(&[], &up_env(&[("TOKEN", TOKEN)]));
    assert!(out.status.success(), "gce.sh: {}\n{}", out.status, text(&out.stderr));
    let startup_script = root().join("deploy/startup.sh");
    let startup = quote(&format!("--metadata-from-file=startup-script={}", startup_script.display()));
    let common = format!(
        "--project={PROJECT} --zone={ZONE} --image-family=debian-12 --image-project=debian-cloud \
         --boot-disk-size=200GB --network=default {startup} \
         --scopes=storage-rw,logging-write,monitoring-write"
    );
    let settings = format!("kgym-repo={REPO},kgym-ref=main,kgym-artifacts=gs://{BUCKET},kgym-token={TOKEN}");
    let worker = |name: &str, role: &str, machine: &str, nested: &str| {
        format!(
            "gcloud compute instances create {name} {common} --machine-type={machine}{nested} \
             --tags=kgym-worker --labels=kgym-deployment=kgym,kgym-role={role} \
             --metadata=kgym-role={role},{settings},kgym-server=http://kgym-main:8000,kgym-slots=1,kgym-broker=kgym-main"
        )
    };
    let expected = vec![
        format!(
            "gcloud storage buckets create gs://{BUCKET} --project={PROJECT} --location=europe-west4 \
             --uniform-bucket-level-access"
        ),
        format!(
            "gcloud compute firewall-rules create kgym-allow-scheduler --project={PROJECT} --network=default \
             --direction=INGRESS --action=allow --rules=tcp:8000,tcp:5672 --source-tags=kgym-worker --target-tags=kgym-scheduler"
        ),
        format!(
            "gcloud compute instances create kgym-main {common} --machine-type=e2-standard-4 \
             --tags=kgym-scheduler --labels=kgym-deployment=kgym,kgym-role=scheduler \
             --metadata=kgym-role=scheduler,{settings},kgym-port=8000"
        ),
        worker("kgym-builder-0", "builder", "c2-standard-30", ""),
        worker("kgym-builder-1", "builder", "c2-standard-30", ""),
        worker("kgym-repro-0", "reproducer", "c2-standard-16", " --enable-nested-virtualization"),
    ];
    let got = commands(&out);
    assert_eq!(got, expected, "\ngot:\n{}\n", got.join("\n"));

    // The same, said plainly (a failing exact match above is hard to read).
    let instances: Vec<&String> = got.iter().filter(|c| c.starts_with("gcloud compute instances create ")).collect();
    let names: Vec<&str> = instances.iter().map(|c| c.split(' ').nth(4).unwrap()).collect();
    assert_eq!(names, ["kgym-main", "kgym-builder-0", "kgym-builder-1", "kgym-repro-0"]);
    for c in &instances {
        let nested = c.contains("--enable-nested-virtualization");
        assert_eq!(nested, c.contains("kgym-repro-"), "nested virtualization on reproducers only: {c}");
        let from_file = format!("--metadata-from-file=startup-script={}", startup_script.display());
        assert!(c.contains(&from_file), "no startup script: {c}");
        assert!(c.contains(&format!("kgym-token={TOKEN}")), "every VM gets the token: {c}");
    }
}

/// `WORKER_TRANSPORT=http`: no broker port in the rule, no broker for the
/// workers; with `amqp` (the default) a token that cannot be a password in
/// a URL is refused.
#[test]
fn workers_over_http_need_no_broker_and_amqp_tokens_fit_a_url() {
    if !bash_available() {
        return;
    }
    let out = gce(&[], &up_env(&[("TOKEN", TOKEN), ("WORKER_TRANSPORT", "http")]));
    assert!(out.status.success(), "gce.sh: {}\n{}", out.status, text(&out.stderr));
    let got = commands(&out);
    let rule = got.iter().find(|c| c.contains("firewall-rules create")).unwrap();
    assert!(rule.contains(" --rules=tcp:8000 "), "{rule}");
    assert!(got.iter().all(|c| !c.contains("kgym-broker")), "{got:#?}");
    for (env, says) in [
        (vec![("TOKEN", "p@ss/word")], "TOKEN: letters, digits"),
        (vec![("TOKEN", TOKEN), ("WORKER_TRANSPORT", "grpc")], "WORKER_TRANSPORT='grpc': amqp or http"),
    ] {
        let out = gce(&[], &up_env(&env));
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        assert!(text(&out.stderr).contains(says), "{env:?}: {}", text(&out.stderr));
    }
}

/// `GCE_MACHINES=1`: the reproducer VMs (only they) may create images and
/// instances, and their startup script learns where.
#[test]
fn gce_machines_give_reproducers_the_compute_scope_and_the_settings() {
    if !bash_available() {
        return;
    }
    let out = gce(&[], &up_env(&[("TOKEN", TOKEN), ("GCE_MACHINES", "1")]));
    assert!(out.status.success(), "gce.sh: {}\n{}", out.status, text(&out.stderr));
    let got = commands(&out);
    let vm = |name: &str| got.iter().find(|c| c.contains(&format!("instances create {name} "))).unwrap().clone();
    let repro = vm("kgym-repro-0");
    assert!(repro.contains(" --scopes=storage-rw,logging-write,monitoring-write,compute-rw "), "{repro}");
    let settings =
        format!("kgym-broker=kgym-main,kgym-gce-project={PROJECT},kgym-gce-zone={ZONE},kgym-gce-bucket={BUCKET}");
    assert!(repro.ends_with(&settings), "{repro}");
    for other in [vm("kgym-main"), vm("kgym-builder-0")] {
        assert!(!other.contains("compute-rw") && !other.contains("kgym-gce-"), "{other}");
    }
    let out = gce(&[], &up_env(&[("GCE_MACHINES", "yes")]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("GCE_MACHINES='yes': 1 or 0"), "{}", text(&out.stderr));
    // startup.sh writes the settings kreproducer reads, and builds it with GCE.
    let startup = std::fs::read_to_string(root().join("deploy/startup.sh")).unwrap();
    for line in ["KGYM_GCE_PROJECT=$gce_project", "KGYM_GCE_ZONE=$gce_zone", "KGYM_GCE_BUCKET=$gce_bucket", "kgym/gce"]
    {
        assert!(startup.contains(line), "startup.sh lacks {line}");
    }
}

#[test]
fn gce_up_generates_a_token_when_none_is_given() {
    if !bash_available() || kgym_testkit::require_tool("openssl").is_none() {
        return;
    }
    let tokens = || {
        let out = gce(&[], &up_env(&[]));
        assert!(out.status.success(), "gce.sh: {}\n{}", out.status, text(&out.stderr));
        let got = commands(&out);
        let tokens: Vec<String> = got
            .iter()
            .filter_map(|c| c.split("kgym-token=").nth(1))
            .map(|rest| rest.split(',').next().unwrap().to_owned())
            .collect();
        assert_eq!(tokens.len(), 4, "{got:#?}");
        assert!(tokens.iter().all(|t| t == &tokens[0]), "one token for the whole deployment: {tokens:?}");
        assert!(tokens[0].len() == 64 && tokens[0].bytes().all(|b| b.is_ascii_hexdigit()), "{tokens:?}");
        tokens[0].clone()
    };
    assert_ne!(tokens(), tokens(), "each deployment gets a fresh token");
}

#[test]
fn gce_down_deletes_the_vms_and_the_rule_and_keeps_the_bucket() {
    if !bash_available() {
        return;
    }
    let env = [("PROJECT", PROJECT), ("ZONE", ZONE), ("BUCKET", BUCKET), ("BUILDERS", "2"), ("REPRODUCERS", "1")];
    let vms = format!(
        "gcloud compute instances delete kgym-main kgym-builder-0 kgym-builder-1 kgym-repro-0 \
         --project={PROJECT} --zone={ZONE} --quiet"
    );
    let rule = format!("gcloud compute firewall-rules delete kgym-allow-scheduler --project={PROJECT} --quiet");

    let out = gce(&["down"], &env);
    assert!(out.status.success(), "gce.sh down: {}\n{}", out.status, text(&out.stderr));
    assert_eq!(commands(&out), [vms.clone(), rule.clone()]);
    assert!(!text(&out.stdout).contains(BUCKET), "the bucket went without DELETE_BUCKET=1");
    assert!(text(&out.stderr).contains("DELETE_BUCKET=1"), "says how to delete it: {}", text(&out.stderr));

    let mut with_bucket = env.to_vec();
    with_bucket.push(("DELETE_BUCKET", "1"));
    let out = gce(&["down"], &with_bucket);
    assert!(out.status.success(), "gce.sh down: {}\n{}", out.status, text(&out.stderr));
    assert_eq!(commands(&out), [vms, rule, format!("gcloud storage rm --recursive gs://{BUCKET} --project={PROJECT}")]);
}

#[test]
fn gce_refuses_bad_settings_before_running_anything() {
    if !bash_available() {
        return;
    }
    let refused = |args: &[&str], env: &[(&str, &str)], names: &str| {
        let out = gce(args, env);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {}\n{err}", out.status);
        assert!(err.contains(names), "{args:?} {env:?}: the error does not name {names}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} {env:?}: printed commands: {}", text(&out.stdout));
    };
    refused(&[], &[("KGYM_REPO", REPO)], "PROJECT");
    refused(&["down"], &[], "PROJECT");
    refused(&[], &up_env(&[("BUILDERS", "two")]), "BUILDERS");
    refused(&[], &up_env(&[("REPRODUCERS", "-1")]), "REPRODUCERS");
    refused(&[], &[("PROJECT", PROJECT)], "KGYM_REPO");
    refused(&[], &up_env(&[("TOKEN", "a,b")]), "TOKEN");
    refused(&["upp"], &up_env(&[]), "upp");
}

/// `local.sh` and what it started, killed outright if the test fails
/// half-way (only these pids and their process groups: nothing else on
/// this machine).
struct Local {
    child: Child,
    services: Vec<(String, i32)>,
}

impl Drop for Local {
    fn drop(&mut self) {
        // local.sh first, so it stops the services it may have started
        // before the test knew their pids; then whatever is left, for sure.
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for (_, pid) in &self.services {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Live processes (not zombies) whose environment mentions `needle`:
/// every descendant of the services inherits KGYM_DATA under it.
fn processes_with_env(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z')) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if text(&environ).contains(needle) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push(format!("{pid} {}", comm.trim()));
        }
    }
    found
}

fn process_gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z'))
}

#[test]
fn local_sh_runs_the_three_services_and_stops_them_on_sigterm() {
    let (Some(kscheduler), Some(_), Some(_)) =
        (common::example("kscheduler"), common::example("kbuilder"), common::example("kreproducer"))
    else {
        return;
    };
    if !bash_available() || ["curl", "setsid", "ps"].iter().any(|t| kgym_testkit::require_tool(t).is_none()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deploy_dir = dir.path().join("deploy");
    let stderr_log = dir.path().join("local.sh.stderr");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let host = format!("deploytest-{}", std::process::id());
    let child = Command::new(root().join("deploy/local.sh"))
        .env("PORT", port.to_string())
        .env("KGYM_DEPLOY_DIR", &deploy_dir)
        .env("KGYM_BIN", kscheduler.parent().unwrap())
        .env("KGYM_HOST", &host)
        .env("RUST_LOG", "info")
        .env_remove("KGYM_TOKEN")
        .env_remove("KGYM_ARTIFACTS")
        .env_remove("KGYM_LABELS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .unwrap();
    let mut local = Local { child, services: Vec::new() };
    let logs = |deploy_dir: &Path| {
        let mut all = format!("local.sh stderr:\n{}\n", std::fs::read_to_string(&stderr_log).unwrap_or_default());
        for name in ["kscheduler", "kbuilder", "kreproducer"] {
            let log = std::fs::read_to_string(deploy_dir.join(format!("{name}.log"))).unwrap_or_default();
            all += &format!("{name}.log:\n{log}\n");
        }
        all
    };

    // Its report: the URL, then `<name> pid=<pid> log=<path>` per service.
    let (tx, rx) = mpsc::channel();
    let stdout = local.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut report = Vec::new();
    while !report.iter().any(|l: &String| l.starts_with("stop:")) {
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(line) => report.push(line),
            Err(_) => panic!("local.sh did not come up within 90 s: {report:#?}\n{}", logs(&deploy_dir)),
        }
    }
    assert_eq!(report[0], format!("kgym is up: {url}"), "{report:#?}");
    for name in ["kscheduler", "kbuilder", "kreproducer"] {
        let line = report.iter().find(|l| l.starts_with(&format!("{name} pid="))).expect(name);
        let pid: i32 = line.split(['=', ' ']).nth(2).unwrap().parse().unwrap();
        assert_eq!(line, &format!("{name} pid={pid} log={}", deploy_dir.join(format!("{name}.log")).display()));
        // The pid is the service itself (setsid made a session in place,
        // no fork): the signals local.sh sends reach the service.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(comm.trim(), name, "pid {pid} is not {name}");
        local.services.push((name.to_owned(), pid));
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    // no_proxy: nothing but 127.0.0.1, whatever the environment says.
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let get = |path: &str| {
        rt.block_on(async {
            let resp = client.get(format!("{url}{path}")).send().await?;
            let status = resp.status();
            resp.json::<serde_json::Value>().await.map(|body| (status, body))
        })
    };
    let (status, _) = get("/api/v1/health").unwrap_or_else(|e| panic!("health: {e}\n{}", logs(&deploy_dir)));
    assert!(status.is_success(), "GET /api/v1/health: {status}");

    let wanted = [format!("{host}-kbuilder"), format!("{host}-kreproducer")];
    let started = Instant::now();
    loop {
        let (status, workers) = get("/api/v1/workers").unwrap_or_else(|e| panic!("workers: {e}"));
        assert!(status.is_success(), "GET /api/v1/workers: {status} {workers}");
        let live: Vec<&str> = workers
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {workers}"))
            .iter()
            .filter(|w| w["live"] == serde_json::Value::Bool(true))
            .filter_map(|w| w["host"].as_str())
            .collect();
        if wanted.iter().all(|h| live.contains(&h.as_str())) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{wanted:?} not both live within 60 s: {workers}\n{}",
            logs(&deploy_dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    kill(Pid::from_raw(local.child.id() as i32), Signal::SIGTERM).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = local.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "local.sh still runs 30 s after SIGTERM\n{}",
            logs(&deploy_dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&stderr_log).unwrap_or_default();
    assert!(status.success(), "local.sh after SIGTERM: {status}\n{}", logs(&deploy_dir));
    for (name, pid) in &local.services {
        assert!(process_gone(*pid), "{name} (pid {pid}) outlived local.sh\n{}", logs(&deploy_dir));
    }
    // Gone for good: the Drop guard must not signal these pids again.
    local.services.clear();
    let left = processes_with_env(&deploy_dir.display().to_string());
    assert!(left.is_empty(), "processes of the deployment still run: {left:?}");

    // Workers before the scheduler, each stopped by SIGTERM (not killed):
    // they said they handed their stages back.
    let order: Vec<usize> = ["stopping kbuilder", "stopping kreproducer", "stopping kscheduler"]
        .iter()
        .map(|s| stderr.find(s).unwrap_or_else(|| panic!("local.sh did not say {s:?}: {stderr}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "stop order: {stderr}");
    assert!(!stderr.contains("killing"), "a service needed SIGKILL: {stderr}");
    for name in ["kbuilder", "kreproducer"] {
        let log = std::fs::read_to_string(deploy_dir.join(format!("{name}.log"))).unwrap_or_default();
        assert!(log.contains("handing running stages back"), "{name} did not stop on SIGTERM:\n{log}");
    }
    assert!(get("/api/v1/health").is_err(), "the scheduler still answers after local.sh stopped");
}

/// `rabbitmq-user.sh` against a real broker: the user it creates logs in
/// over AMQP with its password (a wrong one is refused), and run again
/// (every boot of the scheduler's VM does) it sets the new password.
#[cfg(feature = "amqp")]
#[test]
fn rabbitmq_user_sh_gives_the_workers_a_login() {
    let Some(broker) = kgym_testkit::rabbitmq::Broker::start() else { return };
    let script = root().join("deploy/rabbitmq-user.sh");
    let set = |password: &str| {
        let mut cmd = Command::new("bash");
        broker.env(&mut cmd);
        let ctl = format!("{} -n {}", kgym_testkit::rabbitmq::RABBITMQCTL, broker.node_name());
        let out = cmd.arg(&script).args(["kgym", password]).env("RABBITMQCTL", ctl).output().unwrap();
        assert!(out.status.success(), "rabbitmq-user.sh: {}\n{}", out.status, text(&out.stderr));
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let login = |password: &str| {
        let uri = format!("amqp://kgym:{password}@127.0.0.1:{}/%2f", broker.port());
        rt.block_on(async {
            let conn = lapin::Connection::connect(&uri, Default::default()).await?;
            // Permissions: the user may declare a queue.
            let ch = conn.create_channel().await?;
            ch.queue_declare("kgym.login-check".into(), Default::default(), Default::default()).await?;
            conn.close(200, "done".into()).await
        })
    };
    set("first-0123");
    login("first-0123").expect("the new user logs in and declares a queue");
    assert!(login("wrong").is_err(), "a wrong password logged in");
    set("second-4567");
    login("second-4567").expect("the new password works");
    assert!(login("first-0123").is_err(), "the old password still works");
    let out = Command::new("bash").arg(&script).args(["guest", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "guest refused");
}
