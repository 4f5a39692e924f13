//! The SQLite index: patients, studies, series and instances, and an audit trail of associations.
//!
//! An instance is recorded in one statement (one transaction) with `synchronous = FULL`: once
//! `record_instance` returns, the row survives a crash or a power cut.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, Row};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The columns of a [`JobRow`], for `concat!` into a static query.
macro_rules! job_columns {
    () => {
        "id, current_series, input_received_at, prior_series, prior_why, state, reason, attempts, \
         created_at, updated_at, summary, prior_query"
    };
}

pub mod jobs;
pub mod query;
pub mod retention;
pub mod retrievals;

pub use jobs::{
    Attempt, Delivery, JobEvent, JobRow, JobState, Judgement, OutboxRow, PriorCandidate,
    UnjudgedSeries, VerdictRow, WorkflowCounts,
};
pub use retrievals::JobPatient;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot open the index database {path}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot bring the index database {path} up to date")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("index database error")]
    Query(#[from] sqlx::Error),
}

/// What the index keeps of one stored instance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceRecord {
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub study_instance_uid: String,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub accession_number: Option<String>,
    pub study_description: Option<String>,
    pub series_instance_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub instance_number: Option<i64>,
    pub transfer_syntax_uid: String,
    /// Relative to the data directory.
    pub file_path: String,
    pub file_size: u64,
    pub calling_ae: String,
    pub association: Option<i64>,
}

/// One indexed instance as read back.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct StoredInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub file_path: String,
    pub file_size: i64,
    pub calling_ae: String,
    pub received_at: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Counts {
    pub patients: i64,
    pub studies: i64,
    pub series: i64,
    pub instances: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct AssociationRow {
    pub id: i64,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer_address: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub instances_stored: i64,
    pub instances_refused: i64,
    pub outcome: String,
}

/// One series as the index holds it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct SeriesRow {
    pub series_instance_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub instances: i64,
    pub last_received_at: String,
}

#[derive(Clone)]
pub struct Index {
    pool: SqlitePool,
}

pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// One row of the append-only audit trail (`migrations/0005_audit.sql`): an association that
/// ended (who sent what) or a delivery attempt (what was sent where).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: String,
    /// `association` or `delivery`.
    pub kind: String,
    /// The calling AE of an association, the destination of a delivery.
    pub ae_title: String,
    pub peer_address: Option<String>,
    pub association: Option<i64>,
    pub job: Option<i64>,
    pub sop_instance_uid: Option<String>,
    pub instances_stored: Option<i64>,
    pub instances_refused: Option<i64>,
    pub status: Option<i64>,
    pub outcome: Option<String>,
}

