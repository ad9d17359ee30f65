//! A faithful in-process fake of Google Cloud Storage's **XML API**, limited
//! to the requests `object_store` 0.14's `gcp` backend sends for objects.
//! Real GCS cannot be reached from the test machines (no network, no
//! credentials), and the available emulators do not speak this API well
//! enough (see `recipes.md`), so tests run `object_store`'s real GCS client
//! against this server instead.
//!
//! Served requests (paths are `/{bucket}/{percent-encoded object name}`):
//!
//! | request | GCS XML API operation |
//! |---|---|
//! | `PUT /b/o` (body; optional `x-goog-if-generation-match`) | upload an object |
//! | `GET /b/o` (optional `Range: bytes=…`, `?generation=`) | download |
//! | `HEAD /b/o` | object metadata |
//! | `DELETE /b/o` | delete an object |
//! | `GET /b?list-type=2&prefix=&delimiter=&continuation-token=&start-after=&max-keys=` | list (V2) |
//! | `POST /b/o?uploads` | initiate a multipart upload |
//! | `PUT /b/o?partNumber=N&uploadId=U` | upload a part |
//! | `POST /b/o?uploadId=U` (`CompleteMultipartUpload` XML) | complete |
//! | `DELETE /b/o?uploadId=U` | abort a multipart upload |
//!
//! Responses carry what the client reads: `ETag`, `Last-Modified`,
//! `Content-Length`, `Content-Type`, `x-goog-generation`,
//! `x-goog-metageneration`, `x-goog-meta-*`, `Content-Range` (206); errors
//! are GCS's XML `<Error><Code>…` documents with its status codes (404
//! `NoSuchKey`/`NoSuchBucket`/`NoSuchUpload`, 412 `PreconditionFailed`, 416
//! `InvalidRange`, 400 `InvalidPart`/`InvalidPartOrder`/`EntityTooSmall`).
//! Listings page at 1000 keys like GCS; [`FakeGcsBuilder::max_page_size`]
//! lowers that cap so tests can exercise continuation tokens cheaply.
//!
//! Authentication: by default any bearer token is accepted (the client is
//! configured with `disable_oauth`). With
//! [`FakeGcsBuilder::service_account`] the fake makes a service account
//! with a real RSA key, hands out its key JSON, and answers 401
//! `AuthenticationRequired` to any request whose bearer token is not a JWT
//! self-signed with that key for storage, valid now (see `auth.rs`).
//!
//! Not modelled: the JSON API (`object_store` uses it only
//! for OAuth tokens and `signBlob` signed URLs), copy/rewrite, object
//! versioning history (only the live generation is kept), `x-goog-hash`
//! checksums, conditional GET headers (`If-Match`, ...), `Content-Encoding`
//! and other stored attributes besides `Content-Type` and `x-goog-meta-*`.
//! ETags are SHA-256 prefixes where GCS uses MD5; both are opaque to clients.
//!
//! ```no_run
//! # async fn t() {
//! let gcs = kgym_testkit::fake_gcs::FakeGcs::builder().bucket("kgym-test").start().await.unwrap();
//! let key_json = gcs.service_account_key(); // for `GoogleCloudStorageBuilder::with_service_account_key`
//! # let _ = key_json;
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use wire::{Resume, decode_token, encode_token, parse_complete_body, parse_range, percent_decode, xml_escape};

mod auth;
mod wire;

/// GCS's cap on keys per listing page.
const GCS_MAX_KEYS: usize = 1000;
/// GCS's smallest multipart part, except the last one.
const MIN_PART_SIZE: usize = 5 << 20;

/// Configures and starts a [`FakeGcs`].
#[derive(Debug, Clone)]
pub struct FakeGcsBuilder {
    buckets: Vec<String>,
    max_page_size: usize,
    service_account: bool,
}

impl FakeGcsBuilder {
    /// Creates bucket `name` at start (requests to other buckets get 404
    /// `NoSuchBucket`).
    pub fn bucket(mut self, name: &str) -> Self {
        self.buckets.push(name.to_owned());
        self
    }

    /// Caps keys per listing page (GCS: 1000) so that pagination shows with
    /// few objects. A client's smaller `max-keys` still wins.
    pub fn max_page_size(mut self, n: usize) -> Self {
        self.max_page_size = n.clamp(1, GCS_MAX_KEYS);
        self
    }

    /// Requires every request to carry a bearer token self-signed with the
    /// key of a service account the fake makes (as GCS checks one); the
    /// key JSON is [`FakeGcs::service_account_key`].
    pub fn service_account(mut self) -> Self {
        self.service_account = true;
        self
    }

