//! The GCS artifact store (`ArtifactStore::gcs_with`, feature `gcp`):
//! `object_store`'s real GCS client against kgym-testkit's in-process fake
//! of the GCS XML API (real GCS is not reachable here; most tests disable
//! OAuth, one signs every request with a real service-account key).
//! Mirrors the local store's unit tests, plus what only a remote store has:
//! multipart uploads, paginated listings, percent-encoded object names.
#![cfg(feature = "gcp")]

use std::collections::BTreeMap;

use bytes::Bytes;
use kgym_core::{ArtifactKey, ArtifactStore, Error, JobId, StageIndex, StageKind};
use kgym_testkit::fake_gcs::{FakeGcs, RecordedRequest};
use object_store::ObjectStoreExt;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as StorePath;

const BUCKET: &str = "kgym-test";

/// A fake with `BUCKET` (listing pages capped at `page` keys) and an
/// artifact store pointed at it through a `disable_oauth` service-account key.
async fn fake_store(page: usize) -> (FakeGcs, ArtifactStore) {
    let fake = FakeGcs::builder().bucket(BUCKET).max_page_size(page).start().await.expect("fake GCS starts");
    let builder =
        GoogleCloudStorageBuilder::new().with_service_account_key(fake.service_account_key()).with_bucket_name(BUCKET);
    let store = ArtifactStore::gcs_with(builder).expect("GCS store builds");
    (fake, store)
}

fn key(job: u64, stage: u32, kind: &StageKind, name: &str) -> ArtifactKey {
    ArtifactKey::for_stage(JobId::new(job), StageIndex(stage), kind, name).unwrap()
}

/// Bytes that differ at every offset of a part, so a misplaced chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0]).collect()
}

fn count(reqs: &[RecordedRequest], method: &str, has_query: &str) -> usize {
    reqs.iter().filter(|r| r.method == method && (has_query.is_empty() || r.query.contains_key(has_query))).count()
}

#[tokio::test]
async fn round_trips_like_the_local_store() {
    let (fake, store) = fake_store(1000).await;
    let (b, r) = (StageKind::build(), StageKind::reproduce());
    let k0 = key(7, 0, &b, "bzImage");
    let k1 = key(7, 1, &r, "incidents/0/log");
    store.put(&k0, b"kernel".to_vec()).await.unwrap();
    store.put(&k1, Bytes::from_static(b"log")).await.unwrap();
    assert_eq!(fake.object(BUCKET, k0.as_str()).as_deref(), Some(&b"kernel"[..]), "PUT reached the bucket");
    assert_eq!(&store.get(&k0).await.unwrap()[..], b"kernel");
    assert!(store.exists(&k1).await.unwrap());
    assert_eq!(store.list_job(JobId::new(7)).await.unwrap(), vec![k0.clone(), k1.clone()]);

    // Under BufWriter's 10 MiB buffer: one plain PUT.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    std::fs::write(&src, vec![7u8; 3 << 20]).unwrap();
    let big = key(7, 0, &b, "vmlinux");
    fake.clear_requests();
    store.put_file(&big, &src).await.unwrap();
    let reqs = fake.requests();
    assert_eq!((count(&reqs, "PUT", ""), count(&reqs, "POST", "")), (1, 0), "{reqs:?}");
    let dst = dir.path().join("out/vmlinux");
    store.get_to_file(&big, &dst).await.unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), vec![7u8; 3 << 20]);

    assert_eq!(store.delete_stages_from(JobId::new(7), StageIndex(1)).await.unwrap(), 1);
    assert!(!store.exists(&k1).await.unwrap());
    assert!(store.exists(&k0).await.unwrap());
    assert_eq!(fake.object_names(BUCKET), vec![k0.to_string(), big.to_string()]);
    let missing = ArtifactKey::parse("jobs/00000009/0_build/none").unwrap();
    assert!(matches!(store.get(&missing).await, Err(Error::ArtifactNotFound { .. })));
}

