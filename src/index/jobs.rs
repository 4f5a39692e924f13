//! The workflow's tables (`migrations/0003_jobs.sql`): series verdicts, jobs with their events,
//! and the outbox. Every state change is committed, with its event, before the work it starts.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use sqlx::FromRow;

use super::{Index, IndexError, now_rfc3339};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    WaitingForPrior,
    Running,
    Delivering,
    Done,
    Failed,
    NoPrior,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::WaitingForPrior,
        JobState::Running,
        JobState::Delivering,
        JobState::Done,
        JobState::Failed,
        JobState::NoPrior,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::WaitingForPrior => "waiting_for_prior",
            JobState::Running => "running",
            JobState::Delivering => "delivering",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::NoPrior => "no_prior",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a job state (queued, waiting_for_prior, running, delivering, done, failed, no_prior)"
)]
pub struct UnknownJobState(String);

impl FromStr for JobState {
    type Err = UnknownJobState;

    fn from_str(s: &str) -> Result<JobState, UnknownJobState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_string()))
    }
}

/// A series that went quiet and has no verdict for its latest instance yet.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct UnjudgedSeries {
    pub id: i64,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub last_received_at: String,
    /// Moved to us from PACS as a job's prior: judged, but it starts no job.
    pub retrieved_prior: bool,
}

/// What selection decided about a series, as recorded for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub flair: bool,
    /// The best FLAIR of its study: it starts a job.
    pub chosen: bool,
    pub rule: String,
    pub why: String,
    /// The header selection read (JSON).
    pub header: String,
}

/// A recorded verdict, as read back.
#[derive(Debug, Clone, PartialEq, FromRow, Serialize)]
pub struct VerdictRow {
    pub series_instance_uid: String,
    pub judged_received_at: String,
    pub flair: bool,
    /// The best FLAIR of its study when it was judged: it started a job.
    pub chosen: bool,
    pub rule: String,
    pub why: String,
    /// The header selection read (JSON).
    pub header: String,
    pub judged_at: String,
}

/// A FLAIR series of the same patient in an earlier study.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct PriorCandidate {
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub header: String,
    /// The current series' Study Date, for the interval.
    pub current_study_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, FromRow, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub current_series: String,
    pub input_received_at: String,
    pub prior_series: Option<String>,
    pub prior_why: Option<String>,
    pub state: String,
    pub reason: Option<String>,
    pub attempts: i64,
    pub created_at: String,
    pub updated_at: String,
    pub summary: Option<String>,
    /// What asking PACS for a prior found; None when PACS was not asked.
    pub prior_query: Option<String>,
}

#[derive(Debug, Clone, PartialEq, FromRow, Serialize)]
pub struct JobEvent {
    pub state: String,
    pub at: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, FromRow, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub job: i64,
    pub destination: String,
    pub file_path: String,
    pub sop_instance_uid: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub sent_at: Option<String>,
}

/// One result object to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub destination: String,
    /// Relative to the data directory.
    pub file_path: String,
    pub sop_instance_uid: String,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The peer answered with this DIMSE status (0 is success).
    Status(u16),
    /// No answer: the connection or the association failed.
    Error(String),
}

impl Attempt {
    /// The peer holds the object: it answered success or a warning.
    pub fn delivered(&self) -> bool {
        matches!(self, Attempt::Status(s) if crate::dicom::status::is_stored(*s))
    }
}

/// Counts for `status`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct WorkflowCounts {
    pub jobs: Vec<(String, i64)>,
    pub outbox: Vec<(String, i64)>,
}

