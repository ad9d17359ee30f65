//! The artifact store: files a stage produces (kernels, logs, reports),
//! kept in any `object_store` backend under a fixed key layout
//! `jobs/{job}/{stage}_{kind}/{name}`.
//!
//! The local directory backend is the default; the in-memory one serves
//! tests; GCS (feature `gcp`) serves distributed deployments.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::id::{JobId, StageIndex, StageKind};

/// Longest accepted key, in bytes (GCS allows 1024).
const MAX_KEY_LEN: usize = 1024;

/// A validated artifact key: relative, `/`-separated, no `.`/`..` or empty
/// segments, no backslashes or control characters. Keys can therefore never
/// escape the store's root, whatever a client sends.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ArtifactKey(String);

impl ArtifactKey {
    /// Validates an arbitrary key.
    pub fn parse(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        validate_relative(&key, "key").map_err(|reason| Error::InvalidArtifactKey { key: key.clone(), reason })?;
        Ok(Self(key))
    }

    /// The key of artifact `name` of stage `stage` (of `kind`) of `job`:
    /// `jobs/{job}/{stage}_{kind}/{name}`. `name` may contain `/`.
    ///
    /// ```
    /// use kgym_core::{ArtifactKey, JobId, StageIndex, StageKind};
    /// let k = ArtifactKey::for_stage(JobId::new(1), StageIndex(0), &StageKind::build(), "bzImage").unwrap();
    /// assert_eq!(k.as_str(), "jobs/00000001/0_build/bzImage");
    /// assert!(ArtifactKey::for_stage(JobId::new(1), StageIndex(0), &StageKind::build(), "../x").is_err());
    /// ```
    pub fn for_stage(job: JobId, stage: StageIndex, kind: &StageKind, name: &str) -> Result<Self> {
        validate_relative(name, "name").map_err(|reason| Error::InvalidArtifactKey { key: name.to_owned(), reason })?;
        Ok(Self(format!("{}/{name}", stage_prefix(job, stage, kind))))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment (the file name).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    fn store_path(&self) -> StorePath {
        StorePath::from(self.0.as_str())
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactKey({})", self.0)
    }
}

impl<'de> Deserialize<'de> for ArtifactKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `jobs/{job}/{stage}_{kind}`: the folder of one stage's artifacts.
pub fn stage_prefix(job: JobId, stage: StageIndex, kind: &StageKind) -> String {
    format!("jobs/{job}/{stage}_{kind}")
}

/// ASCII characters refused in keys (see [`validate_relative`]).
const RESERVED_KEY_CHARS: &str = "%#?*|<>[]{}^~\"`";

fn validate_relative(key: &str, what: &'static str) -> std::result::Result<(), &'static str> {
    if key.is_empty() {
        return Err(if what == "name" { "empty name" } else { "empty key" });
    }
    if key.len() > MAX_KEY_LEN {
        return Err("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return Err("absolute path");
    }
    if key.chars().any(|c| c == '\\' || c.is_control()) {
        return Err("backslash or control character");
    }
    // Object stores percent-encode these (and every non-ASCII character)
    // in object names, so such a key would be listed back under another
    // spelling and its local file would not be where `local_path` says.
    if key.chars().any(|c| !c.is_ascii() || RESERVED_KEY_CHARS.contains(c)) {
        return Err("non-ASCII or reserved character (one of % # ? * | < > [ ] { } ^ ~ \" `)");
    }
    for seg in key.split('/') {
        match seg {
            "" => return Err("empty path segment"),
            "." | ".." => return Err("'.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Where artifacts live: a thin layer over any [`ObjectStore`].
#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    /// Set for the local-directory backend, so callers can be shown (and can
    /// read) the file behind a key without a copy.
    local_root: Option<PathBuf>,
}

impl fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("store", &self.store.to_string())
            .field("local_root", &self.local_root)
            .finish()
    }
}

impl ArtifactStore {
    /// A store in local directory `dir` (created if missing).
    pub fn local(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_owned(), source })?;
        let dir = dir.canonicalize().map_err(|source| Error::Io { path: dir.to_owned(), source })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|source| Error::Artifact { key: dir.display().to_string(), source })?
            .with_automatic_cleanup(true);
        Ok(Self { store: Arc::new(fs), local_root: Some(dir) })
    }

    /// An in-memory store (tests, throw-away runs).
    pub fn in_memory() -> Self {
        Self { store: Arc::new(object_store::memory::InMemory::new()), local_root: None }
    }

    /// Wraps any object store (GCS, S3, ...).
    pub fn from_object_store(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, local_root: None }
    }

