//! [`HttpScheduler`]: the [`Scheduler`] trait over the HTTP API, so a
//! harness switches from the embedded gym to a server by changing one line.

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use kgym_core::{Job, JobId, JobSpec, StageIndex, Tags};
use reqwest::Method;
use serde::Deserialize;

use super::conn::Conn;
use crate::error::{Error, Result};
use crate::scheduler::{EventStream, Scheduler};
use crate::types::{
    JobEvent, JobLogEntry, JobSummary, ListQuery, LogQuery, Page, Stats, StatsQuery, StatusCounts, SystemLogEntry,
    SystemLogQuery, TagMatch, TagQuery, WorkerStatus,
};

/// A scheduler reached over HTTP. The token goes with every request
/// ([`with_token`](Self::with_token), or in the URL as
/// `http://user:TOKEN@host:port`, sent as HTTP Basic auth).
///
/// ```no_run
/// # async fn f() -> kgym_sched::Result<()> {
/// use std::sync::Arc;
/// use kgym_sched::{Scheduler, SchedulerExt, http::HttpScheduler};
/// let sched: Arc<dyn Scheduler> = Arc::new(HttpScheduler::new("http://127.0.0.1:8000")?.with_token("secret"));
/// let job = sched.get("0000002a".parse().unwrap()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HttpScheduler {
    conn: Conn,
}

#[derive(Deserialize)]
struct Submitted {
    id: JobId,
}

fn enc(s: &str) -> String {
    // Path segments: encode everything but unreserved characters.
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query<T: serde::Serialize>(q: &T) -> Result<String> {
    let v = serde_json::to_value(q).map_err(|source| Error::Decode {
        method: "encode".into(),
        url: "query".into(),
        source,
    })?;
    let mut parts = Vec::new();
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            let text = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            parts.push(format!("{}={}", enc(&k), enc(&text)));
        }
    }
    Ok(if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) })
}

impl HttpScheduler {
    /// A client of the server at `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self { conn: Conn::new(url, None)? })
    }

    /// Sends `Authorization: Bearer <token>` with every request (reads
    /// too: a server with a token guards them).
    pub fn with_token(self, token: impl Into<String>) -> Self {
        let token = token.into();
        Self { conn: Conn::new(self.conn.base(), Some(token)).unwrap_or(self.conn) }
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        self.conn.base()
    }

    /// Calls a route the server serves beside the scheduler API (one merged
    /// in by another crate): `method path` with `body` as JSON, the answer
    /// decoded as `T`; error answers become [`Error::Remote`].
    pub async fn call<B: serde::Serialize + Sync, T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        self.conn.json(method, path, body).await
    }
}

#[async_trait]
impl Scheduler for HttpScheduler {
    async fn submit(&self, spec: JobSpec) -> Result<JobId> {
        let s: Submitted = self.conn.json(Method::POST, "/api/v1/jobs", Some(&spec)).await?;
        Ok(s.id)
    }

    async fn get(&self, id: JobId) -> Result<Job> {
        self.conn.json(Method::GET, &format!("/api/v1/jobs/{id}"), None::<&()>).await
    }

    async fn list(&self, q: &ListQuery) -> Result<Page<JobSummary>> {
        self.conn.json(Method::GET, &format!("/api/v1/jobs{}", query(q)?), None::<&()>).await
    }

    async fn status_counts(&self, q: &ListQuery) -> Result<StatusCounts> {
        let q = ListQuery { start: 0, status: None, ..q.clone() };
        self.conn.json(Method::GET, &format!("/api/v1/jobs/counts{}", query(&q)?), None::<&()>).await
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        self.conn.json(Method::GET, "/api/v1/workers", None::<&()>).await
    }

    async fn stats(&self, q: &StatsQuery) -> Result<Stats> {
        self.conn.json(Method::GET, &format!("/api/v1/stats{}", query(q)?), None::<&()>).await
    }

    async fn abort(&self, id: JobId) -> Result<Job> {
        self.conn.json(Method::POST, &format!("/api/v1/jobs/{id}/abort"), None::<&()>).await
    }

    async fn restart(&self, id: JobId, from: Option<StageIndex>) -> Result<Job> {
        let q = from.map(|f| format!("?from={f}")).unwrap_or_default();
        self.conn.json(Method::POST, &format!("/api/v1/jobs/{id}/restart{q}"), None::<&()>).await
    }

    async fn reset(&self, id: JobId, spec: JobSpec, from: StageIndex) -> Result<Job> {
        self.conn.json(Method::POST, &format!("/api/v1/jobs/{id}/reset?from={from}"), Some(&spec)).await
    }