    /// Binds `127.0.0.1:0` and serves on the current tokio runtime until the
    /// returned handle is dropped.
    pub async fn start(self) -> io::Result<FakeGcs> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let account = if self.service_account { Some(auth::ServiceAccount::generate()?) } else { None };
        let shared = Arc::new(Shared {
            max_page_size: self.max_page_size,
            account,
            state: Mutex::new(Buckets {
                buckets: self.buckets.into_iter().map(|b| (b, BTreeMap::new())).collect(),
                ..Buckets::default()
            }),
        });
        let app = Router::new().fallback(handle).layer(DefaultBodyLimit::disable()).with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeGcs { addr, shared, task })
    }
}

/// A running fake GCS server (see the [module docs](self)); stops on drop.
#[derive(Debug)]
pub struct FakeGcs {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request the fake received, for assertions on what a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Bucket name (first path segment).
    pub bucket: String,
    /// Decoded object name; `None` for bucket-level requests (listings).
    pub object: Option<String>,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
}

impl FakeGcs {
    /// A builder with no buckets and GCS's 1000-key listing pages.
    pub fn builder() -> FakeGcsBuilder {
        FakeGcsBuilder { buckets: Vec::new(), max_page_size: GCS_MAX_KEYS, service_account: false }
    }

    /// `http://127.0.0.1:PORT`, the XML API endpoint.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A service-account key JSON that points `object_store` at this server
    /// (`gcs_base_url`): the fake's own account with its private key when
    /// built with [`FakeGcsBuilder::service_account`], else one without
    /// OAuth (`disable_oauth`).
    pub fn service_account_key(&self) -> String {
        if let Some(account) = &self.shared.account {
            return account.key_json(&self.base_url()).to_string();
        }
        serde_json::json!({
            "disable_oauth": true,
            "gcs_base_url": self.base_url(),
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        })
        .to_string()
    }

    /// Writes [`Self::service_account_key`] to `dir/fake-gcs-key.json` (for
    /// `GOOGLE_SERVICE_ACCOUNT`) and returns its path.
    pub fn write_service_account_key(&self, dir: &Path) -> io::Result<PathBuf> {
        let path = dir.join("fake-gcs-key.json");
        std::fs::write(&path, self.service_account_key())?;
        Ok(path)
    }

    /// The live contents of `bucket/object`, read directly (no request).
    pub fn object(&self, bucket: &str, object: &str) -> Option<Bytes> {
        self.shared.lock().buckets.get(bucket)?.get(object).map(|o| o.data.clone())
    }

    /// Every object name in `bucket`, sorted.
    pub fn object_names(&self, bucket: &str) -> Vec<String> {
        self.shared.lock().buckets.get(bucket).map(|b| b.keys().cloned().collect()).unwrap_or_default()
    }

    /// Multipart uploads initiated but neither completed nor aborted.
    pub fn pending_uploads(&self) -> usize {
        self.shared.lock().uploads.len()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.clone()
    }

    /// Requests refused for their credentials, with the reason, in arrival
    /// order (with [`FakeGcsBuilder::service_account`]).
    pub fn refused(&self) -> Vec<String> {
        self.shared.lock().refused.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }
}

