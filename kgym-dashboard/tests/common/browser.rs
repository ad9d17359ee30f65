//! A real Chromium driven over WebDriver for the dashboard's tests and
//! bench: `chromedriver` started on a free loopback port (its process
//! group killed when the [`Browser`] drops), a headless Chromium with a
//! fresh profile, waits with timeouts, and screenshots saved under the
//! target directory when something fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{Value, json};

/// How long one wait for the page may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The flags this machine's Chromium needs (no GPU, no sandbox as root, no
/// network besides the page's own).
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A browser session and the chromedriver behind it.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    driver_log: PathBuf,
    _profile: tempfile::TempDir,
}

/// Chromium and chromedriver, when installed (else the test is skipped
/// outside CI and fails in CI).
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = kgym_testkit::require_tool("chromium")?;
    let driver = kgym_testkit::require_tool("chromedriver")?;
    Some((chromium, driver))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// Where failure screenshots go: `<target>/kgym-dashboard/`.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| kgym_testkit::workspace_root().join("target"));
    let dir = target.join("kgym-dashboard");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`.
    pub async fn start(chromium: &Path, chromedriver: &Path, width: u32, height: u32) -> Self {
        let port = free_port();
        let profile = tempfile::tempdir().expect("a profile directory");
        let driver_log = profile.path().join("chromedriver.log");
        let mut cmd = tokio::process::Command::new(chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let driver = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let url = format!("http://127.0.0.1:{port}");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().join("chrome").display()));
        args.push(format!("--window-size={width},{height}"));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match fantoccini::ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver on port {port} did not give a session in 30 s: {e}\n{}",
                        std::fs::read_to_string(&driver_log).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let mut b = Self { client, driver, driver_log, _profile: profile };
        b.client.set_window_size(width, height).await.expect("set the window size");
        b.driver_alive();
        b
    }

    fn driver_alive(&mut self) {
        if let Ok(Some(status)) = self.driver.try_wait() {
            panic!("chromedriver exited ({status}): {}", std::fs::read_to_string(&self.driver_log).unwrap_or_default());
        }
    }

    /// Saves a screenshot of the page to `path` and returns it.
    pub async fn screenshot_to(&self, path: &Path) -> Option<PathBuf> {
        match self.client.screenshot().await {
            Ok(png) => {
                std::fs::write(path, png).ok()?;
                Some(path.to_path_buf())
            }
            Err(e) => {
                eprintln!("screenshot failed: {e}");
                None
            }
        }
    }

    /// Saves a screenshot named after `what` under the target directory and
    /// prints where.
    pub async fn failure_screenshot(&self, what: &str) {
        let path = artifacts_dir().join(format!("failure-{what}.png"));
        if let Some(p) = self.screenshot_to(&path).await {
            eprintln!("dashboard test failed: screenshot at {}", p.display());
            let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            eprintln!("page: {url}");
        }
    }

    /// Ends the session and stops chromedriver (and the browsers it
    /// started: they share its process group).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        self.kill_group();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.driver.wait()).await;
    }

    fn kill_group(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Opens `url` and waits for the page to show `css`.
    pub async fn open(&self, url: &str, css: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
        self.wait_css(css).await;
    }

    /// Waits until `css` matches an element.
    pub async fn wait_css(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
    }

    /// Runs `script` (a function body; `arguments` holds `args`).
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("run {script}: {e}"))
    }

    /// Waits until `script` returns true (polled every 100 ms).
    pub async fn wait_js(&self, what: &str, script: &str, args: Vec<Value>) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.js(script, args.clone()).await == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the elements matching `css` show exactly `texts` (the
    /// page updates some of them from events queued after a click, e.g. a
    /// dialog's `close`).
    pub async fn wait_texts(&self, css: &str, texts: &[&str]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.texts(css).await;
            if now == texts {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {css} to show {texts:?}; it shows {now:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of every element matching `css`, in page order.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let v = self
            .js("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent.trim());", vec![json!(css)])
            .await;
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Clicks the element matching `css` (found again when the page
    /// replaced it between the lookup and the click: live pages re-render).
    pub async fn click(&self, css: &str) {
        for attempt in 1.. {
            match self.wait_css(css).await.click().await {
                Ok(()) => return,
                Err(e) if attempt < 10 && e.to_string().contains("stale element") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Replaces the value of the input matching `css` with `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.wait_css(css).await;
        el.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
        if !text.is_empty() {
            el.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
        }
    }

    /// Uncaught errors of the page's scripts so far.
    pub async fn page_errors(&self) -> Vec<String> {
        serde_json::from_value(self.js("return window.kgymErrors || [];", vec![]).await).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}
