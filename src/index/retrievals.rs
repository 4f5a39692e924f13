//! Priors asked of PACS: jobs waiting for one, the series moved to us for them, and what the
//! query found. Plain SQL, as the rest of the workflow's tables.

use sqlx::FromRow;

use super::jobs::{JobRow, JobState, insert_event};
use super::{Index, IndexError, now_rfc3339};

/// Who the current series of a job belongs to, for a query to PACS.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct JobPatient {
    pub patient_id: String,
    /// Issuer of Patient ID; empty when the instances had none.
    pub issuer: String,
    pub study_instance_uid: String,
    pub study_date: Option<String>,
}

impl Index {
    /// Jobs waiting for a prior that PACS was not asked for yet, oldest first. A job the node
    /// stopped during its query is still here at the next start and is asked again.
    pub async fn jobs_waiting_for_prior(&self) -> Result<Vec<JobRow>, IndexError> {
        Ok(sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE state = 'waiting_for_prior' AND prior_query IS NULL ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn job_patient(&self, current_series: &str) -> Result<JobPatient, IndexError> {
        Ok(sqlx::query_as::<_, JobPatient>(
            "SELECT p.patient_id, p.issuer, st.study_instance_uid, st.study_date
             FROM series se JOIN studies st ON st.id = se.study JOIN patients p ON p.id = st.patient
             WHERE se.series_instance_uid = ?1",
        )
        .bind(current_series)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Remember, before asking for them, that these series come as the prior of `job`: when
    /// they arrive they start no job of their own.
    pub async fn record_prior_retrieval(
        &self,
        job: i64,
        peer: &str,
        series: &[String],
    ) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        for uid in series {
            sqlx::query(
                "INSERT INTO prior_retrievals (series_instance_uid, job, peer, requested_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (series_instance_uid) DO UPDATE SET job = excluded.job,
                     peer = excluded.peer, requested_at = excluded.requested_at",
            )
            .bind(uid)
            .bind(job)
            .bind(peer)
            .bind(now_rfc3339())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Asking PACS ended: keep what it found, and queue the job again (a prior arrived, or the
    /// job runs without one) or end it `no_prior` with `outcome` as the reason.
    pub async fn finish_prior_query(
        &self,
        job: i64,
        outcome: &str,
        requeue: bool,
    ) -> Result<JobState, IndexError> {
        let (state, reason) = if requeue {
            (JobState::Queued, None)
        } else {
            (JobState::NoPrior, Some(outcome))
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = ?2, reason = ?3, prior_query = ?4, updated_at = ?5
             WHERE id = ?1 AND state = 'waiting_for_prior'",
        )
        .bind(job)
        .bind(state.as_str())
        .bind(reason)
        .bind(outcome)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
        insert_event(&mut tx, job, state, Some(outcome)).await?;
        tx.commit().await?;
        Ok(state)
    }
}