impl Index {
    /// Series whose latest instance has no verdict yet, oldest first.
    pub async fn unjudged_series(&self) -> Result<Vec<UnjudgedSeries>, IndexError> {
        Ok(sqlx::query_as::<_, UnjudgedSeries>(
            "SELECT se.id, se.series_instance_uid, st.study_instance_uid, se.last_received_at,
                    EXISTS (SELECT 1 FROM prior_retrievals r
                            WHERE r.series_instance_uid = se.series_instance_uid) AS retrieved_prior
             FROM series se JOIN studies st ON st.id = se.study
             LEFT JOIN series_verdicts v ON v.series = se.id
             WHERE v.series IS NULL OR v.judged_received_at <> se.last_received_at
             ORDER BY se.last_received_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Record (or replace) the verdict on a series for the instance time it was judged at.
    pub async fn record_verdict(
        &self,
        series: &UnjudgedSeries,
        verdict: &Judgement,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO series_verdicts (series, judged_received_at, flair, chosen, rule, why, header, judged_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (series) DO UPDATE SET
                 judged_received_at = excluded.judged_received_at, flair = excluded.flair,
                 chosen = excluded.chosen, rule = excluded.rule, why = excluded.why,
                 header = excluded.header, judged_at = excluded.judged_at",
        )
        .bind(series.id)
        .bind(&series.last_received_at)
        .bind(verdict.flair)
        .bind(verdict.chosen)
        .bind(&verdict.rule)
        .bind(&verdict.why)
        .bind(&verdict.header)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The verdict on a series, if it was judged.
    pub async fn verdict(
        &self,
        series_instance_uid: &str,
    ) -> Result<Option<VerdictRow>, IndexError> {
        Ok(sqlx::query_as::<_, VerdictRow>(
            "SELECT se.series_instance_uid, v.judged_received_at, v.flair, v.chosen, v.rule, v.why,
                    v.header, v.judged_at
             FROM series_verdicts v JOIN series se ON se.id = v.series
             WHERE se.series_instance_uid = ?1",
        )
        .bind(series_instance_uid)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The headers (JSON) of the series of a study judged FLAIR.
    pub async fn flair_headers_of_study(
        &self,
        study_instance_uid: &str,
    ) -> Result<Vec<String>, IndexError> {
        Ok(sqlx::query_scalar(
            "SELECT v.header FROM series_verdicts v JOIN series se ON se.id = v.series
             JOIN studies st ON st.id = se.study
             WHERE st.study_instance_uid = ?1 AND v.flair = 1",
        )
        .bind(study_instance_uid)
        .fetch_all(&self.pool)
        .await?)
    }

    /// FLAIR series of the current series' patient in studies dated before its study (or the
    /// same day and earlier), most recent first.
    pub async fn prior_candidates(
        &self,
        current_series: &str,
    ) -> Result<Vec<PriorCandidate>, IndexError> {
        Ok(sqlx::query_as::<_, PriorCandidate>(
            "SELECT se.series_instance_uid, st.study_instance_uid, st.study_date, st.study_time, v.header,
                    cur.study_date AS current_study_date
             FROM series cur_se
             JOIN studies cur ON cur.id = cur_se.study
             JOIN studies st ON st.patient = cur.patient AND st.id <> cur.id
             JOIN series se ON se.study = st.id
             JOIN series_verdicts v ON v.series = se.id AND v.flair = 1
             WHERE cur_se.series_instance_uid = ?1
               AND COALESCE(st.study_date, '') || COALESCE(st.study_time, '')
                   < COALESCE(cur.study_date, '') || COALESCE(cur.study_time, '')
             ORDER BY st.study_date DESC, st.study_time DESC, se.series_number DESC",
        )
        .bind(current_series)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A queued job for the current series as it stands at `input_received_at`, unless one exists
    /// for that input; older jobs of the series that have not started are superseded. Returns the
    /// new job's id.
    pub async fn create_job(
        &self,
        current_series: &str,
        input_received_at: &str,
    ) -> Result<Option<i64>, IndexError> {
        let mut tx = self.pool.begin().await?;
        let now = now_rfc3339();
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO jobs (current_series, input_received_at, state, created_at, updated_at)
             VALUES (?1, ?2, 'queued', ?3, ?3)
             ON CONFLICT (current_series, input_received_at) DO NOTHING
             RETURNING id",
        )
        .bind(current_series)
        .bind(input_received_at)
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            insert_event(&mut tx, id, JobState::Queued, None).await?;
            let superseded: Vec<i64> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'failed', reason = ?3, updated_at = ?4
                 WHERE current_series = ?1 AND id <> ?2 AND state IN ('queued', 'waiting_for_prior')
                 RETURNING id",
            )
            .bind(current_series)
            .bind(id)
            .bind(format!(
                "superseded by job {id}: more instances of the series arrived"
            ))
            .bind(&now)
            .fetch_all(&mut *tx)
            .await?;
            for old in superseded {
                let reason = format!("superseded by job {id}");
                insert_event(&mut tx, old, JobState::Failed, Some(&reason)).await?;
            }
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Take the oldest queued job: one statement, so two workers (or two nodes on one database)
    /// never take the same job.
    pub async fn claim_job(&self) -> Result<Option<JobRow>, IndexError> {
        let mut tx = self.pool.begin().await?;
        let job = sqlx::query_as::<_, JobRow>(concat!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, reason = NULL, updated_at = ?1
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1)
               AND state = 'queued'
             RETURNING ",
            job_columns!()
        ))
        .bind(now_rfc3339())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(job) = &job {
            insert_event(&mut tx, job.id, JobState::Running, None).await?;
        }
        tx.commit().await?;
        Ok(job)
    }

    /// Move a job to `state`, with a reason a person can act on for failures.
    pub async fn set_job_state(
        &self,
        id: i64,
        state: JobState,
        reason: Option<&str>,
    ) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE jobs SET state = ?2, reason = ?3, updated_at = ?4 WHERE id = ?1")
            .bind(id)
            .bind(state.as_str())
            .bind(reason)
            .bind(now_rfc3339())
            .execute(&mut *tx)
            .await?;
        insert_event(&mut tx, id, state, reason).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The prior a job compares with and why it was chosen, or (None) why it runs without one.
    pub async fn set_job_prior(
        &self,
        id: i64,
        prior: Option<&str>,
        why: &str,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "UPDATE jobs SET prior_series = ?2, prior_why = ?3, updated_at = ?4 WHERE id = ?1",
        )
        .bind(id)
        .bind(prior)
        .bind(why)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The analysis of a job is written: keep its summary and queue its deliveries, in one
    /// transaction; the job is `delivering`, or `done` when there is nothing to deliver.
    pub async fn finish_analysis(
        &self,
        id: i64,
        summary_json: &str,
        deliveries: &[Delivery],
    ) -> Result<JobState, IndexError> {
        let mut tx = self.pool.begin().await?;
        let now = now_rfc3339();
        let state = if deliveries.is_empty() {
            JobState::Done
        } else {
            JobState::Delivering
        };
        sqlx::query("UPDATE jobs SET state = ?2, summary = ?3, updated_at = ?4 WHERE id = ?1")
            .bind(id)
            .bind(state.as_str())
            .bind(summary_json)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        for d in deliveries {
            // A re-run of the job writes the same files: its deliveries start again.
            sqlx::query(
                "INSERT INTO outbox (job, destination, file_path, sop_instance_uid, state, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', 0)
                 ON CONFLICT (job, destination, file_path) DO UPDATE SET
                     state = 'pending', attempts = 0, next_attempt_at = 0,
                     sop_instance_uid = excluded.sop_instance_uid",
            )
            .bind(id)
            .bind(&d.destination)
            .bind(&d.file_path)
            .bind(&d.sop_instance_uid)
            .execute(&mut *tx)
            .await?;
        }
        insert_event(&mut tx, id, state, None).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Jobs a crash left `running` are queued again, to run from the start. Returns how many.
    pub async fn requeue_interrupted_jobs(&self) -> Result<u64, IndexError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'queued', updated_at = ?1 WHERE state = 'running' RETURNING id",
        )
        .bind(now_rfc3339())
        .fetch_all(&mut *tx)
        .await?;
        for id in &ids {
            insert_event(
                &mut tx,
                *id,
                JobState::Queued,
                Some("interrupted: run again"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Put a finished job back in the queue (`msnode retry`).
    pub async fn requeue_job(&self, id: i64) -> Result<bool, IndexError> {
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'queued', reason = NULL, prior_query = NULL, updated_at = ?2
             WHERE id = ?1 AND state IN ('failed', 'no_prior', 'done')",
        )
        .bind(id)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 1 {
            let mut tx = self.pool.begin().await?;
            insert_event(&mut tx, id, JobState::Queued, Some("retried")).await?;
            tx.commit().await?;
        }
        Ok(updated == 1)
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobRow>, IndexError> {
        Ok(sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Jobs, newest first, in one state or all.
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        limit: i64,
    ) -> Result<Vec<JobRow>, IndexError> {
        Ok(sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2"
        ))
        .bind(state.map(JobState::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn job_events(&self, id: i64) -> Result<Vec<JobEvent>, IndexError> {
        Ok(sqlx::query_as::<_, JobEvent>(
            "SELECT state, at, reason FROM job_events WHERE job = ?1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn job_outbox(&self, id: i64) -> Result<Vec<OutboxRow>, IndexError> {
        Ok(sqlx::query_as::<_, OutboxRow>(
            "SELECT * FROM outbox WHERE job = ?1 ORDER BY destination, file_path",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Pending deliveries whose time has come (`now` in unix seconds), in job order.
    pub async fn due_deliveries(&self, now: i64) -> Result<Vec<OutboxRow>, IndexError> {
        Ok(sqlx::query_as::<_, OutboxRow>(
            "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY job, id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Record one delivery attempt: sent, pending again at `retry_at`, or failed for good when
    /// `retry_at` is `None`.
    pub async fn record_attempt(
        &self,
        id: i64,
        attempt: &Attempt,
        retry_at: Option<i64>,
    ) -> Result<(), IndexError> {
        let (status, error) = match attempt {
            Attempt::Status(s) => (Some(i64::from(*s)), None),
            Attempt::Error(e) => (None, Some(e.as_str())),
        };
        let state = match (attempt, retry_at) {
            (a, _) if a.delivered() => "sent",
            (_, Some(_)) => "pending",
            (_, None) => "failed",
        };
        sqlx::query(
            "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_status = ?3, last_error = ?4,
                 next_attempt_at = COALESCE(?5, next_attempt_at),
                 sent_at = CASE WHEN ?2 = 'sent' THEN ?6 ELSE sent_at END
             WHERE id = ?1",
        )
        .bind(id)
        .bind(state)
        .bind(status)
        .bind(error)
        .bind(retry_at)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A delivering job whose deliveries all ended becomes `done`, or `failed` naming what was not
    /// delivered. Returns the new state when it changed.
    pub async fn settle_delivery(&self, job: i64) -> Result<Option<JobState>, IndexError> {
        let rows = self.job_outbox(job).await?;
        if rows.iter().any(|r| r.state == "pending") {
            return Ok(None);
        }
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| r.state == "failed")
            .map(|r| {
                let why = match (&r.last_status, &r.last_error) {
                    (Some(s), _) => format!("status {s:#06x}"),
                    (None, Some(e)) => e.clone(),
                    (None, None) => "no answer".into(),
                };
                format!("{} to {} ({why})", r.file_path, r.destination)
            })
            .collect();
        let (state, reason) = if failed.is_empty() {
            (JobState::Done, None)
        } else {
            let reason = format!(
                "{} of {} result(s) not delivered after every attempt: {}",
                failed.len(),
                rows.len(),
                failed.join("; ")
            );
            (JobState::Failed, Some(reason))
        };
        self.set_job_state(job, state, reason.as_deref()).await?;
        Ok(Some(state))
    }

    /// Results not yet delivered, per destination.
    pub async fn outbox_pending(&self) -> Result<Vec<(String, i64)>, IndexError> {
        Ok(sqlx::query_as(
            "SELECT destination, COUNT(*) FROM outbox WHERE state = 'pending'
             GROUP BY destination ORDER BY destination",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deliveries whose last attempt failed (waiting for a retry, or given up), newest first.
    pub async fn outbox_failures(&self, limit: i64) -> Result<Vec<OutboxRow>, IndexError> {
        Ok(sqlx::query_as::<_, OutboxRow>(
            "SELECT * FROM outbox WHERE state = 'failed' OR (state = 'pending' AND attempts > 0)
             ORDER BY id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The Patient ID of each job's current series, for a status page a site allowed to show it.
    pub async fn job_patient_ids(&self, limit: i64) -> Result<Vec<(i64, String)>, IndexError> {
        Ok(sqlx::query_as(
            "SELECT j.id, p.patient_id FROM jobs j
             JOIN series se ON se.series_instance_uid = j.current_series
             JOIN studies st ON st.id = se.study
             JOIN patients p ON p.id = st.patient
             ORDER BY j.id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn workflow_counts(&self) -> Result<WorkflowCounts, IndexError> {
        Ok(WorkflowCounts {
            jobs: sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?,
            outbox: sqlx::query_as(
                "SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state",
            )
            .fetch_all(&self.pool)
            .await?,
        })
    }
}

pub(super) async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    job: i64,
    state: JobState,
    reason: Option<&str>,
) -> Result<(), IndexError> {
    sqlx::query("INSERT INTO job_events (job, state, at, reason) VALUES (?1, ?2, ?3, ?4)")
        .bind(job)
        .bind(state.as_str())
        .bind(now_rfc3339())
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::InstanceRecord;

    async fn index() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).await.unwrap();
        (dir, index)
    }

    /// One instance of a FLAIR series of patient P1 in a study of `date`, judged FLAIR.
    async fn flair_visit(index: &Index, study: &str, series: &str, date: &str) {
        let record = InstanceRecord {
            patient_id: "P1".into(),
            study_instance_uid: study.into(),
            study_date: Some(date.into()),
            series_instance_uid: series.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            sop_instance_uid: format!("{series}.1"),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            file_path: format!("dicom/{study}/{series}/1.dcm"),
            file_size: 10,
            calling_ae: "PACS".into(),
            ..Default::default()
        };
        index.record_instance(&record).await.unwrap();
        let unjudged = index.unjudged_series().await.unwrap();
        let series_row = unjudged
            .iter()
            .find(|s| s.series_instance_uid == series)
            .unwrap();
        let verdict = Judgement {
            flair: true,
            chosen: true,
            rule: "4 name".into(),
            why: "test".into(),
            header: format!(r#"{{"series_instance_uid": "{series}", "instances": 1}}"#),
        };
        index.record_verdict(series_row, &verdict).await.unwrap();
    }

    #[tokio::test]
    async fn prior_candidates_are_the_patients_earlier_flair_most_recent_first() {
        let (_dir, index) = index().await;
        flair_visit(&index, "1.1", "1.1.1", "20100101").await;
        flair_visit(&index, "1.3", "1.3.1", "20120101").await;
        flair_visit(&index, "1.2", "1.2.1", "20110101").await;
        assert!(index.unjudged_series().await.unwrap().is_empty());
        let candidates = index.prior_candidates("1.3.1").await.unwrap();
        let series: Vec<&str> = candidates
            .iter()
            .map(|c| c.series_instance_uid.as_str())
            .collect();
        assert_eq!(series, ["1.2.1", "1.1.1"]);
        assert_eq!(
            candidates[0].current_study_date.as_deref(),
            Some("20120101")
        );
        assert!(index.prior_candidates("1.1.1").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn one_job_per_input_claimed_once_and_superseded_by_a_later_input() {
        let (_dir, index) = index().await;
        let first = index.create_job("1.2.3", "t1").await.unwrap().unwrap();
        assert_eq!(index.create_job("1.2.3", "t1").await.unwrap(), None);
        let second = index.create_job("1.2.3", "t2").await.unwrap().unwrap();
        let old = index.job(first).await.unwrap().unwrap();
        assert_eq!(old.state, "failed");
        assert!(
            old.reason
                .unwrap()
                .contains(&format!("superseded by job {second}"))
        );

        let claimed = index.claim_job().await.unwrap().unwrap();
        assert_eq!(
            (claimed.id, claimed.state.as_str(), claimed.attempts),
            (second, "running", 1)
        );
        assert!(index.claim_job().await.unwrap().is_none(), "claimed twice");
        assert_eq!(index.requeue_interrupted_jobs().await.unwrap(), 1);
        assert_eq!(index.claim_job().await.unwrap().unwrap().attempts, 2);

        let deliveries = [Delivery {
            destination: "PACS".into(),
            file_path: "results/job-2/seg.dcm".into(),
            sop_instance_uid: "2.25.1".into(),
        }];
        let state = index
            .finish_analysis(second, "{}", &deliveries)
            .await
            .unwrap();
        assert_eq!(state, JobState::Delivering);
        let due = index.due_deliveries(0).await.unwrap();
        assert_eq!(due.len(), 1);
        index
            .record_attempt(due[0].id, &Attempt::Error("refused".into()), Some(100))
            .await
            .unwrap();
        assert!(
            index.due_deliveries(99).await.unwrap().is_empty(),
            "retried too early"
        );
        assert_eq!(index.settle_delivery(second).await.unwrap(), None);
        index
            .record_attempt(due[0].id, &Attempt::Status(0xA700), None)
            .await
            .unwrap();
        assert_eq!(
            index.settle_delivery(second).await.unwrap(),
            Some(JobState::Failed)
        );
        let job = index.job(second).await.unwrap().unwrap();
        assert!(job.reason.unwrap().contains("status 0xa700"));
        let events: Vec<String> = index
            .job_events(second)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(
            events,
            [
                "queued",
                "running",
                "queued",
                "running",
                "delivering",
                "failed"
            ]
        );
    }
}
