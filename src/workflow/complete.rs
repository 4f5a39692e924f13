//! Series completion: a series is complete when no instance of it arrived for the stable
//! timeout. The check reads the index only, so series that went quiet while the node was down are
//! picked up at the next start; an instance arriving later makes the series unjudged again. A
//! series moved to us as a job's prior is judged (so the index knows it is a FLAIR) but starts no job.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::selection::{SeriesHeader, rank};
use super::{WorkflowError, WorkflowSettings};
use crate::index::{Index, Judgement, UnjudgedSeries};
use crate::logging::chain;

/// Whether `received_at` (RFC 3339) lies at least `stable_after` in the past. A time that does
/// not parse counts as quiet: it cannot hold a series back for ever.
fn is_quiet(received_at: &str, stable_after: Duration) -> bool {
    match OffsetDateTime::parse(received_at, &Rfc3339) {
        Ok(t) => OffsetDateTime::now_utc() - t >= stable_after,
        Err(_) => true,
    }
}

/// Judge every series that went quiet, and queue a job for each chosen FLAIR.
/// Workers waiting on `queued` are woken when a job was queued.
pub async fn step(
    settings: Arc<WorkflowSettings>,
    index: Index,
    queued: Arc<Notify>,
) -> Result<(), WorkflowError> {
    for series in index.unjudged_series().await? {
        if is_quiet(&series.last_received_at, settings.stable_after)
            && judge(&settings, &index, &series).await?
        {
            queued.notify_waiters();
        }
    }
    Ok(())
}

/// Judge these series now, without waiting for the stable timeout: a C-MOVE we asked for ended,
/// so they are complete. Series already judged for their latest instance are left as they are.
pub async fn judge_now(
    settings: &WorkflowSettings,
    index: &Index,
    series_uids: &[String],
) -> Result<(), WorkflowError> {
    for series in index.unjudged_series().await? {
        if series_uids.contains(&series.series_instance_uid) {
            judge(settings, index, &series).await?;
        }
    }
    Ok(())
}

/// Judge one series; returns whether a job was queued for it (a series moved to us as a prior
/// starts none).
async fn judge(
    settings: &WorkflowSettings,
    index: &Index,
    series: &UnjudgedSeries,
) -> Result<bool, WorkflowError> {
    let uid = &series.series_instance_uid;
    let files = index.series_files(uid).await?;
    let Some(first) = files.first() else {
        return Ok(false);
    };
    let path = settings.data_dir.join(first);
    let count = files.len();
    let header = tokio::task::spawn_blocking(move || SeriesHeader::read(&path, count)).await?;
    let row = match header {
        Ok(header) => verdict_row(settings, index, series, header).await?,
        Err(e) => Judgement {
            flair: false,
            chosen: false,
            rule: "0 unreadable".into(),
            why: chain(&e),
            header: "{}".into(),
        },
    };
    index.record_verdict(series, &row).await?;
    info!(series = %uid, flair = row.flair, chosen = row.chosen, rule = %row.rule, why = %row.why, "series judged");
    if !row.chosen || series.retrieved_prior {
        return Ok(false);
    }
    match index.create_job(uid, &series.last_received_at).await? {
        Some(job) => {
            info!(job, series = %uid, "job queued");
            Ok(true)
        }
        None => {
            warn!(series = %uid, "a job for this input exists already");
            Ok(false)
        }
    }
}

/// The verdict on a readable series: FLAIR or not, and whether it is its study's best FLAIR.
async fn verdict_row(
    settings: &WorkflowSettings,
    index: &Index,
    series: &UnjudgedSeries,
    header: SeriesHeader,
) -> Result<Judgement, WorkflowError> {
    let verdict = settings.selection.judge(&header);
    let mut why = verdict.why;
    let mut chosen = verdict.flair;
    if verdict.flair {
        let mut rivals: Vec<SeriesHeader> = index
            .flair_headers_of_study(&series.study_instance_uid)
            .await?
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .filter(|h: &SeriesHeader| h.series_instance_uid != header.series_instance_uid)
            .collect();
        rivals.push(header.clone());
        rank(&mut rivals);
        if let Some(best) = rivals
            .first()
            .filter(|b| b.series_instance_uid != header.series_instance_uid)
        {
            chosen = false;
            why = format!(
                "{why}; not chosen: FLAIR series {} of the same study ranks higher (3D, thinner, more slices, later)",
                best.series_instance_uid
            );
        }
    }
    Ok(Judgement {
        flair: verdict.flair,
        chosen,
        rule: verdict.rule.to_string(),
        why,
        header: serde_json::to_string(&header).unwrap_or_else(|_| "{}".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_means_nothing_arrived_for_the_timeout() {
        let now = OffsetDateTime::now_utc();
        let ago = |s: i64| (now - time::Duration::seconds(s)).format(&Rfc3339).unwrap();
        assert!(is_quiet(&ago(61), Duration::from_secs(60)));
        assert!(!is_quiet(&ago(5), Duration::from_secs(60)));
        assert!(is_quiet("not a time", Duration::from_secs(60)));
    }
}
