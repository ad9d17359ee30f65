//! [`Broker`]: a real RabbitMQ (Debian's `rabbitmq-server`) started for a
//! test, all its state in a temporary directory, on free loopback ports —
//! without systemd, which the package's own start needs (see the project's
//! recipes). Several can run at once; each is stopped when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts the scripts that run without `sudo -u rabbitmq`.
const SBIN: &str = "/usr/lib/rabbitmq/bin";

/// `rabbitmqctl` as the broker's own tools run it (Debian's
/// `/usr/sbin/rabbitmqctl` switches to the `rabbitmq` user and its
/// environment, which would lose [`Broker::env`]).
pub const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// How long a broker may take to accept connections (the Erlang VM boots
/// in ~5 s on an idle 2-core machine; much longer under a parallel build).
const START_LIMIT: Duration = Duration::from_secs(180);

/// A running broker of the test's own.
pub struct Broker {
    dir: tempfile::TempDir,
    port: u16,
    dist_port: u16,
    epmd_port: u16,
    child: Option<Child>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("port", &self.port).field("dir", &self.dir.path()).finish()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Broker {
    /// Starts a broker and waits until it accepts AMQP. `None` (after a
    /// skip notice) when `rabbitmq-server` is not installed; in CI that
    /// panics instead, as does a broker that does not start (with its log).
    pub fn start() -> Option<Self> {
        if !Path::new(SBIN).join("rabbitmq-server").is_file() {
            crate::skip_or_fail(&format!(
                "{SBIN}/rabbitmq-server is missing (apt-get install rabbitmq-server; scripts/setup.sh does)"
            ));
            return None;
        }
        let dir = tempfile::Builder::new().prefix("kgym-rabbitmq-").tempdir_in(std::env::temp_dir()).expect("temp dir");
        let mut broker = Self { dir, port: free_port(), dist_port: free_port(), epmd_port: free_port(), child: None };
        std::fs::create_dir_all(broker.dir.path().join("home")).expect("broker home");
        std::fs::write(broker.dir.path().join("enabled_plugins"), "[].\n").expect("plugins file");
        broker.launch();
        Some(broker)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` (guest may log in from loopback).
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// This broker's Erlang node name (for `rabbitmqctl -n`).
    pub fn node_name(&self) -> String {
        format!("kgym{}@localhost", self.port)
    }

    /// Gives `cmd` the environment that reaches this broker (its node,
    /// ports, Erlang cookie home): for `rabbitmqctl` and scripts using it.
    pub fn env(&self, cmd: &mut Command) {
        let d = self.dir.path();
        cmd.env("HOME", d.join("home"))
            .env("RABBITMQ_NODENAME", format!("kgym{}@localhost", self.port))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"));
    }

    fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("log")) {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                out.push_str(&format!("--- {}\n", e.path().display()));
                out.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
            }
        }
        out.push_str(&std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default());
        out
    }

    fn launch(&mut self) {
        let out = std::fs::File::create(self.dir.path().join("server.out")).expect("server log");
        let mut cmd = Command::new(Path::new(SBIN).join("rabbitmq-server"));
        self.env(&mut cmd);
        // Its own process group: a stop reaches the Erlang VM and its helpers.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdin(Stdio::null()).stdout(out.try_clone().expect("log")).stderr(out);
        self.child = Some(cmd.spawn().expect("start rabbitmq-server"));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("rabbitmq-server exited ({status}) before accepting connections:\n{}", self.log());
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "rabbitmq-server did not accept connections within {START_LIMIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The port opens a moment before the broker serves logins.
        let mut ctl = Command::new(Path::new(SBIN).join("rabbitmqctl"));
        self.env(&mut ctl);
        ctl.args(["-n", &format!("kgym{}@localhost", self.port), "await_startup", "--timeout", "120"]);
        let status = ctl.stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(status.is_ok_and(|s| s.success()), "rabbitmqctl await_startup failed:\n{}", self.log());
    }

    /// Stops the broker (SIGTERM: it shuts down cleanly, keeping durable
    /// queues and persistent messages on disk) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id();
            let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
            let started = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && started.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(100));
            }
            // Whatever of the group is left (usually nothing: "no such process").
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
            let _ = child.wait();
        }
    }

    /// The broker's queues with the messages each holds, ready or not
    /// (`rabbitmqctl list_queues`), sorted by name.
    pub fn queues(&self) -> Vec<(String, u64)> {
        let mut ctl = Command::new(Path::new(SBIN).join("rabbitmqctl"));
        self.env(&mut ctl);
        ctl.args(["-n", &format!("kgym{}@localhost", self.port), "list_queues", "-q", "--no-table-headers"])
            .args(["name", "messages"]);
        let out = ctl.stderr(Stdio::null()).output().expect("run rabbitmqctl");
        assert!(out.status.success(), "rabbitmqctl list_queues failed: {}", out.status);
        let mut queues: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut cols = l.split_whitespace();
                Some((cols.next()?.to_owned(), cols.next()?.parse().ok()?))
            })
            .collect();
        queues.sort();
        queues
    }

    /// Starts a stopped broker again, on the same ports and state.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        // The broker's own epmd (on its private port) outlives it.
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
