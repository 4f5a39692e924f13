//! Delivery: the outbox sent to every destination with exponential backoff. Each destination is
//! sent to on its own task, so one that is down delays neither the others nor new analyses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{info, warn};

use super::{Destination, WorkflowError, WorkflowSettings};
use crate::index::{Attempt, Index, OutboxRow};
use crate::logging::chain;
use crate::metrics::Metrics;
use crate::net::scu;

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// When to try again after `attempts` failed attempts (this one included), or `None` when they
/// are all spent: `retry_delay`, then twice as long each time.
pub fn retry_at(max_attempts: u32, retry_delay: Duration, attempts: u32, now: i64) -> Option<i64> {
    if attempts >= max_attempts {
        return None;
    }
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1)).min(1 << 16);
    let wait = retry_delay.saturating_mul(factor);
    Some(now + wait.as_secs().max(1) as i64)
}

/// Send what is due, one task per destination; then settle the jobs whose deliveries ended.
pub async fn step(
    settings: Arc<WorkflowSettings>,
    index: Index,
    metrics: Arc<Metrics>,
) -> Result<(), WorkflowError> {
    let due = index.due_deliveries(unix_now()).await?;
    if due.is_empty() {
        return Ok(());
    }
    let mut by_destination: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
    for row in due {
        by_destination
            .entry(row.destination.clone())
            .or_default()
            .push(row);
    }
    let mut jobs: Vec<i64> = by_destination.values().flatten().map(|r| r.job).collect();
    jobs.sort_unstable();
    jobs.dedup();
    let mut tasks = JoinSet::new();
    for (ae_title, rows) in by_destination {
        let destination = settings
            .destinations
            .iter()
            .find(|d| d.ae_title == ae_title)
            .cloned();
        let (settings, index, metrics) = (settings.clone(), index.clone(), metrics.clone());
        tasks.spawn(async move {
            let started = std::time::Instant::now();
            let tally = send_to(settings, index, &ae_title, destination, rows).await?;
            metrics.stage("delivery", started.elapsed().as_secs_f64());
            for _ in 0..tally.failed {
                metrics.delivery_failed(&ae_title);
            }
            tally.log(&ae_title);
            Ok::<(), WorkflowError>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    for job in jobs {
        if let Some(state) = index.settle_delivery(job).await? {
            info!(job, %state, "deliveries ended");
        }
    }
    Ok(())
}

/// One association to one destination for its due rows, and every row's attempt recorded.
async fn send_to(
    settings: Arc<WorkflowSettings>,
    index: Index,
    ae_title: &str,
    destination: Option<Destination>,
    rows: Vec<OutboxRow>,
) -> Result<Tally, WorkflowError> {
    let mut tally = Tally::default();
    let Some(destination) = destination else {
        let why = format!("{ae_title} is no longer a configured destination");
        for row in &rows {
            tally
                .give_up(&index, row, Attempt::Error(why.clone()))
                .await?;
        }
        return Ok(tally);
    };
    let mut files = Vec::with_capacity(rows.len());
    let mut sendable = Vec::with_capacity(rows.len());
    for row in rows {
        match scu::inspect(&settings.data_dir.join(&row.file_path)) {
            Ok(file) => {
                files.push(file);
                sendable.push(row);
            }
            // The file is ours and gone: no retry brings it back.
            Err(e) => {
                tally
                    .give_up(&index, &row, Attempt::Error(chain(&e)))
                    .await?
            }
        }
    }
    if files.is_empty() {
        return Ok(tally);
    }
    let mut association = match scu::StoreAssociation::open(&destination.remote, &files).await {
        Ok(association) => association,
        Err(e) => {
            let why = chain(&e);
            for row in &sendable {
                tally
                    .record(&settings, &index, row, Attempt::Error(why.clone()))
                    .await?;
            }
            return Ok(tally);
        }
    };
    let mut broken: Option<String> = None;
    // Each answer is recorded as it arrives: after a crash only the file in flight is sent again.
    for (row, file) in sendable.iter().zip(&files) {
        let attempt = match &broken {
            Some(why) => Attempt::Error(format!("not sent: {why}")),
            None => match association.store(file, None).await {
                Ok(status) => Attempt::Status(status),
                Err(scu::StoreFailure::NotSent(why)) => Attempt::Error(why),
                Err(scu::StoreFailure::Association(e)) => {
                    let why = chain(&e);
                    broken = Some(why.clone());
                    Attempt::Error(why)
                }
            },
        };
        tally.record(&settings, &index, row, attempt).await?;
    }
    match broken {
        None => association.release().await,
        Some(_) => association.abort().await,
    }
    Ok(tally)
}

/// What one round of attempts to a destination came to, for its log line.
#[derive(Default)]
struct Tally {
    sent: usize,
    failed: usize,
    first_failure: Option<Attempt>,
}

impl Tally {
    /// Record one attempt in the outbox: delivered, or due again after the backoff, or failed
    /// for good when the attempts are spent.
    async fn record(
        &mut self,
        settings: &WorkflowSettings,
        index: &Index,
        row: &OutboxRow,
        attempt: Attempt,
    ) -> Result<(), WorkflowError> {
        let retry = if self.count(&attempt) {
            None
        } else {
            retry_at(
                settings.max_attempts,
                settings.retry_delay,
                row.attempts as u32 + 1,
                unix_now(),
            )
        };
        index.record_attempt(row.id, &attempt, retry).await?;
        Ok(())
    }

    /// Record an attempt that no retry can mend.
    async fn give_up(
        &mut self,
        index: &Index,
        row: &OutboxRow,
        attempt: Attempt,
    ) -> Result<(), WorkflowError> {
        self.count(&attempt);
        index.record_attempt(row.id, &attempt, None).await?;
        Ok(())
    }

    /// Count the attempt; true when it was delivered.
    fn count(&mut self, attempt: &Attempt) -> bool {
        if attempt.delivered() {
            self.sent += 1;
            return true;
        }
        self.failed += 1;
        self.first_failure.get_or_insert_with(|| attempt.clone());
        false
    }

    fn log(&self, destination: &str) {
        if self.failed > 0 {
            warn!(destination, sent = self.sent, failed = self.failed, first = ?self.first_failure, "delivery incomplete; will retry");
        } else {
            info!(destination, sent = self.sent, "results delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_until_the_attempts_are_spent() {
        let delay = Duration::from_secs(60);
        let waits: Vec<Option<i64>> = (1..=5).map(|n| retry_at(5, delay, n, 1000)).collect();
        assert_eq!(
            waits,
            [Some(1060), Some(1120), Some(1240), Some(1480), None]
        );
        assert_eq!(
            retry_at(1, delay, 1, 0),
            None,
            "one attempt in all: no retry"
        );
    }
}