#[tokio::test]
async fn binary_data_survives_and_overwrites_replace() {
    let (fake, store) = fake_store(1000).await;
    let k = key(1, 0, &StageKind::build(), "config");
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    store.put(&k, all_bytes.clone()).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), all_bytes);
    let path = StorePath::from(k.as_str());
    let first = store.object_store().head(&path).await.unwrap();
    assert_eq!(first.size, 70_000);

    store.put(&k, b"CONFIG_KASAN=y\n".to_vec()).await.unwrap();
    assert_eq!(&store.get(&k).await.unwrap()[..], b"CONFIG_KASAN=y\n");
    let second = store.object_store().head(&path).await.unwrap();
    assert_eq!(second.size, 15);
    assert_ne!(first.e_tag, second.e_tag, "ETag follows content");
    let generation = |v: Option<String>| v.expect("x-goog-generation").parse::<i64>().unwrap();
    assert!(generation(second.version) > generation(first.version), "a new generation per write");
    assert_eq!(fake.object_names(BUCKET), vec![k.to_string()]);

    // Empty objects are objects too.
    let empty = key(1, 0, &StageKind::build(), "empty");
    store.put(&empty, Vec::new()).await.unwrap();
    assert!(store.exists(&empty).await.unwrap());
    assert!(store.get(&empty).await.unwrap().is_empty());
}

#[tokio::test]
async fn large_files_use_a_multipart_upload_and_read_back_exactly() {
    let (fake, store) = fake_store(1000).await;
    let data = pattern(25 << 20);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("vmlinux");
    std::fs::write(&src, &data).unwrap();
    let k = key(3, 0, &StageKind::build(), "vmlinux");
    store.put_file(&k, &src).await.unwrap();

    // BufWriter switches to multipart past 10 MiB: initiate, 3 parts
    // (10 + 10 + 5 MiB), complete.
    let reqs = fake.requests();
    assert_eq!(count(&reqs, "POST", "uploads"), 1, "{reqs:?}");
    assert_eq!(count(&reqs, "PUT", "partNumber"), 3);
    assert_eq!(count(&reqs, "POST", "uploadId"), 1);
    assert_eq!(fake.pending_uploads(), 0, "the upload was completed");
    assert!(fake.object(BUCKET, k.as_str()).unwrap() == data, "parts assembled in order");

    let dst = dir.path().join("copy");
    store.get_to_file(&k, &dst).await.unwrap();
    assert!(std::fs::read(&dst).unwrap() == data);
    assert!(store.get(&k).await.unwrap() == data);
    let meta = store.object_store().head(&StorePath::from(k.as_str())).await.unwrap();
    assert_eq!(meta.size, 25 << 20);
    assert!(meta.e_tag.unwrap().ends_with("-3\""), "composite ETag of 3 parts");

    // Ranged reads (object_store resumes interrupted downloads with them).
    let path = StorePath::from(k.as_str());
    let start = (10 << 20) - 3;
    let part = store.object_store().get_range(&path, start..start + 10).await.unwrap();
    assert_eq!(&part[..], &data[start as usize..start as usize + 10]);
    assert!(fake.requests().iter().any(|r| r.method == "GET" && r.object.as_deref() == Some(k.as_str())));
}

#[tokio::test]
async fn listing_follows_continuation_tokens_and_stays_in_the_job() {
    // Pages of 7 keys: 30 objects of job 42 take 5 list requests.
    let (fake, store) = fake_store(7).await;
    let (b, r) = (StageKind::build(), StageKind::reproduce());
    let mut expected = Vec::new();
    for i in 0..30 {
        let k = if i % 3 == 0 {
            key(42, 0, &b, &format!("f{i:02}"))
        } else {
            key(42, 1, &r, &format!("incidents/{i}/log"))
        };
        store.put(&k, format!("{i}").into_bytes()).await.unwrap();
        expected.push(k);
    }
    // A name that shares the job's text but not its folder stays out.
    for other in [key(43, 0, &b, "bzImage"), ArtifactKey::parse("jobs/0000002abc/0_build/x").unwrap()] {
        store.put(&other, b"x".to_vec()).await.unwrap();
    }
    expected.sort();

    fake.clear_requests();
    assert_eq!(store.list_job(JobId::new(42)).await.unwrap(), expected);
    let lists: Vec<_> = fake.requests().into_iter().filter(|r| r.object.is_none()).collect();
    assert_eq!(lists.len(), 5, "{lists:?}");
    assert!(lists.iter().all(|r| r.query.get("prefix").map(String::as_str) == Some("jobs/0000002a/")));
    assert!(lists.iter().all(|r| r.query.get("list-type").map(String::as_str) == Some("2")));
    assert_eq!(lists.iter().filter(|r| r.query.contains_key("continuation-token")).count(), 4);

    // Restart semantics: drop stage 1 onwards, over several pages again.
    assert_eq!(store.delete_stages_from(JobId::new(42), StageIndex(1)).await.unwrap(), 20);
    let left = store.list_job(JobId::new(42)).await.unwrap();
    assert_eq!(left, expected.iter().filter(|k| k.as_str().contains("/0_build/")).cloned().collect::<Vec<_>>());
    assert_eq!(fake.object_names(BUCKET).len(), 12, "other jobs untouched");
    assert!(store.list_job(JobId::new(44)).await.unwrap().is_empty());
}