#[derive(Debug)]
struct Shared {
    max_page_size: usize,
    account: Option<auth::ServiceAccount>,
    state: Mutex<Buckets>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buckets> {
        // A panicking handler must not take the whole fake down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
struct Buckets {
    buckets: HashMap<String, BTreeMap<String, Object>>,
    uploads: HashMap<String, Upload>,
    log: Vec<RecordedRequest>,
    refused: Vec<String>,
    /// Source of generations and upload ids (GCS uses microsecond
    /// timestamps; only uniqueness and growth matter).
    counter: i64,
}

impl Buckets {
    fn next_id(&mut self) -> i64 {
        let now = Utc::now().timestamp_micros();
        self.counter = now.max(self.counter + 1);
        self.counter
    }
}

#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    generation: i64,
    etag: String,
    content_type: String,
    metadata: Vec<(String, HeaderValue)>,
    updated: DateTime<Utc>,
}

#[derive(Debug)]
struct Upload {
    bucket: String,
    object: String,
    content_type: String,
    metadata: Vec<(String, HeaderValue)>,
    parts: BTreeMap<usize, (Bytes, String)>,
}

type Params = HashMap<String, String>;

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<Params>,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches('/');
    let (bucket, object) = match path.split_once('/') {
        Some((b, o)) => (percent_decode(b), Some(percent_decode(o))),
        None => (percent_decode(path), None),
    };
    let (Some(bucket), Some(object)) = (bucket, object.map_or(Some(None), |o| o.map(Some))) else {
        return error(StatusCode::BAD_REQUEST, "InvalidURI", "Couldn't parse the specified URI.", path);
    };
    let mut state = shared.lock();
    if let Some(account) = &shared.account
        && let Err(why) = account.check(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
    {
        state.refused.push(why.clone());
        return error(StatusCode::UNAUTHORIZED, "AuthenticationRequired", "Authentication required.", &why);
    }
    state.log.push(RecordedRequest {
        method: method.to_string(),
        bucket: bucket.clone(),
        object: object.clone(),
        query: query.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    });
    if !state.buckets.contains_key(&bucket) {
        return error(StatusCode::NOT_FOUND, "NoSuchBucket", "The specified bucket does not exist.", &bucket);
    }
    let Some(object) = object.filter(|o| !o.is_empty()) else {
        return match method {
            Method::GET => list(&state, shared.max_page_size, &bucket, &query),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "Only listing is served on buckets.", ""),
        };
    };
    let at = (bucket.as_str(), object.as_str());
    match method {
        Method::PUT if query.contains_key("uploadId") => put_part(&mut state, at, &query, body),
        Method::PUT => put(&mut state, at, &headers, body),
        Method::GET | Method::HEAD => get(&state, at, &method, &headers, &query),
        Method::DELETE if query.contains_key("uploadId") => abort_upload(&mut state, &query),
        Method::DELETE => delete(&mut state, at),
        Method::POST if query.contains_key("uploads") => initiate_upload(&mut state, at, &headers),
        Method::POST if query.contains_key("uploadId") => complete_upload(&mut state, at, &query, &body),
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "Method not served by the fake.", ""),
    }
}

fn put(state: &mut Buckets, (bucket, name): (&str, &str), headers: &HeaderMap, body: Bytes) -> Response {
    if let Some(expected) = headers.get("x-goog-if-generation-match") {
        let current = state.buckets[bucket].get(name).map_or(0, |o| o.generation);
        if expected.to_str().ok().and_then(|v| v.parse::<i64>().ok()) != Some(current) {
            let msg = "At least one of the pre-conditions you specified did not hold.";
            return error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed", msg, "x-goog-if-generation-match");
        }
    }
    let etag = content_etag(&body);
    let (content_type, metadata) = stored_attributes(headers);
    store(state, bucket, name, body, etag, content_type, metadata)
}

fn store(
    state: &mut Buckets,
    bucket: &str,
    name: &str,
    data: Bytes,
    etag: String,
    content_type: String,
    metadata: Vec<(String, HeaderValue)>,
) -> Response {
    let generation = state.next_id();
    let object = Object { data, generation, etag, content_type, metadata, updated: Utc::now() };
    let response = Response::builder()
        .header(header::ETAG, &object.etag)
        .header("x-goog-generation", generation)
        .header("x-goog-metageneration", 1)
        .header(header::CONTENT_LENGTH, 0);
    state.buckets.get_mut(bucket).expect("bucket checked").insert(name.to_owned(), object);
    response.body(Body::empty()).expect("valid response")
}

