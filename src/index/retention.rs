//! Retention: which studies the node may forget, and forgetting one (rows, then files).

use super::{Index, IndexError};

/// A study whose retention period is over.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ExpiredStudy {
    pub id: i64,
    pub study_instance_uid: String,
}

/// What forgetting a study left to remove from the disk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ForgottenStudy {
    /// Relative to the data directory.
    pub file_paths: Vec<String>,
    pub bytes: i64,
    /// Jobs whose current series was in the study: their results folders go too.
    pub jobs: Vec<i64>,
}

impl Index {
    /// Studies where nothing happened since `cutoff` (no instance received, no job changed), whose
    /// series were all judged since their last instance, and where every job that used one of
    /// their series, as current or prior, ended `done` or `no_prior`:
    /// a job still running, delivering, waiting or `failed` (it may be retried) keeps its data.
    pub async fn expired_studies(&self, cutoff: &str) -> Result<Vec<ExpiredStudy>, IndexError> {
        Ok(sqlx::query_as::<_, ExpiredStudy>(
            "SELECT st.id, st.study_instance_uid FROM studies st
             WHERE NOT EXISTS (SELECT 1 FROM series se WHERE se.study = st.id
                               AND se.last_received_at > ?1)
               AND NOT EXISTS (SELECT 1 FROM series se
                               LEFT JOIN series_verdicts v ON v.series = se.id
                               WHERE se.study = st.id
                                 AND (v.series IS NULL
                                      OR v.judged_received_at <> se.last_received_at))
               AND NOT EXISTS (SELECT 1 FROM series se JOIN jobs j
                                 ON j.current_series = se.series_instance_uid
                                 OR j.prior_series = se.series_instance_uid
                               WHERE se.study = st.id
                                 AND (j.state NOT IN ('done', 'no_prior') OR j.updated_at > ?1))
             ORDER BY st.id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Delete a study's instances, series, verdicts and the study (and its patient when no other
    /// study is left) in one transaction; returns the files and results to remove afterwards.
    /// Jobs, their events and outbox rows stay as history (UIDs only), as does the audit trail.
    pub async fn forget_study(&self, study: i64) -> Result<ForgottenStudy, IndexError> {
        let mut tx = self.pool.begin().await?;
        let files: Vec<(String, i64)> = sqlx::query_as(
            "SELECT i.file_path, i.file_size FROM instances i JOIN series se ON se.id = i.series
             WHERE se.study = ?1",
        )
        .bind(study)
        .fetch_all(&mut *tx)
        .await?;
        let jobs: Vec<i64> = sqlx::query_scalar(
            "SELECT j.id FROM jobs j JOIN series se ON se.series_instance_uid = j.current_series
             WHERE se.study = ?1 ORDER BY j.id",
        )
        .bind(study)
        .fetch_all(&mut *tx)
        .await?;
        let patient: i64 = sqlx::query_scalar("SELECT patient FROM studies WHERE id = ?1")
            .bind(study)
            .fetch_one(&mut *tx)
            .await?;
        for statement in [
            "DELETE FROM instances WHERE series IN (SELECT id FROM series WHERE study = ?1)",
            "DELETE FROM series_verdicts WHERE series IN (SELECT id FROM series WHERE study = ?1)",
            "DELETE FROM series WHERE study = ?1",
            "DELETE FROM studies WHERE id = ?1",
        ] {
            sqlx::query(statement).bind(study).execute(&mut *tx).await?;
        }
        sqlx::query(
            "DELETE FROM patients WHERE id = ?1
             AND NOT EXISTS (SELECT 1 FROM studies WHERE patient = ?1)",
        )
        .bind(patient)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ForgottenStudy {
            bytes: files.iter().map(|(_, size)| size).sum(),
            file_paths: files.into_iter().map(|(path, _)| path).collect(),
            jobs,
        })
    }
}
