//! Job workers: each claims a queued job, finds its prior, runs the analysis with the model
//! session it holds for its whole life, and queues the results for every destination.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use super::{WorkflowError, WorkflowSettings, prior};
use crate::analyze::{Analyzer, ScanSource};
use crate::dicom::uid::Uids;
use crate::index::{Delivery, Index, JobRow, JobState};
use crate::logging::chain;
use crate::metrics::Metrics;
use crate::net::scu;

/// Where a job's results are written, under the data directory.
pub fn results_dir(data_dir: &Path, job: i64) -> PathBuf {
    data_dir.join("results").join(format!("job-{job}"))
}

/// One worker: claim and run jobs until shutdown.
pub async fn work(
    worker: usize,
    live: watch::Receiver<Arc<WorkflowSettings>>,
    index: Index,
    metrics: Arc<Metrics>,
    queued: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Opened at the first job, kept for every next one.
    let mut analyzer: Option<Analyzer> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let settings = live.borrow().clone();
        // A reload changed how analyses run (model, threshold, registration): open it afresh.
        if analyzer
            .as_ref()
            .is_some_and(|a| *a.settings() != settings.analysis)
        {
            analyzer = None;
        }
        let ran = match index.claim_job().await {
            Ok(Some(job)) => {
                info!(worker, job = job.id, series = %job.current_series, "job started");
                let outcome = run_job(&settings, &index, &metrics, &job, &mut analyzer).await;
                if let Err(e) = outcome {
                    let reason = chain(&e);
                    error!(job = job.id, %reason, "job failed");
                    if let Err(e) = index
                        .set_job_state(job.id, JobState::Failed, Some(&reason))
                        .await
                    {
                        error!(job = job.id, error = %chain(&e), "cannot record the failure");
                    }
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                error!(worker, error = %chain(&e), "cannot claim a job");
                false
            }
        };
        if !ran {
            tokio::select! {
                _ = tokio::time::sleep(settings.poll()) => {}
                _ = queued.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// The files of a stored series.
async fn series_source(
    settings: &WorkflowSettings,
    index: &Index,
    series: &str,
) -> Result<ScanSource, WorkflowError> {
    let files = index.series_files(series).await?;
    Ok(ScanSource::Series(
        files
            .into_iter()
            .map(|f| settings.data_dir.join(f))
            .collect(),
    ))
}

/// The job's prior from the index (recorded with why), or None when the job now waits for PACS
/// to be asked or ended `no_prior`.
async fn find_prior(
    settings: &WorkflowSettings,
    index: &Index,
    job: &JobRow,
) -> Result<Option<String>, WorkflowError> {
    let candidates = index.prior_candidates(&job.current_series).await?;
    match prior::choose(&candidates, &settings.prior) {
        Ok((series, why)) => {
            index.set_job_prior(job.id, &series, &why).await?;
            Ok(Some(series))
        }
        Err(why) if job.prior_query.is_none() && !settings.prior_sources.is_empty() => {
            let asking: Vec<&str> = settings
                .prior_sources
                .iter()
                .map(|p| p.remote.called_ae.as_str())
                .collect();
            let reason = format!("{why}; asking {}", asking.join(", "));
            info!(job = job.id, %reason, "waiting for a prior");
            index
                .set_job_state(job.id, JobState::WaitingForPrior, Some(&reason))
                .await?;
            Ok(None)
        }
        Err(why) => {
            let why = match &job.prior_query {
                Some(query) => format!("{why}; {query}"),
                None => why,
            };
            warn!(job = job.id, %why, "no prior");
            index
                .set_job_state(job.id, JobState::NoPrior, Some(&why))
                .await?;
            Ok(None)
        }
    }
}

async fn run_job(
    settings: &WorkflowSettings,
    index: &Index,
    metrics: &Metrics,
    job: &JobRow,
    analyzer: &mut Option<Analyzer>,
) -> Result<(), WorkflowError> {
    let Some(prior_series) = find_prior(settings, index, job).await? else {
        return Ok(());
    };
    let current = series_source(settings, index, &job.current_series).await?;
    let prior = series_source(settings, index, &prior_series).await?;
    let out_dir = results_dir(&settings.data_dir, job.id);
    let analysis = settings.analysis.clone();
    // The same job writes the same UIDs when it runs again (after a crash): PACS replaces them.
    let mut uids = Uids::derived(format!("msnode job {} {}", job.id, job.current_series));
    let held = analyzer.take();
    let (returned, result) = tokio::task::spawn_blocking(move || {
        let mut analyzer = match held {
            Some(a) => a,
            None => match Analyzer::open(analysis) {
                Ok(a) => a,
                Err(e) => return (None, Err(e)),
            },
        };
        let result = analyzer.analyze(&current, &prior, &out_dir, &mut uids);
        (Some(analyzer), result)
    })
    .await?;
    *analyzer = returned;
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let reason = chain(&e);
            error!(job = job.id, %reason, "analysis failed");
            index
                .set_job_state(job.id, JobState::Failed, Some(&reason))
                .await?;
            return Ok(());
        }
    };
    for (stage, seconds) in summary.timings.stages() {
        metrics.stage(stage, seconds);
    }
    // Reading each object's meta group is file I/O: off the async threads.
    let data_dir = settings.data_dir.clone();
    let destinations: Vec<String> = settings
        .destinations
        .iter()
        .map(|d| d.ae_title.clone())
        .collect();
    let for_pacs = summary.for_pacs.clone();
    let deliveries =
        tokio::task::spawn_blocking(move || deliveries(&data_dir, &destinations, &for_pacs))
            .await?;
    let json = serde_json::to_string(&summary).unwrap_or_else(|_| "{}".into());
    let state = index.finish_analysis(job.id, &json, &deliveries).await?;
    info!(
        job = job.id,
        lesions = summary.totals.count,
        seconds = summary.timings.total,
        %state,
        "analysis written"
    );
    Ok(())
}

/// Every object for PACS to every destination; each object's meta group is read once.
fn deliveries(data_dir: &Path, destinations: &[String], for_pacs: &[PathBuf]) -> Vec<Delivery> {
    let objects: Vec<(String, String)> = for_pacs
        .iter()
        .map(|path| {
            let relative = path.strip_prefix(data_dir).unwrap_or(path);
            // The audit names the instance; a file that cannot be read fails at delivery.
            let sop_instance_uid = scu::inspect(path)
                .map(|f| f.sop_instance_uid)
                .unwrap_or_default();
            (relative.to_string_lossy().into_owned(), sop_instance_uid)
        })
        .collect();
    destinations
        .iter()
        .flat_map(|destination| {
            objects
                .iter()
                .map(|(file_path, sop_instance_uid)| Delivery {
                    destination: destination.clone(),
                    file_path: file_path.clone(),
                    sop_instance_uid: sop_instance_uid.clone(),
                })
        })
        .collect()
}