fn get(state: &Buckets, (bucket, name): (&str, &str), method: &Method, headers: &HeaderMap, q: &Params) -> Response {
    let live = state.buckets[bucket].get(name);
    let Some(obj) = live.filter(|o| q.get("generation").is_none_or(|g| *g == o.generation.to_string())) else {
        return no_such_key(bucket, name);
    };
    let len = obj.data.len();
    let mut response = Response::builder()
        .header(header::ETAG, &obj.etag)
        .header(header::LAST_MODIFIED, obj.updated.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .header(header::CONTENT_TYPE, &obj.content_type)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("x-goog-generation", obj.generation)
        .header("x-goog-metageneration", 1)
        .header("x-goog-stored-content-length", len)
        .header("x-goog-stored-content-encoding", "identity")
        .header("x-goog-storage-class", "STANDARD");
    for (k, v) in &obj.metadata {
        response = response.header(format!("x-goog-meta-{k}"), v);
    }
    let range = headers.get(header::RANGE).and_then(|r| r.to_str().ok()).and_then(parse_range);
    let (status, body) = match range {
        None => (StatusCode::OK, obj.data.clone()),
        Some(r) => match r.resolve(len) {
            Some((start, end)) => {
                response = response.header(header::CONTENT_RANGE, format!("bytes {start}-{}/{len}", end - 1));
                (StatusCode::PARTIAL_CONTENT, obj.data.slice(start..end))
            }
            None => {
                let msg = "The requested range cannot be satisfied.";
                let mut resp = error(StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange", msg, "");
                let value = HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii");
                resp.headers_mut().insert(header::CONTENT_RANGE, value);
                return resp;
            }
        },
    };
    response = response.status(status).header(header::CONTENT_LENGTH, body.len());
    let body = if *method == Method::HEAD { Body::empty() } else { Body::from(body) };
    response.body(body).expect("valid response")
}

fn delete(state: &mut Buckets, (bucket, name): (&str, &str)) -> Response {
    match state.buckets.get_mut(bucket).expect("bucket checked").remove(name) {
        Some(_) => status_only(StatusCode::NO_CONTENT),
        None => no_such_key(bucket, name),
    }
}

fn list(state: &Buckets, max_page_size: usize, bucket: &str, q: &Params) -> Response {
    if q.get("list-type").map(String::as_str) != Some("2") {
        return error(StatusCode::BAD_REQUEST, "NotImplemented", "The fake serves only list-type=2 listings.", "");
    }
    let prefix = q.get("prefix").map(String::as_str).unwrap_or("");
    let delimiter = q.get("delimiter").map(String::as_str).filter(|d| !d.is_empty());
    let max_keys = match q.get("max-keys").map(|m| m.parse::<usize>()) {
        None => max_page_size,
        Some(Ok(m)) => m.min(max_page_size),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "InvalidArgument", "Invalid max-keys.", ""),
    };
    let resume = match q.get("continuation-token") {
        Some(token) => match decode_token(token) {
            Some(r) => Some(r),
            None => return error(StatusCode::BAD_REQUEST, "InvalidArgument", "Invalid continuation token.", token),
        },
        None => q.get("start-after").map(|s| Resume::AfterKey(s.clone())),
    };

    let mut contents = String::new();
    let mut prefixes = String::new();
    let (mut count, mut last, mut truncated) = (0usize, None::<Resume>, false);
    let objects = state.buckets[bucket].range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix));
    for (key, obj) in objects {
        let skip = match &resume {
            Some(Resume::AfterKey(k)) => key <= k,
            Some(Resume::AfterPrefix(p)) => key.starts_with(p.as_str()) || key < p,
            None => false,
        };
        let in_last_prefix = matches!(&last, Some(Resume::AfterPrefix(p)) if key.starts_with(p.as_str()));
        if skip || in_last_prefix {
            continue;
        }
        if count == max_keys {
            truncated = true;
            break;
        }
        count += 1;
        let rest = &key[prefix.len()..];
        if let Some(idx) = delimiter.and_then(|d| rest.find(d).map(|i| i + d.len())) {
            let common = &key[..prefix.len() + idx];
            prefixes += &format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", xml_escape(common));
            last = Some(Resume::AfterPrefix(common.to_owned()));
        } else {
            contents += &format!(
                "<Contents><Key>{}</Key><Generation>{}</Generation><MetaGeneration>1</MetaGeneration>\
                 <LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass>\
                 </Contents>",
                xml_escape(key),
                obj.generation,
                obj.updated.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                xml_escape(&obj.etag),
                obj.data.len(),
            );
            last = Some(Resume::AfterKey(key.clone()));
        }
    }
    let next = match (truncated, last) {
        (true, Some(resume)) => format!("<NextContinuationToken>{}</NextContinuationToken>", encode_token(&resume)),
        _ => String::new(),
    };
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'>\
         <Name>{}</Name><Prefix>{}</Prefix><KeyCount>{count}</KeyCount><MaxKeys>{max_keys}</MaxKeys>\
         <IsTruncated>{truncated}</IsTruncated>{next}{contents}{prefixes}</ListBucketResult>",
        xml_escape(bucket),
        xml_escape(prefix),
    );
    xml_response(StatusCode::OK, xml)
}

fn initiate_upload(state: &mut Buckets, (bucket, name): (&str, &str), headers: &HeaderMap) -> Response {
    let upload_id = format!("fake-upload-{}", state.next_id());
    let (content_type, metadata) = stored_attributes(headers);
    let upload =
        Upload { bucket: bucket.to_owned(), object: name.to_owned(), content_type, metadata, parts: BTreeMap::new() };
    state.uploads.insert(upload_id.clone(), upload);
    xml_response(
        StatusCode::OK,
        format!(
            "<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult \
             xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Bucket>{}</Bucket><Key>{}</Key>\
             <UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>",
            xml_escape(bucket),
            xml_escape(name)
        ),
    )
}

