//! `kgym::artifact_store_from_url("gs://BUCKET")` (feature `gcp`) reaches
//! the bucket it names with credentials from the environment, as the
//! distributed services use it (`KGYM_ARTIFACTS=gs://...`), here against
//! kgym-testkit's fake of the GCS XML API.
//!
//! Credentials come from `GOOGLE_SERVICE_ACCOUNT`, and changing the
//! environment of a running test process is racy (and `unsafe`), so the test
//! re-runs itself as a child process with that variable pointing at a
//! `disable_oauth` key for the fake it serves.
#![cfg(feature = "gcp")]

use std::time::Duration;

use kgym::core::{ArtifactKey, JobId};
use kgym_testkit::fake_gcs::FakeGcs;

const BUCKET: &str = "kgym-facade";
const KEY: &str = "jobs/00000001/0_build/bzImage";
/// Set in the child: run the facade side.
const CHILD: &str = "KGYM_TEST_FAKE_GCS_CHILD";
const TEST_NAME: &str = "gs_url_opens_the_named_bucket_with_environment_credentials";

#[tokio::test]
async fn gs_url_opens_the_named_bucket_with_environment_credentials() {
    if std::env::var_os(CHILD).is_some() {
        // A trailing slash is accepted and dropped from the bucket name.
        let store = kgym::artifact_store_from_url(&format!("gs://{BUCKET}/")).expect("gs:// store opens");
        let key = ArtifactKey::parse(KEY).unwrap();
        store.put(&key, b"facade".to_vec()).await.unwrap();
        assert_eq!(&store.get(&key).await.unwrap()[..], b"facade");
        assert_eq!(store.list_job(JobId::new(1)).await.unwrap(), vec![key]);
        return;
    }

    let fake = FakeGcs::builder().bucket(BUCKET).start().await.expect("fake GCS starts");
    let dir = tempfile::tempdir().unwrap();
    let key_file = fake.write_service_account_key(dir.path()).unwrap();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child.args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"]);
    // Only the fake's key: no ambient Google configuration may leak in.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("GOOGLE_") || n == "SERVICE_ACCOUNT") {
            child.env_remove(name);
        }
    }
    child.env("GOOGLE_SERVICE_ACCOUNT", &key_file).env(CHILD, "1").kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), child.output())
        .await
        .expect("child test finishes within 2 minutes")
        .expect("child test starts");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child test failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child ran the facade side:\n{stdout}");
    assert_eq!(fake.object(BUCKET, KEY).as_deref(), Some(&b"facade"[..]), "the artifact is in the named bucket");
    let methods: Vec<_> = fake.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["PUT", "GET", "GET"], "put, get, one listing page");
}