    /// A GCS bucket, with credentials from the environment
    /// (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, ...).
    #[cfg(feature = "gcp")]
    pub fn gcs(bucket: &str) -> Result<Self> {
        Self::gcs_with(object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket))
    }

    /// A GCS bucket configured by `builder` (bucket name, credentials, and
    /// e.g. `with_base_url` or a service-account key with `gcs_base_url` to
    /// reach an emulator), without reading the environment.
    #[cfg(feature = "gcp")]
    pub fn gcs_with(builder: object_store::gcp::GoogleCloudStorageBuilder) -> Result<Self> {
        use object_store::gcp::GoogleConfigKey;
        let bucket = builder.get_config_value(&GoogleConfigKey::Bucket).unwrap_or_default();
        let store = builder.build().map_err(|source| Error::Artifact { key: format!("gs://{bucket}"), source })?;
        Ok(Self::from_object_store(Arc::new(store)))
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The file behind `key` for the local-directory backend; `None` for
    /// remote backends.
    pub fn local_path(&self, key: &ArtifactKey) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(key.as_str()))
    }

    /// Stores `data` under `key`, replacing what was there.
    pub async fn put(&self, key: &ArtifactKey, data: impl Into<Bytes>) -> Result<()> {
        self.store
            .put(&key.store_path(), PutPayload::from_bytes(data.into()))
            .await
            .map(|_| ())
            .map_err(|source| Error::Artifact { key: key.to_string(), source })
    }

    /// Stores the file at `path` under `key`, streaming it (kernels with
    /// debug info are hundreds of MB).
    pub async fn put_file(&self, key: &ArtifactKey, path: &Path) -> Result<()> {
        let io_err = |source| Error::Io { path: path.to_owned(), source };
        let mut file = tokio::fs::File::open(path).await.map_err(io_err)?;
        let mut writer = object_store::buffered::BufWriter::new(Arc::clone(&self.store), key.store_path());
        tokio::io::copy(&mut file, &mut writer).await.map_err(io_err)?;
        writer.shutdown().await.map_err(io_err)?;
        Ok(())
    }

    /// Stores the file at `path` under `key`, taking it over: in a local
    /// store the file is moved in (a rename, no copy, when both are on one
    /// filesystem); elsewhere it is uploaded, then removed. For outputs a
    /// caller is done with (a stage's build products).
    pub async fn put_file_moved(&self, key: &ArtifactKey, path: &Path) -> Result<()> {
        let io_err = |source| Error::Io { path: path.to_owned(), source };
        if let Some(dst) = self.local_path(key) {
            if let Some(parent) = dst.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(io_err)?;
            }
            match tokio::fs::rename(path, &dst).await {
                Ok(()) => return Ok(()),
                // Another filesystem (EXDEV) or a directory in the way:
                // fall back to a copy through the store.
                Err(e) => tracing::debug!(error = %e, from = %path.display(), "cannot move into the store; copying"),
            }
        }
        self.put_file(key, path).await?;
        tokio::fs::remove_file(path).await.map_err(io_err)
    }

    /// A local file with the artifact's content, for reading only: in a
    /// local store the stored file itself (no copy); elsewhere the artifact
    /// downloaded to `scratch`. Never write to the returned path.
    pub async fn local_copy(&self, key: &ArtifactKey, scratch: &Path) -> Result<PathBuf> {
        if let Some(p) = self.local_path(key)
            && tokio::fs::metadata(&p).await.is_ok_and(|m| m.is_file())
        {
            return Ok(p);
        }
        self.get_to_file(key, scratch).await?;
        Ok(scratch.to_owned())
    }

    /// Reads the whole artifact.
    pub async fn get(&self, key: &ArtifactKey) -> Result<Bytes> {
        let res = self.store.get(&key.store_path()).await.map_err(|e| self.map_err(key, e))?;
        res.bytes().await.map_err(|e| self.map_err(key, e))
    }

    /// Copies the artifact into local file `path` (parent directories are
    /// created), streaming it.
    pub async fn get_to_file(&self, key: &ArtifactKey, path: &Path) -> Result<()> {
        let io_err = |source| Error::Io { path: path.to_owned(), source };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_err)?;
        }
        let res = self.store.get(&key.store_path()).await.map_err(|e| self.map_err(key, e))?;
        let mut stream = res.into_stream();
        let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.map_err(key, e))? {
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        Ok(())
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &ArtifactKey) -> Result<bool> {
        match self.store.head(&key.store_path()).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(Error::Artifact { key: key.to_string(), source }),
        }
    }

    /// Every key under `prefix` (a folder such as `jobs/0000002a`), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ArtifactKey>> {
        let p = StorePath::from(prefix);
        let metas: Vec<_> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|source| Error::Artifact { key: prefix.to_owned(), source })?;
        let mut keys: Vec<ArtifactKey> =
            metas.into_iter().filter_map(|m| ArtifactKey::parse(m.location.to_string()).ok()).collect();
        keys.sort();
        Ok(keys)
    }

    /// Every artifact of `job`, sorted.
    pub async fn list_job(&self, job: JobId) -> Result<Vec<ArtifactKey>> {
        self.list(&format!("jobs/{job}")).await
    }

    /// Every artifact of `job` with its size, sorted by key.
    pub async fn list_job_sizes(&self, job: JobId) -> Result<Vec<(ArtifactKey, u64)>> {
        let prefix = format!("jobs/{job}");
        let metas: Vec<_> = self
            .store
            .list(Some(&StorePath::from(prefix.as_str())))
            .try_collect()
            .await
            .map_err(|source| Error::Artifact { key: prefix, source })?;
        let mut out: Vec<(ArtifactKey, u64)> = metas
            .into_iter()
            .filter_map(|m| Some((ArtifactKey::parse(m.location.to_string()).ok()?, m.size)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The artifact as a stream of chunks with its size (for serving it
    /// without holding it in memory).
    pub async fn stream(&self, key: &ArtifactKey) -> Result<(u64, futures::stream::BoxStream<'static, Result<Bytes>>)> {
        let res = self.store.get(&key.store_path()).await.map_err(|e| self.map_err(key, e))?;
        let size = res.meta.size;
        let k = key.to_string();
        let stream = res.into_stream().map_err(move |source| Error::Artifact { key: k.clone(), source });
        Ok((size, Box::pin(stream)))
    }

    /// Deletes one artifact (missing is fine).
    pub async fn delete(&self, key: &ArtifactKey) -> Result<()> {
        match self.store.delete(&key.store_path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::Artifact { key: key.to_string(), source }),
        }
    }

    /// Deletes the artifacts of every stage `>= from` of `job` (restart
    /// semantics); returns how many were deleted.
    pub async fn delete_stages_from(&self, job: JobId, from: StageIndex) -> Result<usize> {
        let mut n = 0;
        for key in self.list_job(job).await? {
            // jobs/{job}/{stage}_{kind}/...
            let stage =
                key.as_str().split('/').nth(2).and_then(|s| s.split_once('_')).and_then(|(i, _)| i.parse::<u32>().ok());
            if stage.is_some_and(|s| s >= from.0) {
                self.delete(&key).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn map_err(&self, key: &ArtifactKey, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::ArtifactNotFound { key: key.to_string() },
            source => Error::Artifact { key: key.to_string(), source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a\\b", "a\0b", "jobs/"] {
            assert!(ArtifactKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ArtifactKey::parse("x".repeat(1025)).is_err());
        assert!(ArtifactKey::parse("jobs/00000001/0_build/bzImage").is_ok());
        assert!(serde_json::from_str::<ArtifactKey>("\"../../etc/shadow\"").is_err());
        let kind = StageKind::build();
        assert!(ArtifactKey::for_stage(JobId::new(1), StageIndex(0), &kind, "/abs").is_err());
        let nested = ArtifactKey::for_stage(JobId::new(1), StageIndex(2), &kind, "incidents/0/log").unwrap();
        assert_eq!(nested.as_str(), "jobs/00000001/2_build/incidents/0/log");
        assert_eq!(nested.file_name(), "log");
    }

    #[test]
    fn keys_that_object_stores_would_respell_are_refused() {
        for bad in ["a/ü.log", "a/b%20c", "a/b#c", "a/b?c", "a/[x]", "a/b~"] {
            let err = ArtifactKey::parse(bad).unwrap_err().to_string();
            assert!(err.contains("reserved character"), "{bad:?}: {err}");
        }
        // What stays verbatim in GCS, S3 and on disk is accepted.
        let ok = "jobs/00000001/1_reproduce/incidents/0-0/a b+c=d,e;f@g!h$i'j(k)l&m:n.log";
        let key = ArtifactKey::parse(ok).unwrap();
        assert_eq!(key.store_path().as_ref(), ok);
    }

    async fn round_trip(store: ArtifactStore) {
        let job = JobId::new(7);
        let b = StageKind::build();
        let r = StageKind::reproduce();
        let k0 = ArtifactKey::for_stage(job, StageIndex(0), &b, "bzImage").unwrap();
        let k1 = ArtifactKey::for_stage(job, StageIndex(1), &r, "incidents/0/log").unwrap();
        store.put(&k0, b"kernel".to_vec()).await.unwrap();
        store.put(&k1, Bytes::from_static(b"log")).await.unwrap();
        assert_eq!(&store.get(&k0).await.unwrap()[..], b"kernel");
        assert!(store.exists(&k1).await.unwrap());
        assert_eq!(store.list_job(job).await.unwrap(), vec![k0.clone(), k1.clone()]);

        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big");
        std::fs::write(&src, vec![7u8; 3 << 20]).unwrap();
        let big = ArtifactKey::for_stage(job, StageIndex(0), &b, "vmlinux").unwrap();
        store.put_file(&big, &src).await.unwrap();
        let dst = dir.path().join("out/vmlinux");
        store.get_to_file(&big, &dst).await.unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), vec![7u8; 3 << 20]);

        assert_eq!(store.delete_stages_from(job, StageIndex(1)).await.unwrap(), 1);
        assert!(!store.exists(&k1).await.unwrap());
        assert!(store.exists(&k0).await.unwrap());
        let missing = ArtifactKey::parse("jobs/00000009/0_build/none").unwrap();
        assert!(matches!(store.get(&missing).await, Err(Error::ArtifactNotFound { .. })));
    }

    #[tokio::test]
    async fn in_memory_store_round_trips() {
        round_trip(ArtifactStore::in_memory()).await;
    }

    #[tokio::test]
    async fn local_store_round_trips_and_exposes_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let key = ArtifactKey::parse("jobs/00000001/0_build/config").unwrap();
        store.put(&key, b"CONFIG_X=y\n".to_vec()).await.unwrap();
        let path = store.local_path(&key).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "CONFIG_X=y\n");
        round_trip(store).await;
    }

    /// Writes a file of `len` bytes into `dir` and returns its path.
    fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, vec![3u8; len]).unwrap();
        p
    }

    #[tokio::test]
    async fn a_local_store_takes_files_over_and_hands_them_out_without_copies() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path().join("store")).unwrap();
        let key = ArtifactKey::parse("jobs/00000002/0_build/vmlinux").unwrap();
        let src = file(dir.path(), "vmlinux", 1 << 20);
        let inode = std::fs::metadata(&src).unwrap().ino();
        store.put_file_moved(&key, &src).await.unwrap();
        assert!(!src.exists(), "the source was taken over");
        let stored = store.local_path(&key).unwrap();
        assert_eq!(std::fs::metadata(&stored).unwrap().ino(), inode, "moved, not copied");
        let read = store.local_copy(&key, &dir.path().join("scratch/vmlinux")).await.unwrap();
        assert_eq!(read, stored, "read in place, not copied");
        assert!(!dir.path().join("scratch/vmlinux").exists());
        let missing = ArtifactKey::parse("jobs/00000002/0_build/none").unwrap();
        let err = store.local_copy(&missing, &dir.path().join("x")).await.unwrap_err();
        assert!(matches!(err, Error::ArtifactNotFound { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn other_stores_upload_moved_files_and_download_copies() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::in_memory();
        let key = ArtifactKey::parse("jobs/00000003/0_build/bzImage").unwrap();
        let src = file(dir.path(), "bzImage", 4096);
        store.put_file_moved(&key, &src).await.unwrap();
        assert!(!src.exists(), "the source was removed after the upload");
        let copy = dir.path().join("scratch/bzImage");
        assert_eq!(store.local_copy(&key, &copy).await.unwrap(), copy);
        assert_eq!(std::fs::read(&copy).unwrap(), vec![3u8; 4096]);
    }
}