fn put_part(state: &mut Buckets, (bucket, name): (&str, &str), q: &Params, body: Bytes) -> Response {
    let number = q.get("partNumber").and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=10_000).contains(n));
    let Some(number) = number else {
        return error(StatusCode::BAD_REQUEST, "InvalidArgument", "Part number must be in 1..=10000.", "");
    };
    let Some(upload) = upload_for(state, q, bucket, name) else {
        return no_such_upload(q);
    };
    let etag = content_etag(&body);
    upload.parts.insert(number, (body, etag.clone()));
    let response = Response::builder().header(header::ETAG, etag).header(header::CONTENT_LENGTH, 0);
    response.body(Body::empty()).expect("valid response")
}

fn complete_upload(state: &mut Buckets, (bucket, name): (&str, &str), q: &Params, body: &[u8]) -> Response {
    let Some(upload) = upload_for(state, q, bucket, name) else {
        return no_such_upload(q);
    };
    let Some(listed) = std::str::from_utf8(body).ok().and_then(parse_complete_body) else {
        return error(StatusCode::BAD_REQUEST, "MalformedXML", "The XML you provided was not well-formed.", "");
    };
    if listed.is_empty() || listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        let msg = "The list of parts was not in ascending order.";
        return error(StatusCode::BAD_REQUEST, "InvalidPartOrder", msg, "");
    }
    let mut data = Vec::new();
    let mut etags = String::new();
    for (i, (number, etag)) in listed.iter().enumerate() {
        let Some((bytes, stored)) = upload.parts.get(number).filter(|(_, e)| e == etag) else {
            let msg = "One or more of the specified parts could not be found.";
            return error(StatusCode::BAD_REQUEST, "InvalidPart", msg, &number.to_string());
        };
        if i + 1 < listed.len() && bytes.len() < MIN_PART_SIZE {
            let msg = "Your proposed upload is smaller than the minimum allowed object size.";
            return error(StatusCode::BAD_REQUEST, "EntityTooSmall", msg, &number.to_string());
        }
        data.extend_from_slice(bytes);
        etags += stored;
    }
    let upload_id = &q["uploadId"];
    let upload = state.uploads.remove(upload_id).expect("upload found above");
    let etag = format!("\"{}-{}\"", &hex::encode(Sha256::digest(etags.as_bytes()))[..32], listed.len());
    let stored = store(state, bucket, name, data.into(), etag.clone(), upload.content_type, upload.metadata);
    let generation = stored.headers()["x-goog-generation"].clone();
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult \
         xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Location>/{b}/{k}</Location><Bucket>{b}</Bucket>\
         <Key>{k}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
        xml_escape(&etag),
        b = xml_escape(bucket),
        k = xml_escape(name),
    );
    let mut response = xml_response(StatusCode::OK, xml);
    response.headers_mut().insert("x-goog-generation", generation);
    response
}

fn abort_upload(state: &mut Buckets, q: &Params) -> Response {
    match state.uploads.remove(&q["uploadId"]) {
        Some(_) => status_only(StatusCode::NO_CONTENT),
        None => no_such_upload(q),
    }
}

fn upload_for<'a>(state: &'a mut Buckets, q: &Params, bucket: &str, name: &str) -> Option<&'a mut Upload> {
    state.uploads.get_mut(q.get("uploadId")?).filter(|u| u.bucket == bucket && u.object == name)
}

fn stored_attributes(headers: &HeaderMap) -> (String, Vec<(String, HeaderValue)>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let metadata = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().strip_prefix("x-goog-meta-")?.to_owned(), v.clone())))
        .collect();
    (content_type, metadata)
}

fn content_etag(data: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(data))[..32])
}

fn no_such_key(bucket: &str, name: &str) -> Response {
    let details = format!("No such object: {bucket}/{name}");
    error(StatusCode::NOT_FOUND, "NoSuchKey", "The specified key does not exist.", &details)
}

fn no_such_upload(q: &Params) -> Response {
    let id = q.get("uploadId").map(String::as_str).unwrap_or("");
    error(StatusCode::NOT_FOUND, "NoSuchUpload", "The requested upload was not found.", id)
}

fn error(status: StatusCode, code: &str, message: &str, details: &str) -> Response {
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{}</Message>\
         <Details>{}</Details></Error>",
        xml_escape(message),
        xml_escape(details)
    );
    xml_response(status, xml)
}

fn xml_response(status: StatusCode, xml: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml; charset=UTF-8")
        .body(Body::from(xml))
        .expect("valid response")
}

fn status_only(status: StatusCode) -> Response {
    Response::builder().status(status).body(Body::empty()).expect("valid response")
}