impl Index {
    /// Open (creating if needed) the index at `path` and apply pending migrations.
    pub async fn open(path: &Path) -> Result<Index, IndexError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| IndexError::Open {
                path: path.to_owned(),
                source: sqlx::Error::Io(e),
            })?;
        }
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|source| IndexError::Open {
                path: path.to_owned(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed row is on disk before Success is sent.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A local file cannot go away under us: skip the ping round trip on every acquire.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|source| IndexError::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!()
            .run(&pool)
            .await
            .map_err(|source| IndexError::Migrate {
                path: path.to_owned(),
                source,
            })?;
        Ok(Index { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Insert or update the instance and its patient, study and series in one transaction
    /// (one statement: see `migrations/0002_instance_arrivals.sql`). Returns the file path the
    /// instance had before when it was stored under another path.
    pub async fn record_instance(
        &self,
        rec: &InstanceRecord,
    ) -> Result<Option<String>, IndexError> {
        Ok(record_arrival(&self.pool, rec, now_rfc3339()).await?)
    }

    /// [`Index::record_instance`] for several instances in one transaction (one commit, one
    /// sync): all are recorded, or none. The replaced paths, in the order of `recs`.
    pub async fn record_instances(
        &self,
        recs: &[&InstanceRecord],
    ) -> Result<Vec<Option<String>>, IndexError> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let received_at = now_rfc3339();
        let mut previous = Vec::with_capacity(recs.len());
        for rec in recs {
            previous.push(record_arrival(&mut *transaction, rec, received_at.clone()).await?);
        }
        transaction.commit().await?;
        Ok(previous)
    }

    /// The audit trail from `since` (RFC 3339, UTC) on, oldest first.
    pub async fn audit_events(&self, since: &str) -> Result<Vec<AuditEvent>, IndexError> {
        Ok(sqlx::query_as::<_, AuditEvent>(
            "SELECT id, at, kind, ae_title, peer_address, association, job, sop_instance_uid,
                    instances_stored, instances_refused, status, outcome
             FROM audit_events WHERE at >= ?1 ORDER BY at, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Take and release SQLite's write lock: the index accepts writes now.
    pub async fn check_writable(&self) -> Result<(), IndexError> {
        let transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        transaction.rollback().await?;
        Ok(())
    }

    /// Whether an indexed instance is stored at `file_path` (relative to the data directory).
    pub async fn file_is_indexed(&self, file_path: &str) -> Result<bool, IndexError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM instances WHERE file_path = ?1)")
                .bind(file_path)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Start an audit row for an association; returns its id.
    pub async fn begin_association(
        &self,
        calling_ae: &str,
        called_ae: &str,
        peer_address: &str,
        outcome: &str,
    ) -> Result<i64, IndexError> {
        let id = sqlx::query(
            "INSERT INTO associations (calling_ae, called_ae, peer_address, started_at, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )
        .bind(calling_ae)
        .bind(called_ae)
        .bind(peer_address)
        .bind(now_rfc3339())
        .bind(outcome)
        .fetch_one(&self.pool)
        .await?
        .get(0);
        Ok(id)
    }

    /// Audit an association that never started (rejected, or broken during negotiation).
    pub async fn record_refused_association(
        &self,
        calling_ae: &str,
        called_ae: &str,
        peer_address: &str,
        outcome: &str,
    ) -> Result<(), IndexError> {
        let now = now_rfc3339();
        sqlx::query(
            "INSERT INTO associations (calling_ae, called_ae, peer_address, started_at, ended_at, outcome)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        )
        .bind(calling_ae)
        .bind(called_ae)
        .bind(peer_address)
        .bind(now)
        .bind(outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn end_association(
        &self,
        id: i64,
        stored: u64,
        refused: u64,
        outcome: &str,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "UPDATE associations SET ended_at = ?2, instances_stored = ?3, instances_refused = ?4, outcome = ?5
             WHERE id = ?1",
        )
        .bind(id)
        .bind(now_rfc3339())
        .bind(stored as i64)
        .bind(refused as i64)
        .bind(outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn counts(&self) -> Result<Counts, IndexError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM patients), (SELECT COUNT(*) FROM studies),
                    (SELECT COUNT(*) FROM series), (SELECT COUNT(*) FROM instances),
                    (SELECT COALESCE(SUM(file_size), 0) FROM instances)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Counts {
            patients: row.get(0),
            studies: row.get(1),
            series: row.get(2),
            instances: row.get(3),
            bytes: row.get(4),
        })
    }

    pub async fn recent_associations(&self, limit: i64) -> Result<Vec<AssociationRow>, IndexError> {
        Ok(sqlx::query_as::<_, AssociationRow>(
            "SELECT id, calling_ae, called_ae, peer_address, started_at, ended_at, instances_stored,
                    instances_refused, outcome
             FROM associations ORDER BY id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The files of a series, relative to the data directory, in Instance Number order (then
    /// SOP Instance UID); empty when the index holds no such series.
    pub async fn series_files(
        &self,
        series_instance_uid: &str,
    ) -> Result<Vec<PathBuf>, IndexError> {
        let paths: Vec<String> = sqlx::query_scalar(
            "SELECT i.file_path FROM instances i JOIN series se ON se.id = i.series
             WHERE se.series_instance_uid = ?1
             ORDER BY i.instance_number IS NULL, i.instance_number, i.sop_instance_uid",
        )
        .bind(series_instance_uid)
        .fetch_all(&self.pool)
        .await?;
        Ok(paths.into_iter().map(PathBuf::from).collect())
    }

    /// The series of a study, in Series Number order.
    pub async fn study_series(
        &self,
        study_instance_uid: &str,
    ) -> Result<Vec<SeriesRow>, IndexError> {
        Ok(sqlx::query_as::<_, SeriesRow>(
            "SELECT se.series_instance_uid, se.modality, se.series_number, se.series_description,
                    (SELECT COUNT(*) FROM instances i WHERE i.series = se.id) AS instances,
                    se.last_received_at
             FROM series se JOIN studies st ON st.id = se.study
             WHERE st.study_instance_uid = ?1
             ORDER BY se.series_number IS NULL, se.series_number, se.series_instance_uid",
        )
        .bind(study_instance_uid)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn instances(&self) -> Result<Vec<StoredInstance>, IndexError> {
        Ok(sqlx::query_as::<_, StoredInstance>(
            "SELECT i.sop_instance_uid, i.sop_class_uid, se.series_instance_uid, st.study_instance_uid,
                    i.transfer_syntax_uid, i.file_path, i.file_size, i.calling_ae, i.received_at
             FROM instances i JOIN series se ON se.id = i.series JOIN studies st ON st.id = se.study
             ORDER BY i.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Record one arrival: the path of the copy it replaces, if any.
async fn record_arrival<'c, E>(
    executor: E,
    rec: &InstanceRecord,
    received_at: String,
) -> Result<Option<String>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    // Both statements go to SQLite's thread in one request; the first yields the old path.
    let previous_paths: Vec<String> = sqlx::query_scalar(
        "SELECT file_path FROM instances WHERE sop_instance_uid = ?13;
         INSERT INTO instance_arrivals (
             patient_id, issuer, study_instance_uid, study_date, study_time, accession_number,
             study_description, series_instance_uid, modality, series_number, series_description,
             frame_of_reference_uid, sop_instance_uid, sop_class_uid, instance_number,
             transfer_syntax_uid, file_path, file_size, calling_ae, association, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                 ?19, ?20, ?21)",
    )
    .bind(&rec.patient_id)
    .bind(&rec.issuer_of_patient_id)
    .bind(&rec.study_instance_uid)
    .bind(&rec.study_date)
    .bind(&rec.study_time)
    .bind(&rec.accession_number)
    .bind(&rec.study_description)
    .bind(&rec.series_instance_uid)
    .bind(&rec.modality)
    .bind(rec.series_number)
    .bind(&rec.series_description)
    .bind(&rec.frame_of_reference_uid)
    .bind(&rec.sop_instance_uid)
    .bind(&rec.sop_class_uid)
    .bind(rec.instance_number)
    .bind(&rec.transfer_syntax_uid)
    .bind(&rec.file_path)
    .bind(rec.file_size as i64)
    .bind(&rec.calling_ae)
    .bind(rec.association)
    .bind(received_at)
    // fetch_all, not fetch_optional: the stream must be run to its end for the INSERT to run.
    .fetch_all(executor)
    .await?;
    Ok(previous_paths
        .into_iter()
        .next()
        .filter(|p| *p != rec.file_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sop: &str, series: &str, path: &str) -> InstanceRecord {
        InstanceRecord {
            patient_id: "P1".into(),
            study_instance_uid: "1.2.3".into(),
            series_instance_uid: series.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            sop_instance_uid: sop.into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            file_path: path.into(),
            file_size: 10,
            calling_ae: "PACS".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn series_files_and_study_series_come_from_the_rows_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).await.unwrap();
        for (sop, series, number, instance) in [
            ("1.3", "1.2.3.4", 4, Some(3)),
            ("1.1", "1.2.3.4", 4, Some(1)),
            ("1.9", "1.2.3.4", 4, None),
            ("1.2", "1.2.3.4", 4, Some(2)),
            ("2.1", "1.2.3.5", 2, Some(1)),
        ] {
            let mut rec = record(sop, series, &format!("dicom/s/{series}/{sop}.dcm"));
            rec.series_number = Some(number);
            rec.instance_number = instance;
            index.record_instance(&rec).await.unwrap();
        }
        let files = index.series_files("1.2.3.4").await.unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["1.1.dcm", "1.2.dcm", "1.3.dcm", "1.9.dcm"]);
        assert!(index.series_files("9.9").await.unwrap().is_empty());
        let series = index.study_series("1.2.3").await.unwrap();
        let listed: Vec<(&str, Option<i64>, i64)> = series
            .iter()
            .map(|s| (s.series_instance_uid.as_str(), s.series_number, s.instances))
            .collect();
        assert_eq!(listed, [("1.2.3.5", Some(2), 1), ("1.2.3.4", Some(4), 4)]);
    }

    #[tokio::test]
    async fn resending_an_instance_keeps_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("db/index.sqlite"))
            .await
            .unwrap();
        assert_eq!(
            index
                .record_instance(&record("1.1", "1.2.3.4", "a"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            index
                .record_instance(&record("1.1", "1.2.3.4", "a"))
                .await
                .unwrap(),
            None
        );
        index
            .record_instance(&record("1.2", "1.2.3.4", "b"))
            .await
            .unwrap();
        let counts = index.counts().await.unwrap();
        assert_eq!(
            (
                counts.patients,
                counts.studies,
                counts.series,
                counts.instances
            ),
            (1, 1, 1, 2)
        );
        assert_eq!(counts.bytes, 20);
        // The same SOP Instance UID moved to another series: one row, and the old path is handed back.
        let moved = index
            .record_instance(&record("1.1", "1.2.3.5", "c"))
            .await
            .unwrap();
        assert_eq!(moved.as_deref(), Some("a"));
        let counts = index.counts().await.unwrap();
        assert_eq!((counts.series, counts.instances), (2, 2));
        let moved = index
            .instances()
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.sop_instance_uid == "1.1")
            .unwrap();
        assert_eq!(
            (moved.file_path.as_str(), moved.series_instance_uid.as_str()),
            ("c", "1.2.3.5")
        );
    }

    #[tokio::test]
    async fn a_later_instance_without_an_attribute_keeps_what_an_earlier_one_said() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).await.unwrap();
        let mut first = record("1.1", "1.2.3.4", "a");
        first.study_description = Some("MS follow-up".into());
        first.series_description = Some("FLAIR".into());
        index.record_instance(&first).await.unwrap();
        index
            .record_instance(&record("1.2", "1.2.3.4", "b"))
            .await
            .unwrap();
        let (study, series): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT st.study_description, se.series_description
             FROM series se JOIN studies st ON st.id = se.study",
        )
        .fetch_one(&index.pool)
        .await
        .unwrap();
        assert_eq!(
            (study.as_deref(), series.as_deref()),
            (Some("MS follow-up"), Some("FLAIR"))
        );
    }

    #[tokio::test]
    async fn associations_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).await.unwrap();
        let id = index
            .begin_association("PACS", "MSNODE", "127.0.0.1:5000", "accepted")
            .await
            .unwrap();
        index.end_association(id, 3, 1, "released").await.unwrap();
        let rows = index.recent_associations(10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].instances_stored, rows[0].instances_refused),
            (3, 1)
        );
        assert_eq!(rows[0].outcome, "released");
        assert!(rows[0].ended_at.is_some());
    }
}