    async fn tags(&self, id: JobId) -> Result<Tags> {
        self.conn.json(Method::GET, &format!("/api/v1/jobs/{id}/tags"), None::<&()>).await
    }

    async fn set_tags(&self, id: JobId, tags: Tags) -> Result<Tags> {
        self.conn.json(Method::PUT, &format!("/api/v1/jobs/{id}/tags"), Some(&tags)).await
    }

    async fn merge_tags(&self, id: JobId, tags: Tags) -> Result<Tags> {
        self.conn.json(Method::PATCH, &format!("/api/v1/jobs/{id}/tags"), Some(&tags)).await
    }

    async fn jobs_with_tag(&self, q: &TagQuery) -> Result<Page<TagMatch>> {
        let key = enc(&q.key);
        let rest = serde_json::json!({"value": q.value, "order": q.order, "start": q.start, "limit": q.limit, "after": q.after});
        self.conn.json(Method::GET, &format!("/api/v1/tags/{key}{}", query(&rest)?), None::<&()>).await
    }

    async fn logs(&self, q: &LogQuery) -> Result<Page<JobLogEntry>> {
        let mut rest = q.clone();
        let path = match rest.job.take() {
            Some(id) => format!("/api/v1/jobs/{id}/log{}", query(&rest)?),
            None => format!("/api/v1/logs{}", query(&rest)?),
        };
        self.conn.json(Method::GET, &path, None::<&()>).await
    }

    async fn system_log(&self, q: &SystemLogQuery) -> Result<Page<SystemLogEntry>> {
        self.conn.json(Method::GET, &format!("/api/v1/system/log{}", query(q)?), None::<&()>).await
    }

    async fn watch(&self, id: JobId) -> Result<EventStream> {
        let resp = self.conn.send(Method::GET, &format!("/api/v1/jobs/{id}/events"), None::<&()>, None).await?;
        let url = resp.url().to_string();
        Ok(sse_events(resp.bytes_stream(), url).boxed())
    }
}

/// Parses a server-sent-event byte stream into job events.
fn sse_events(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    url: String,
) -> impl Stream<Item = Result<JobEvent>> + Send + 'static {
    struct St<S> {
        body: std::pin::Pin<Box<S>>,
        buf: String,
        url: String,
        done: bool,
    }
    let st = St { body: Box::pin(body), buf: String::new(), url, done: false };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            // A complete event ends with a blank line.
            if let Some(end) = st.buf.find("\n\n") {
                let block: String = st.buf.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = if v.trim() == "job" {
                            "job"
                        } else if v.trim() == "error" {
                            "error"
                        } else {
                            "other"
                        };
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                match event {
                    "job" => {
                        let ev = serde_json::from_str::<JobEvent>(&data).map_err(|source| Error::Decode {
                            method: "GET".into(),
                            url: st.url.clone(),
                            source,
                        });
                        if matches!(&ev, Ok(e) if e.is_terminal()) || ev.is_err() {
                            st.done = true;
                        }
                        return Some((ev, st));
                    }
                    "error" => {
                        st.done = true;
                        let e = Error::Remote {
                            method: "GET".into(),
                            url: st.url.clone(),
                            status: 200,
                            code: "watch".into(),
                            message: data,
                        };
                        return Some((Err(e), st));
                    }
                    _ => continue, // keep-alive comments and unknown events
                }
            }
            match st.body.next().await {
                Some(Ok(chunk)) => st.buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n")),
                Some(Err(source)) => {
                    st.done = true;
                    return Some((Err(Error::Http { method: "GET".into(), url: st.url.clone(), source }), st));
                }
                None => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sse_parser_reads_events_split_across_chunks() {
        let ev = JobEvent::Status {
            job: JobId::new(3),
            status: kgym_core::JobStatus::Finished,
            stage: None,
            worker: None,
            time: chrono::Utc::now(),
        };
        let text = format!(":keep-alive\n\nevent: job\ndata: {}\n\n", serde_json::to_string(&ev).unwrap());
        let (a, b) = text.split_at(text.len() / 2);
        let chunks: Vec<reqwest::Result<Bytes>> = vec![Ok(Bytes::from(a.to_owned())), Ok(Bytes::from(b.to_owned()))];
        let got: Vec<_> = sse_events(futures::stream::iter(chunks), "u".into()).collect().await;
        assert_eq!(got.len(), 1);
        assert!(got[0].as_ref().unwrap().is_terminal());
    }

    #[test]
    fn queries_encode_values() {
        let q = LogQuery { start: 20, ..LogQuery::default() };
        let text = query(&q).unwrap();
        assert!(text.contains("start=20"), "{text}");
        assert!(text.contains("order=newest_first"), "{text}");
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
