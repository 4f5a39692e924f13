//! Retention (`[storage] keep_days`): a study is forgotten once nothing happened to it for that
//! long and every job that used it is `done` (or ended `no_prior`): its rows, its files and its
//! jobs' results folders. The jobs' history and the audit trail stay.

use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

use super::runner::results_dir;
use super::{WorkflowError, WorkflowSettings};
use crate::index::Index;
use crate::ingest::Ingest;
use crate::metrics::Metrics;

pub async fn step(
    settings: Arc<WorkflowSettings>,
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
) -> Result<(), WorkflowError> {
    let Some(keep) = settings.keep_for else {
        return Ok(());
    };
    let index: &Index = ingest.index();
    let cutoff = (OffsetDateTime::now_utc() - keep)
        .format(&Rfc3339)
        .unwrap_or_default();
    for study in index.expired_studies(&cutoff).await? {
        let forgotten = index.forget_study(study.id).await?;
        let store = ingest.store().clone();
        let data_dir = settings.data_dir.clone();
        let paths = forgotten.file_paths.clone();
        let jobs = forgotten.jobs.clone();
        // Rows first: a crash now leaves files the index no longer names, never the reverse.
        let unremoved = tokio::task::spawn_blocking(move || {
            let mut unremoved = 0usize;
            for path in &paths {
                if let Err(e) = store.remove_pruning(std::path::Path::new(path)) {
                    warn!(%path, error = %e, "retention: cannot remove a file");
                    unremoved += 1;
                }
            }
            for job in jobs {
                let dir = results_dir(&data_dir, job);
                if let Err(e) = std::fs::remove_dir_all(&dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!(dir = %dir.display(), error = %e, "retention: cannot remove results");
                }
            }
            unremoved
        })
        .await?;
        metrics.retention_studies.inc();
        metrics
            .retention_bytes
            .inc_by(u64::try_from(forgotten.bytes).unwrap_or(0));
        info!(
            study = %study.study_instance_uid,
            instances = forgotten.file_paths.len(),
            bytes = forgotten.bytes,
            results_of_jobs = ?forgotten.jobs,
            unremoved,
            "retention: study forgotten"
        );
    }
    Ok(())
}
