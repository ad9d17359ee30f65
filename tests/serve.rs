//! `kgym serve` as its users meet it: kGym's Python client (`requests`,
//! the token in the base URL as kcomposer scripts would have it) against
//! the real binary, reads guarded by the token, and an insecure listen
//! refused with a sentence before anything is created.

use std::path::Path;
use std::process::Command;

use kgym_testkit::server::ServerProcess;
use serde_json::{Value, json};

const TOKEN: &str = "py-t0ken";

/// `kgym serve` on a free loopback port; stopped when dropped.
fn serve(data: &Path, extra: &[&str]) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kgym"));
    cmd.arg("--data").arg(data).args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN]).args(extra);
    ServerProcess::kgym_serve(cmd)
}

/// What kGym's Python client does, with `requests`: the base URL carries
/// the token as HTTP Basic credentials. Prints one JSON object.
const CLIENT: &str = r#"
import json, sys, requests
base, anon, payload = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
out = {}
r = requests.get(base + "/jobs/?mode=by_created_time&start=0&limit=10", timeout=30)
out["list"] = [r.status_code, r.json()]
r = requests.post(base + "/jobs/new_raw_job", json=payload, timeout=30)
out["submit"] = [r.status_code, r.json()]
job = r.json()
r = requests.get(base + "/jobs/" + job, timeout=30)
out["job"] = [r.status_code, r.json().get("job-id")]
r = requests.post(base + "/jobs/" + job + "/keys", json={"composed-by": "python"}, timeout=30)
out["keys"] = [r.status_code, r.json()]
r = requests.get(base + "/jobs/kv/composed-by", timeout=30)
out["kv"] = [r.status_code, r.json()]
r = requests.get(anon + "/jobs/" + job, timeout=30)
out["anon"] = [r.status_code, r.json().get("code")]
r = requests.get(anon + "/api/v1/health", timeout=30)
out["health"] = r.status_code
print(json.dumps(out))
"#;

fn python_with_requests() -> bool {
    if kgym_testkit::require_tool("python3").is_none() {
        return false;
    }
    let ok = Command::new("python3").args(["-c", "import requests"]).status().is_ok_and(|s| s.success());
    if !ok {
        kgym_testkit::skip_or_fail("python3 cannot import requests (apt-get install python3-requests)");
    }
    ok
}

#[test]
fn kgyms_python_client_works_unchanged_with_the_token_in_its_base_url() {
    if !python_with_requests() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = serve(&data.path().join("data"), &[]);
    let base = server.url().replace("http://", &format!("http://kgym:{TOKEN}@"));
    // A kbuilder job that fails at once (its repository does not exist):
    // nothing is built here.
    let payload = json!({
        "job_workers": ["kbuilder"],
        "worker_arguments": [{"kernel-git-url": format!("file://{}/none.git", data.path().display()),
                              "kernel-commit-id": "v6.1", "kernel-config": "CONFIG_KASAN=y\n",
                              "userspace-image-name": "", "kernel-arch": "amd64"}],
        "kv": {"bug-reproduction-for": "py"}
    });
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", CLIENT, &base, server.url(), &payload.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "the Python client failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["list"][0], 200, "{got:#}");
    assert_eq!(got["list"][1]["next"], -1, "{got:#}");
    assert_eq!(got["submit"][0], 200, "{got:#}");
    let id = got["submit"][1].as_str().expect("kGym's bare id").to_owned();
    assert_eq!(got["job"], json!([200, id]));
    assert_eq!(got["keys"][0], 200, "{got:#}");
    assert_eq!(got["kv"], json!([200, [{"job-id": id, "key": "composed-by", "value": "python"}]]));
    assert_eq!(got["anon"], json!([401, "unauthorized"]), "reads without the token are refused");
    assert_eq!(got["health"], 200);
}

#[tokio::test]
async fn public_reads_open_kgym_reads_but_not_writes() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(&data.path().join("data"), &["--public-reads"]);
    let http = reqwest::Client::new();
    let list = http.get(format!("{}/jobs/?mode=by_created_time", server.url())).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let write = http.post(format!("{}/jobs/new_raw_job", server.url())).json(&json!({})).send().await.unwrap();
    assert_eq!(write.status(), 401);
}

#[test]
fn an_insecure_listen_is_refused_with_a_sentence_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for token_from_env in [false, true] {
        let mut cmd = Command::new("timeout");
        cmd.arg("60").arg(env!("CARGO_BIN_EXE_kgym")).arg("--data").arg(&data);
        cmd.args(["serve", "--listen", "0.0.0.0:0"]);
        if token_from_env {
            cmd.env("KGYM_TOKEN", "");
        } else {
            cmd.env_remove("KGYM_TOKEN").args(["--token", ""]);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("error: ") && stderr.contains("listen on 0.0.0.0:0 without a token"), "{stderr}");
        assert!(!stderr.contains("InsecureListen") && !stderr.contains('{'), "a debug dump: {stderr}");
        assert!(!data.exists(), "the refused server created {}", data.display());
    }
}
