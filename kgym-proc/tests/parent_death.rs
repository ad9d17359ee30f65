//! The owner dies by SIGKILL: nothing it started survives it, and its
//! guarded directory goes. The owner is this test binary re-run with
//! `owner_process_entry` (an ignored test) and a directory in the
//! environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DIR: &str = "KGYM_PROC_TEST_DIR";

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// The owner: a tree command (a shell with a background `sleep`), a plain
/// command (`sleep`), both spawned from a blocking-pool thread that then
/// retires, and a guarded scratch directory; then it waits to be killed.
#[test]
#[ignore = "entry point of the owner process of the other tests"]
fn owner_process_entry() {
    let dir = PathBuf::from(std::env::var(DIR).expect("run by the parent-death test only"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_keep_alive(Duration::from_millis(50))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let scratch = kgym_proc::RemoveOnExit::new(dir.join("scratch")).unwrap();
        std::fs::write(scratch.path().join("file"), "x").unwrap();
        let d = dir.clone();
        let (tree, plain) = tokio::task::spawn_blocking(move || {
            let mut tree = kgym_proc::tree_command("sh");
            tree.arg("-c").arg(format!("sleep 300 & echo $! > {}; wait", d.join("grandchild").display()));
            let tree = kgym_proc::spawn(&mut tree, "sh").unwrap();
            let mut plain = kgym_proc::command("sleep");
            plain.arg("300");
            let plain = kgym_proc::spawn(&mut plain, "sleep").unwrap();
            (tree, plain)
        })
        .await
        .unwrap();
        std::fs::write(dir.join("guard"), tree.id().unwrap().to_string()).unwrap();
        std::fs::write(dir.join("plain"), plain.id().unwrap().to_string()).unwrap();
        while !dir.join("grandchild").is_file() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let the blocking thread retire: its children must live on.
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::write(dir.join("ready"), "").unwrap();
        tokio::time::sleep(Duration::from_secs(300)).await;
        drop((tree, plain, scratch));
    });
}

#[test]
fn sigkill_of_the_owner_takes_its_process_trees_and_scratch_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args(["owner_process_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(DIR, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !dir.path().join("ready").is_file() {
        if let Some(status) = owner.try_wait().unwrap() {
            panic!("the owner exited early: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the owner did not get ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids: Vec<(&str, i32)> =
        ["guard", "grandchild", "plain"].iter().map(|n| (*n, read_pid(&dir.path().join(n)))).collect();
    for (name, pid) in &pids {
        assert!(pid_alive(*pid), "{name} ({pid}) died before its owner: the spawning thread's exit killed it");
    }
    assert!(dir.path().join("scratch/file").is_file());

    owner.kill().unwrap();
    owner.wait().unwrap();
    let killed = Instant::now();
    loop {
        let alive: Vec<_> = pids.iter().filter(|(_, pid)| pid_alive(*pid)).collect();
        let scratch_left = dir.path().join("scratch").exists();
        if alive.is_empty() && !scratch_left {
            eprintln!("everything gone {:?} after SIGKILL", killed.elapsed());
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "2 s after SIGKILL of the owner: alive {alive:?}, scratch left: {scratch_left}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