#[tokio::test]
async fn delimiter_listing_groups_folders_across_pages() {
    let (_fake, store) = fake_store(2).await;
    let b = StageKind::build();
    for name in ["a/1", "a/2", "a/3", "b/1", "c", "d/1", "e"] {
        store.put(&key(5, 0, &b, name), b"x".to_vec()).await.unwrap();
    }
    let prefix = StorePath::from("jobs/00000005/0_build");
    let listed = store.object_store().list_with_delimiter(Some(&prefix)).await.unwrap();
    let folders: Vec<_> = listed.common_prefixes.iter().map(|p| p.to_string()).collect();
    let files: Vec<_> = listed.objects.iter().map(|o| o.location.to_string()).collect();
    let under = |s: &str| format!("jobs/00000005/0_build/{s}");
    assert_eq!(folders, vec![under("a"), under("b"), under("d")]);
    assert_eq!(files, vec![under("c"), under("e")]);
}

#[tokio::test]
async fn object_names_are_percent_encoded_both_ways() {
    let (fake, store) = fake_store(1000).await;
    // Every character a key may hold reaches GCS verbatim (keys refuse
    // non-ASCII and `%#?*|<>[]{}^~"\``, which object_store would
    // percent-encode, so a listing would return another spelling).
    let k = key(6, 0, &StageKind::build(), "odd names/a b+c=d&e,f;g@h/x!$'()y.log");
    store.put(&k, b"odd".to_vec()).await.unwrap();
    assert_eq!(fake.object_names(BUCKET), vec![k.to_string()], "the fake decoded the name");
    assert_eq!(&store.get(&k).await.unwrap()[..], b"odd");
    assert_eq!(store.list_job(JobId::new(6)).await.unwrap(), vec![k.clone()]);
    store.delete(&k).await.unwrap();
    assert!(fake.object_names(BUCKET).is_empty());
}

#[tokio::test]
async fn missing_artifacts_are_typed_not_found() {
    let (fake, store) = fake_store(1000).await;
    let missing = key(9, 0, &StageKind::build(), "bzImage");
    let err = store.get(&missing).await.unwrap_err();
    assert!(matches!(&err, Error::ArtifactNotFound { key } if key == missing.as_str()), "{err:?}");
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("out");
    let err = store.get_to_file(&missing, &dst).await.unwrap_err();
    assert!(matches!(err, Error::ArtifactNotFound { .. }), "{err:?}");
    assert!(!dst.exists(), "no file is created for a missing artifact");
    assert!(!store.exists(&missing).await.unwrap());
    // GCS answers 404 to deleting a missing object; the store treats it as done.
    store.delete(&missing).await.unwrap();
    let reqs = fake.requests();
    assert_eq!(count(&reqs, "DELETE", ""), 1);
    assert_eq!(count(&reqs, "GET", "") + count(&reqs, "HEAD", ""), 3);
}

