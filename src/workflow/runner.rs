//! Job workers: each claims a queued job, finds its prior, runs the analysis with the model
//! session it holds for its whole life (the follow-up model; the single-visit model for a job
//! without a prior), and queues the results for every destination.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use super::{WorkflowError, WorkflowSettings, prior};
use crate::analyze::{AnalysisSettings, Analyzer, ScanSource};
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
    let mut analyzers = Analyzers::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let settings = live.borrow().clone();
        // A reload changed how analyses run (model, threshold, registration).
        analyzers.keep_if_current(&settings);
        let ran = match index.claim_job().await {
            Ok(Some(job)) => {
                info!(worker, job = job.id, series = %job.current_series, "job started");
                let outcome = run_job(&settings, &index, &metrics, &job, &mut analyzers).await;
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

/// What a job compares its current series with.
enum PriorOutcome {
    /// The prior series chosen from the index.
    Found(String),
    /// There is none (why is recorded): the job reports the visit's lesion load.
    Missing,
    /// The job now waits for PACS to be asked, or ended `no_prior`: nothing to run now.
    NotNow,
}

/// The job's prior from the index (recorded with why), or why there is none.
async fn find_prior(
    settings: &WorkflowSettings,
    index: &Index,
    job: &JobRow,
) -> Result<PriorOutcome, WorkflowError> {
    let candidates = index.prior_candidates(&job.current_series).await?;
    match prior::choose(&candidates, &settings.prior) {
        Ok((series, why)) => {
            index.set_job_prior(job.id, Some(&series), &why).await?;
            Ok(PriorOutcome::Found(series))
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
            Ok(PriorOutcome::NotNow)
        }
        Err(why) => {
            let why = match &job.prior_query {
                Some(query) => format!("{why}; {query}"),
                None => why,
            };
            if settings.single_visit.is_some() {
                let why = format!("no prior: {why}; the lesion load of this visit is reported");
                info!(job = job.id, %why, "no prior");
                index.set_job_prior(job.id, None, &why).await?;
                return Ok(PriorOutcome::Missing);
            }
            warn!(job = job.id, %why, "no prior");
            index
                .set_job_state(job.id, JobState::NoPrior, Some(&why))
                .await?;
            Ok(PriorOutcome::NotNow)
        }
    }
}

/// The models a worker holds for its whole life, each opened at its first job.
#[derive(Default)]
pub struct Analyzers {
    follow_up: Option<Analyzer>,
    single_visit: Option<Analyzer>,
}

impl Analyzers {
    /// Drop the sessions a reload changed the settings of: the next job opens them afresh.
    fn keep_if_current(&mut self, settings: &WorkflowSettings) {
        let stale = |held: &Option<Analyzer>, wanted: Option<&AnalysisSettings>| {
            held.as_ref().is_some_and(|a| Some(a.settings()) != wanted)
        };
        if stale(&self.follow_up, Some(&settings.analysis)) {
            self.follow_up = None;
        }
        if stale(&self.single_visit, settings.single_visit.as_ref()) {
            self.single_visit = None;
        }
    }
}

async fn run_job(
    settings: &WorkflowSettings,
    index: &Index,
    metrics: &Metrics,
    job: &JobRow,
    analyzers: &mut Analyzers,
) -> Result<(), WorkflowError> {
    let (prior_series, analysis, held) = match find_prior(settings, index, job).await? {
        PriorOutcome::NotNow => return Ok(()),
        PriorOutcome::Found(series) => (
            Some(series),
            settings.analysis.clone(),
            &mut analyzers.follow_up,
        ),
        PriorOutcome::Missing => match &settings.single_visit {
            Some(single_visit) => (None, single_visit.clone(), &mut analyzers.single_visit),
            None => return Ok(()),
        },
    };
    let current = series_source(settings, index, &job.current_series).await?;
    let prior = match &prior_series {
        Some(series) => Some(series_source(settings, index, series).await?),
        None => None,
    };
    let out_dir = results_dir(&settings.data_dir, job.id);
    // The same job writes the same UIDs when it runs again (after a crash): PACS replaces them.
    let mut uids = Uids::derived(format!("msnode job {} {}", job.id, job.current_series));
    let taken = held.take();
    let (returned, result) = tokio::task::spawn_blocking(move || {
        let mut analyzer = match taken {
            Some(a) => a,
            None => match Analyzer::open(analysis) {
                Ok(a) => a,
                Err(e) => return (None, Err(e)),
            },
        };
        let result = analyzer.analyze(&current, prior.as_ref(), &out_dir, &mut uids);
        (Some(analyzer), result)
    })
    .await?;
    *held = returned;
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
        kind = ?summary.kind,
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
