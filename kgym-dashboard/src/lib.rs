//! kgym's web dashboard: static pages (HTML, CSS and plain JavaScript
//! modules) embedded in the binary and served by the scheduler's HTTP
//! server. Everything the pages show comes from the public JSON API under
//! `/api/v1` and its event stream; the dashboard has no state and no
//! routes of its own beyond its files, nothing is fetched from the
//! internet, and building it needs no npm step.
//!
//! Pages (client-side routing, so every page has a link to share):
//!
//! | path | page |
//! |---|---|
//! | `/` | jobs: filters (status, tag, time range), sort, pages, counts per status, live updates |
//! | `/ui/job/{id}` | one job: stages with arguments, results and typed failures, crash report with its frames, artifacts, live log; abort, restart, tags |
//! | `/ui/workers` | worker roster (slots, pools, heartbeats, running stages) and the system log per kind and host |
//! | `/ui/overview` | jobs finished per hour, stage durations, most frequent crash titles |
//!
//! Assets are under `/ui/assets/`. When the server has a token, the page
//! asks for it once per browser tab (kept in `sessionStorage`) and sends it
//! as `Authorization: Bearer` on every API call, the event stream included.
//!
//! Merge the [`router`] into the scheduler's server (the `kgym` facade's
//! `Gym` does this unless told not to): in kgym,
//! `HttpServer::builder(sched).merge(kgym_dashboard::router())`. It is a
//! plain stateless [`axum::Router`]:
//!
//! ```
//! let app: axum::Router = axum::Router::new().merge(kgym_dashboard::router());
//! # let _ = app;
//! assert!(kgym_dashboard::asset_paths().any(|p| p == "js/main.js"));
//! ```

mod assets;
mod routes;

pub use routes::{ASSET_PREFIX, PAGE_PREFIX, router};

/// The paths of every embedded asset, relative to [`ASSET_PREFIX`].
pub fn asset_paths() -> impl Iterator<Item = &'static str> {
    assets::ASSETS.iter().map(|a| a.path)
}
