//! The job stage: the node does its work by itself. Three loops share the index:
//!
//! - [`complete`]: a series that received nothing for the stable timeout is judged by
//!   [`selection`]; the best FLAIR of its study gets a queued job (one per input);
//! - [`runner`]: workers claim queued jobs, find the prior ([`prior`]), run the
//!   [`Analyzer`](crate::analyze::Analyzer) each holds, and queue the results for every destination;
//!   a job whose prior is not in the index waits while [`retrieve`] asks PACS for it;
//! - [`deliver`]: the outbox is sent to PACS with exponential backoff, and a job is `done` when
//!   everything arrived (or `failed` naming what did not).
//!
//! Every state change is committed before the work it starts; after a crash a job found
//! `running` is run again from the start with the same result UIDs, and pending deliveries resume.

pub mod complete;
pub mod deliver;
pub mod header;
pub mod prior;
pub mod retention;
pub mod retrieve;
pub mod runner;
pub mod selection;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::analyze::AnalysisSettings;
use crate::config::{PriorConfig, RetrieveMethod};
use crate::index::{Index, IndexError};
use crate::ingest::Ingest;
use crate::logging::chain;
use crate::metrics::Metrics;
use crate::net::scu::Remote;

use selection::SelectionRules;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("index")]
    Index(#[from] IndexError),
    #[error("a blocking task ended abnormally")]
    Join(#[from] tokio::task::JoinError),
}

/// Where results go.
#[derive(Debug, Clone)]
pub struct Destination {
    pub ae_title: String,
    pub remote: Remote,
}

/// A PACS asked for priors, and how a prior found there is fetched.
#[derive(Debug, Clone)]
pub struct PriorSource {
    pub remote: Remote,
    pub retrieve: RetrieveMethod,
}

/// What the workflow runs with (from [`crate::settings::Settings::workflow`]).
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    pub data_dir: PathBuf,
    /// A series is complete when nothing arrived for this long.
    pub stable_after: Duration,
    pub selection: SelectionRules,
    pub prior: PriorConfig,
    /// Peers asked for a prior the index lacks (`query_for_priors`), in configuration order.
    pub prior_sources: Vec<PriorSource>,
    pub workers: usize,
    pub analysis: AnalysisSettings,
    /// The single-visit analysis a job without a prior gets (its lesion load); None: it ends
    /// `no_prior`.
    pub single_visit: Option<AnalysisSettings>,
    pub destinations: Vec<Destination>,
    /// Delivery attempts per result and destination, in all.
    pub max_attempts: u32,
    /// The first retry waits this long; each next one twice as long.
    pub retry_delay: Duration,
    /// Forget a study this long after its last activity once its jobs are done; None keeps all.
    pub keep_for: Option<Duration>,
}

impl WorkflowSettings {
    /// How often the loops look for work.
    fn poll(&self) -> Duration {
        (self.stable_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }
}

/// Run the workflow until `shutdown` turns true. A job running at that moment is left `running`
/// and runs again at the next start. Each step reads the settings `live` holds then, so a reload
/// applies from the next series, job or delivery round on.
pub async fn run(
    live: watch::Receiver<Arc<WorkflowSettings>>,
    index: Index,
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    match index.requeue_interrupted_jobs().await {
        Ok(0) => {}
        Ok(n) => info!(
            jobs = n,
            "jobs interrupted by the last stop are queued again"
        ),
        Err(e) => error!(error = %chain(&e), "cannot requeue interrupted jobs"),
    }
    let first = live.borrow().clone();
    let poll = first.poll();
    // Wakes the workers when a job is queued, so they need not wait for their next poll.
    let queued = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let (l, i, q) = (live.clone(), index.clone(), queued.clone());
    tasks.spawn(every(
        "series completion",
        poll,
        shutdown.clone(),
        move || complete::step(l.borrow().clone(), i.clone(), q.clone()),
    ));
    for worker in 0..first.workers {
        let (l, i, q) = (live.clone(), index.clone(), queued.clone());
        tasks.spawn(runner::work(
            worker,
            l,
            i,
            metrics.clone(),
            q,
            shutdown.clone(),
        ));
    }
    // `[storage]` waits for a restart, so whether retention runs is known now. Its query walks
    // every study: once a minute is enough, or a quarter of a (test-sized) retention period.
    if let Some(keep) = first.keep_for {
        let (l, g, m) = (live.clone(), ingest.clone(), metrics.clone());
        let period = (keep / 4).clamp(poll, Duration::from_secs(60));
        tasks.spawn(every("retention", period, shutdown.clone(), move || {
            retention::step(l.borrow().clone(), g.clone(), m.clone())
        }));
    }
    let (l, i, q) = (live.clone(), index.clone(), queued.clone());
    tasks.spawn(every(
        "prior retrieval",
        poll,
        shutdown.clone(),
        move || retrieve::step(l.borrow().clone(), i.clone(), ingest.clone(), q.clone()),
    ));
    let (l, i) = (live.clone(), index.clone());
    tasks.spawn(every("delivery", poll, shutdown.clone(), move || {
        deliver::step(l.borrow().clone(), i.clone(), metrics.clone())
    }));
    while tasks.join_next().await.is_some() {}
}

/// Run `step` every `period` until shutdown; an error is logged and the loop goes on.
async fn every<F, Fut>(
    name: &'static str,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
    step: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), WorkflowError>>,
{
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = step().await {
            error!(loop_name = name, error = %chain(&e), "workflow step failed; trying again");
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => {}
        }
    }
}
