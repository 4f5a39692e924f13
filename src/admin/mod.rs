//! The admin HTTP server: what a site admin looks at instead of the log.
//!
//! - `GET /healthz`: the process answers.
//! - `GET /readyz`: the index takes writes, the data directory takes writes with free space above
//!   the reserve, the model was verified; 503 naming the failing check otherwise ([`ready`]).
//! - `GET /metrics`: every metric of [`crate::metrics`], Prometheus text format.
//! - `GET /`: a read-only status page ([`page`]); `GET /jobs/{id}/previews/{file}` its PNGs.
//!
//! With a token configured, every request but `/healthz` must carry `Authorization: Bearer`.

pub mod page;
pub mod ready;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::index::IndexError;
use crate::ingest::Ingest;
use crate::logging::chain;
use crate::metrics::{DestinationLabel, Metrics, StateLabel};
use crate::workflow::runner::results_dir;

/// How the admin server runs (from `[admin]`).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub bind: SocketAddr,
    pub token_file: Option<PathBuf>,
    pub show_patient_id: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot read the admin token file {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("cannot listen on {address} for the admin server")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A model as verified at start-up: its identity, or why it cannot be used.
pub type ModelCheck = Result<ModelIdentity, String>;

/// Every model the node runs, as verified at start-up.
#[derive(Debug, Clone)]
pub struct ModelChecks {
    /// The follow-up (two-visit) model.
    pub follow_up: ModelCheck,
    /// The single-visit model, when one is configured.
    pub single_visit: Option<ModelCheck>,
}

#[derive(Debug, Clone)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// What every handler reads.
pub struct Admin {
    pub ae_title: String,
    pub metrics: Arc<Metrics>,
    pub ingest: Arc<Ingest>,
    pub models: ModelChecks,
    pub show_patient_id: bool,
    /// The effective configuration, as the last reload left it.
    pub config: watch::Receiver<Arc<Config>>,
    pub data_dir: PathBuf,
    token: Option<String>,
}

impl Admin {
    /// The shared state; reads the token file when one is configured.
    pub fn new(
        config: &Config,
        settings: &AdminSettings,
        live_config: watch::Receiver<Arc<Config>>,
        metrics: Arc<Metrics>,
        ingest: Arc<Ingest>,
        models: ModelChecks,
    ) -> Result<Admin, AdminError> {
        let token = match &settings.token_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| AdminError::Token {
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    return Err(AdminError::EmptyToken(path.clone()));
                }
                Some(token)
            }
        };
        let verified = std::iter::once(&models.follow_up).chain(models.single_visit.as_ref());
        for model in verified.filter_map(|check| check.as_ref().ok()) {
            metrics
                .model
                .get_or_create(&crate::metrics::ModelLabel {
                    name: model.name.clone(),
                    version: model.version.clone(),
                    sha256: model.sha256.clone(),
                })
                .set(1);
        }
        Ok(Admin {
            ae_title: config.node.ae_title.clone(),
            metrics,
            ingest,
            models,
            show_patient_id: settings.show_patient_id,
            config: live_config,
            data_dir: config.node.data_dir.clone(),
            token,
        })
    }
}

/// Bind the admin port now, so that a port in use stops the node at start-up.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| AdminError::Listen { address, source })
}

/// Serve until `shutdown` turns true.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let address = listener.local_addr().ok();
    let app = Router::new()
        .route("/", get(status_page))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/jobs/{id}/previews/{file}", get(preview))
        .route_layer(middleware::from_fn_with_state(admin.clone(), authorize))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(admin);
    info!(address = ?address, "admin server listening");
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        warn!(error = %e, "admin server stopped");
    }
}

/// Requests must carry the configured bearer token.
async fn authorize(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    let Some(token) = &admin.token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required (see [admin] token_file)\n",
        )
            .into_response(),
    }
}

/// Compare without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let checks = ready::run(&admin).await;
    let body: String = checks.iter().map(|c| format!("{c}\n")).collect();
    let status = if checks.iter().all(|c| c.result.is_ok()) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    if let Err(e) = refresh_gauges(&admin).await {
        warn!(error = %chain(&e), "cannot read the index for the metrics");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.metrics.render(),
    )
        .into_response()
}

/// The gauges read at scrape time: jobs by state, outbox depth, free space.
async fn refresh_gauges(admin: &Admin) -> Result<(), IndexError> {
    let metrics = &admin.metrics;
    if let Ok(free) = admin.ingest.store().free_bytes() {
        metrics.data_free_bytes.set(free);
    }
    let index = admin.ingest.index();
    let counts = index.workflow_counts().await?;
    metrics.jobs.clear();
    for (state, n) in counts.jobs {
        metrics.jobs.get_or_create(&StateLabel { state }).set(n);
    }
    metrics.outbox_pending.clear();
    for (destination, n) in index.outbox_pending().await? {
        metrics
            .outbox_pending
            .get_or_create(&DestinationLabel { destination })
            .set(n);
    }
    Ok(())
}

async fn status_page(State(admin): State<Arc<Admin>>) -> Response {
    match page::gather(&admin).await {
        Ok(status) => Html(page::render(&status)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the index: {}\n", chain(&e)),
        )
            .into_response(),
    }
}

/// A job's PNG preview: only `slice<N>.png` names from its own preview folder.
async fn preview(
    State(admin): State<Arc<Admin>>,
    UrlPath((job, file)): UrlPath<(i64, String)>,
) -> Response {
    if !page::is_preview_name(&file) {
        return (StatusCode::NOT_FOUND, "no such preview\n").into_response();
    }
    let path = results_dir(&admin.data_dir, job)
        .join("preview")
        .join(&file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "image/png")], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such preview\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
