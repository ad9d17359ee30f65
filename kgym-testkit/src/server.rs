//! A server process a test or a bench starts (`kgym serve`, a scheduler
//! role of the bench binary itself): its URL read from what it prints, the
//! rest of its output drained so it never blocks on a full pipe, and on
//! drop a SIGTERM (it hands stages back and stops its children), then
//! SIGKILL after 20 s, and the process reaped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server process; stopped when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    /// Spawns `cmd`, a `kgym serve` command line, and waits for its line
    /// `kgym: serving URL ...` on stderr; every other line is echoed to the
    /// test's stderr as `[kgym serve] ...`.
    pub fn kgym_serve(mut cmd: Command) -> Self {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("start kgym serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let url = loop {
            let line = lines.next().expect("kgym serve exited before serving").expect("read kgym serve's log");
            eprintln!("[kgym serve] {line}");
            if let Some(rest) = line.strip_prefix("kgym: serving ") {
                break rest.split_whitespace().next().expect("a URL after `serving`").to_owned();
            }
        };
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("[kgym serve] {l}")));
        Self { child, url }
    }

    /// Spawns `cmd`, whose first line on stdout is its URL.
    pub fn url_on_stdout(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("start the server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the server's URL");
        Self { child, url: line.trim().to_owned() }
    }

    /// Where it serves, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
