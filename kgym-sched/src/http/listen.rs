//! The accept loop: HTTP/1 connections served by hyper with a header-read
//! timeout (a client that sends its request head slowly, or nothing at
//! all on an open or kept-alive connection, is disconnected), each
//! request tagged with its peer address (`ConnectInfo`, which the event
//! stream bound counts by), and a graceful stop that gives open requests
//! a few seconds.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long open requests get to finish once the server stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Connection-level settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnOptions {
    /// How long a client may take to send a request head (from the
    /// connection's start, or from the end of its previous response).
    pub header_timeout: Duration,
    /// Largest request head hyper buffers (longer ones get hyper's bare
    /// 414/431).
    pub max_head: usize,
}

/// Serves `app` on `listener` until `stop` fires.
pub(crate) async fn serve(listener: TcpListener, app: Router, options: ConnOptions, stop: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // rather than spin.
                        tracing::warn!(error = %e, "failed to accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = app.clone().map_request(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    req
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(options.header_timeout)
                    .max_buf_size(options.max_head)
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                let served = graceful.watch(conn);
                conns.spawn(async move {
                    if let Err(e) = served.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown()).await.is_err() {
        tracing::debug!(open = conns.len(), "open connections outlived the stop grace; cutting them");
        conns.abort_all();
    }
    while conns.join_next().await.is_some() {}
}
