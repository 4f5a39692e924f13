//! The daemon: wires the stages together (the SCP receiving into the store and index, the
//! workflow analysing and delivering). It owns no logic of its own beyond start-up and shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::{self, Admin, AdminError, ModelCheck, ModelChecks, ModelIdentity};
use crate::config::Config;
use crate::index::{Index, IndexError};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::net::scp::{PeerTables, Scp, TlsListener};
use crate::net::tls::{self, TlsError};
use crate::reload;
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use crate::workflow;
use crate::workflow::WorkflowSettings;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error("cannot open the index")]
    Index(#[from] IndexError),
    #[error("cannot set up DICOM TLS")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {address}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// How long running associations may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Open the store and the index as configured.
pub async fn open_storage(config: &Config) -> Result<(Store, Index), NodeError> {
    let (store, removed) = Store::open(&config.node.data_dir)?;
    if removed > 0 {
        warn!(
            removed,
            "removed unfinished transfers left by a previous run (none had been acknowledged)"
        );
    }
    let index = Index::open(&config.database_path()).await?;
    Ok((store, index))
}

/// What a reload replaces: each stage reads its part from its receiver when it next needs it.
struct Live {
    config: watch::Sender<Arc<Config>>,
    peers: watch::Sender<Arc<PeerTables>>,
    workflow: watch::Sender<Arc<WorkflowSettings>>,
}

struct LiveReceivers {
    config: watch::Receiver<Arc<Config>>,
    peers: watch::Receiver<Arc<PeerTables>>,
    workflow: watch::Receiver<Arc<WorkflowSettings>>,
}

impl Live {
    fn new(config: &Config) -> (Live, LiveReceivers) {
        let (peers, workflow) = Live::parts(config);
        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        let (peers_tx, peers_rx) = watch::channel(peers);
        let (workflow_tx, workflow_rx) = watch::channel(workflow);
        (
            Live {
                config: config_tx,
                peers: peers_tx,
                workflow: workflow_tx,
            },
            LiveReceivers {
                config: config_rx,
                peers: peers_rx,
                workflow: workflow_rx,
            },
        )
    }

    fn parts(config: &Config) -> (Arc<PeerTables>, Arc<WorkflowSettings>) {
        let settings = Settings::from_config(config);
        (
            Arc::new(PeerTables::new(config, settings.peers())),
            Arc::new(settings.workflow),
        )
    }

    /// On each SIGHUP, re-read `path`: a valid file replaces what may change while running
    /// ([`reload::merge`]); an invalid one is refused with every problem named and the running
    /// configuration stays. Open associations and running jobs keep what they started with.
    async fn reload_on_hangup(self, path: Option<PathBuf>, mut shutdown: watch::Receiver<bool>) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hangup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot watch SIGHUP; the configuration cannot be reloaded");
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = hangup.recv() => self.reload(path.as_deref()),
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
        #[cfg(not(unix))]
        let _ = (path, shutdown.wait_for(|stop| *stop).await);
    }

    fn reload(&self, path: Option<&Path>) {
        let Some(path) = path else {
            warn!("SIGHUP received, but msnode runs on its defaults: there is no file to re-read");
            return;
        };
        let new = match Config::load(path) {
            Ok(new) => new,
            Err(e) => {
                error!(error = %crate::logging::chain(&e), "configuration not reloaded; the running one stays");
                return;
            }
        };
        let running = self.config.borrow().clone();
        let (merged, waiting) = reload::merge(&running, new);
        if let Some(e) = tls::check(&merged).first() {
            error!(error = %crate::logging::chain(e), "configuration not reloaded; the running one stays");
            return;
        }
        for section in waiting {
            warn!(
                section,
                "this section changed; it takes effect at the next start"
            );
        }
        let (peers, workflow) = Live::parts(&merged);
        self.peers.send_replace(peers);
        self.workflow.send_replace(workflow);
        self.config.send_replace(Arc::new(merged));
        info!(path = %path.display(), "configuration reloaded");
    }
}

async fn listen(address: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Listen {
            address: address.to_string(),
            source,
        })
}

/// Run the DICOM listener until SIGINT or SIGTERM; SIGHUP re-reads `config_path`.
pub async fn serve(config: Config, config_path: Option<PathBuf>) -> Result<(), NodeError> {
    let config = Arc::new(config);
    let (store, index) = open_storage(&config).await?;
    let address = format!("{}:{}", config.node.bind, config.node.port);
    let listener = listen(&address).await?;
    let tls_listener = match config.node.tls_port {
        Some(port) => {
            let tls_address = format!("{}:{port}", config.node.bind);
            let listener = listen(&tls_address).await?;
            info!(address = %tls_address, client_ca = ?config.tls.client_ca, "DICOM TLS listening");
            Some(TlsListener {
                listener,
                config: tls::server_config(&config.tls)?,
            })
        }
        None => None,
    };
    // Peers with tls = true: unreadable files are found now, not at the first delivery.
    if config.peers.iter().any(|p| p.tls) {
        tls::client_config(&config.tls)?;
    }
    if !config.peers.iter().any(|p| p.store_to_us) {
        warn!("no peer has store_to_us = true: every association will be rejected");
    }
    info!(
        ae_title = %config.node.ae_title,
        %address,
        data_dir = %config.node.data_dir.display(),
        database = %config.database_path().display(),
        "msnode listening"
    );
    let settings = Settings::from_config(&config);
    let ingest = Ingest::new(
        store,
        index.clone(),
        config.network.max_instance_bytes,
        settings.min_free_bytes,
    );
    let metrics = Arc::new(Metrics::new());
    let (live, receivers) = Live::new(&config);
    let admin_listener = admin::bind(settings.admin.bind).await?;
    let admin = Arc::new(Admin::new(
        &config,
        &settings.admin,
        receivers.config,
        metrics.clone(),
        ingest.clone(),
        ModelChecks {
            follow_up: verify_model(&settings.analysis.model_dir),
            single_visit: settings
                .single_visit
                .as_ref()
                .map(|s| verify_model(&s.model_dir)),
        },
    )?);
    let (stop, stopped) = watch::channel(false);
    let signal = async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    };
    let scp = Scp::new(
        config.clone(),
        ingest.clone(),
        receivers.peers,
        metrics.clone(),
    );
    tokio::join!(
        scp.run(listener, tls_listener, signal, SHUTDOWN_GRACE),
        workflow::run(
            receivers.workflow,
            index.clone(),
            ingest,
            metrics,
            stopped.clone()
        ),
        admin::serve(admin_listener, admin, stopped.clone()),
        live.reload_on_hangup(config_path, stopped),
    );
    index.close().await;
    info!("msnode stopped");
    Ok(())
}

/// Check a model's card and the sha256 of its ONNX file now, so that readiness and the metrics
/// name the model before the first job loads it.
fn verify_model(dir: &std::path::Path) -> ModelCheck {
    match crate::infer::Model::open(dir) {
        Ok(model) => Ok(ModelIdentity {
            name: model.card.name,
            version: model.card.version,
            sha256: model.card.onnx_sha256,
        }),
        Err(e) => {
            let why = crate::logging::chain(&e);
            warn!(dir = %dir.display(), reason = %why, "the model cannot be used; analyses will fail until it is fixed");
            Err(why)
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops msnode");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => info!("SIGINT received"),
            _ = terminate.recv() => info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