#[tokio::test]
async fn escaping_keys_are_refused_before_any_request() {
    let (fake, store) = fake_store(1000).await;
    for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "a/./b", "a\\b", "a\nb", ""] {
        assert!(matches!(ArtifactKey::parse(bad), Err(Error::InvalidArtifactKey { .. })), "{bad:?} accepted");
    }
    for bad in ["../../etc/shadow", "/abs", "x/..", ""] {
        let r = ArtifactKey::for_stage(JobId::new(1), StageIndex(0), &StageKind::build(), bad);
        assert!(matches!(r, Err(Error::InvalidArtifactKey { .. })), "{bad:?} accepted");
    }
    assert!(serde_json::from_str::<ArtifactKey>("\"../../etc/shadow\"").is_err());
    assert!(fake.requests().is_empty(), "nothing was sent: {:?}", fake.requests());
    // The store is usable and was never touched.
    assert!(store.list_job(JobId::new(1)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_bucket_or_configuration_is_an_error() {
    let (fake, _) = fake_store(1000).await;
    let builder =
        GoogleCloudStorageBuilder::new().with_service_account_key(fake.service_account_key()).with_bucket_name("nope");
    let store = ArtifactStore::gcs_with(builder).unwrap();
    let k = key(1, 0, &StageKind::build(), "x");
    let err = store.put(&k, b"x".to_vec()).await.unwrap_err();
    assert!(matches!(&err, Error::Artifact { key, .. } if key == k.as_str()), "{err:?}");
    assert!(fake.object_names("nope").is_empty());

    let err = ArtifactStore::gcs_with(GoogleCloudStorageBuilder::new()).unwrap_err();
    assert!(matches!(err, Error::Artifact { .. }), "no bucket name: {err:?}");
    let seen: BTreeMap<_, _> = fake.requests().into_iter().map(|r| (r.bucket, r.method)).collect();
    assert_eq!(seen, BTreeMap::from([("nope".to_owned(), "PUT".to_owned())]));
}

#[tokio::test]
async fn generation_preconditions_answer_412() {
    // Not used by ArtifactStore today; checks the fake's precondition path
    // the way object_store's create-only puts use it.
    let (_fake, store) = fake_store(1000).await;
    let path = StorePath::from("jobs/00000001/0_build/lock");
    let create = || object_store::PutOptions::from(object_store::PutMode::Create);
    store.object_store().put_opts(&path, b"a".to_vec().into(), create()).await.unwrap();
    let err = store.object_store().put_opts(&path, b"b".to_vec().into(), create()).await.unwrap_err();
    assert!(matches!(err, object_store::Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(&store.get(&ArtifactKey::parse(path.as_ref()).unwrap()).await.unwrap()[..], b"a");
}

/// The deployment's path: a service-account key JSON with a real private
/// key. `object_store` signs a JWT with it for every request and the fake
/// checks each one with the public half, as GCS does; a key whose private
/// half is not the account's, or no key at all, is refused (401) and
/// writes nothing.
#[tokio::test]
async fn a_service_account_key_signs_every_request() {
    let fake = FakeGcs::builder().bucket(BUCKET).service_account().start().await.expect("fake GCS starts");
    let key_json = fake.service_account_key();
    let parsed: serde_json::Value = serde_json::from_str(&key_json).unwrap();
    assert_eq!(parsed["type"], "service_account");
    assert!(parsed["private_key"].as_str().unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(parsed.get("disable_oauth").is_none());
    let store_with = |json: String| {
        ArtifactStore::gcs_with(
            GoogleCloudStorageBuilder::new().with_service_account_key(json).with_bucket_name(BUCKET),
        )
        .expect("GCS store builds")
    };

    let store = store_with(key_json.clone());
    let k = key(3, 0, &StageKind::build(), "bzImage");
    store.put(&k, b"kernel".to_vec()).await.unwrap();
    assert_eq!(&store.get(&k).await.unwrap()[..], b"kernel");
    assert_eq!(store.list_job(JobId::new(3)).await.unwrap(), vec![k.clone()]);
    assert!(fake.refused().is_empty(), "{:?}", fake.refused());
    assert!(fake.requests().len() >= 3);

    // The same account id and e-mail with another account's private key.
    let other = FakeGcs::builder().service_account().start().await.unwrap();
    let mut forged = parsed.clone();
    forged["private_key"] =
        serde_json::from_str::<serde_json::Value>(&other.service_account_key()).unwrap()["private_key"].clone();
    let k2 = key(3, 0, &StageKind::build(), "vmlinux");
    let err = store_with(forged.to_string()).put(&k2, b"x".to_vec()).await.unwrap_err();
    assert!(matches!(&err, Error::Artifact { .. }), "{err:?}");
    assert!(fake.refused().iter().any(|r| r.contains("signature")), "{:?}", fake.refused());

    // No credentials (an emulator's key) against a bucket that wants them.
    let mut open = parsed.clone();
    open["disable_oauth"] = true.into();
    let err = store_with(open.to_string()).get(&k).await.unwrap_err();
    assert!(matches!(&err, Error::Artifact { .. }), "{err:?}");
    assert_eq!(fake.object_names(BUCKET), vec![k.to_string()], "refused requests write nothing");
}
