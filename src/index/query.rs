//! What the index answers to a C-FIND (study and series level) and which files a C-MOVE sends.
//! DICOM matching (PS3.4 C.2.2.2): a key without a value matches everything; `*` and `?` are
//! wildcards (SQLite's GLOB, which is case-sensitive as DICOM matching is); a date key may be a
//! range; a UID key may list several UIDs.

use sqlx::FromRow;

use super::{Index, IndexError};

/// A DICOM match value as a GLOB pattern: `*` and `?` keep their meaning, `[` is literal.
pub fn glob(value: &str) -> String {
    value.replace('[', "[[]")
}

/// A date key (`YYYYMMDD`, `YYYYMMDD-`, `-YYYYMMDD`, `YYYYMMDD-YYYYMMDD`) as its bounds.
pub fn date_range(value: &str) -> (Option<String>, Option<String>) {
    let bound = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    match value.split_once('-') {
        Some((from, to)) => (bound(from), bound(to)),
        None => (bound(value), bound(value)),
    }
}

/// Study-level keys that narrow the answer; None matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StudyKeys {
    pub patient_id: Option<String>,
    /// Backslash-separated list of UIDs.
    pub study_instance_uids: Option<String>,
    pub study_date: Option<String>,
    pub accession_number: Option<String>,
    pub modality: Option<String>,
}

/// Series-level keys that narrow the answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesKeys {
    pub patient_id: Option<String>,
    pub study_instance_uids: Option<String>,
    pub series_instance_uids: Option<String>,
    pub modality: Option<String>,
    pub series_description: Option<String>,
    pub series_number: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct StudyMatch {
    pub patient_id: String,
    pub issuer: String,
    pub study_instance_uid: String,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub accession_number: Option<String>,
    pub study_description: Option<String>,
    /// Backslash-separated, as Modalities in Study is encoded.
    pub modalities: Option<String>,
    pub series: i64,
    pub instances: i64,
}

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct SeriesMatch {
    pub patient_id: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub instances: i64,
}

/// One stored instance to send.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct StoredFile {
    pub sop_instance_uid: String,
    /// Relative to the data directory.
    pub file_path: String,
}

/// The UID-list match of `column` against the optional bound parameter `n`.
macro_rules! uid_list {
    ($column:literal, $n:literal) => {
        concat!(
            "(?",
            $n,
            " IS NULL OR instr('\\' || ?",
            $n,
            " || '\\', '\\' || ",
            $column,
            " || '\\') > 0)"
        )
    };
}

impl Index {
    pub async fn find_studies(&self, keys: &StudyKeys) -> Result<Vec<StudyMatch>, IndexError> {
        let (from, to) = keys
            .study_date
            .as_deref()
            .map(date_range)
            .unwrap_or_default();
        Ok(sqlx::query_as::<_, StudyMatch>(concat!(
            "SELECT p.patient_id, p.issuer, st.study_instance_uid, st.study_date, st.study_time,
                    st.accession_number, st.study_description,
                    (SELECT group_concat(m, '\\') FROM (SELECT DISTINCT se.modality AS m FROM series se
                      WHERE se.study = st.id AND se.modality IS NOT NULL ORDER BY m)) AS modalities,
                    (SELECT COUNT(*) FROM series se WHERE se.study = st.id) AS series,
                    (SELECT COUNT(*) FROM instances i JOIN series se ON se.id = i.series
                      WHERE se.study = st.id) AS instances
             FROM studies st JOIN patients p ON p.id = st.patient
             WHERE (?1 IS NULL OR p.patient_id GLOB ?1)
               AND ",
            uid_list!("st.study_instance_uid", "2"),
            "
               AND (?3 IS NULL OR st.study_date >= ?3)
               AND (?4 IS NULL OR st.study_date <= ?4)
               AND (?5 IS NULL OR st.accession_number GLOB ?5)
               AND (?6 IS NULL OR EXISTS (SELECT 1 FROM series se
                                          WHERE se.study = st.id AND se.modality GLOB ?6))
             ORDER BY st.study_date, st.study_time, st.study_instance_uid"
        ))
        .bind(keys.patient_id.as_deref().map(glob))
        .bind(keys.study_instance_uids.as_deref())
        .bind(from)
        .bind(to)
        .bind(keys.accession_number.as_deref().map(glob))
        .bind(keys.modality.as_deref().map(glob))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn find_series(&self, keys: &SeriesKeys) -> Result<Vec<SeriesMatch>, IndexError> {
        Ok(sqlx::query_as::<_, SeriesMatch>(concat!(
            "SELECT p.patient_id, st.study_instance_uid, se.series_instance_uid, se.modality,
                    se.series_number, se.series_description,
                    (SELECT COUNT(*) FROM instances i WHERE i.series = se.id) AS instances
             FROM series se JOIN studies st ON st.id = se.study JOIN patients p ON p.id = st.patient
             WHERE (?1 IS NULL OR p.patient_id GLOB ?1)
               AND ",
            uid_list!("st.study_instance_uid", "2"),
            " AND ",
            uid_list!("se.series_instance_uid", "3"),
            "
               AND (?4 IS NULL OR se.modality GLOB ?4)
               AND (?5 IS NULL OR se.series_description GLOB ?5)
               AND (?6 IS NULL OR se.series_number = ?6)
             ORDER BY st.study_instance_uid, se.series_number, se.series_instance_uid"
        ))
        .bind(keys.patient_id.as_deref().map(glob))
        .bind(keys.study_instance_uids.as_deref())
        .bind(keys.series_instance_uids.as_deref())
        .bind(keys.modality.as_deref().map(glob))
        .bind(keys.series_description.as_deref().map(glob))
        .bind(keys.series_number)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The stored files a retrieve names: by study, series or SOP Instance UIDs (each a
    /// backslash-separated list, None for any), in series and Instance Number order.
    pub async fn retrieve_files(
        &self,
        studies: Option<&str>,
        series: Option<&str>,
        instances: Option<&str>,
    ) -> Result<Vec<StoredFile>, IndexError> {
        Ok(sqlx::query_as::<_, StoredFile>(concat!(
            "SELECT i.sop_instance_uid, i.file_path
             FROM instances i JOIN series se ON se.id = i.series JOIN studies st ON st.id = se.study
             WHERE ",
            uid_list!("st.study_instance_uid", "1"),
            " AND ",
            uid_list!("se.series_instance_uid", "2"),
            " AND ",
            uid_list!("i.sop_instance_uid", "3"),
            "
             ORDER BY se.id, i.instance_number IS NULL, i.instance_number, i.sop_instance_uid"
        ))
        .bind(studies)
        .bind(series)
        .bind(instances)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_wildcards_become_bounds_and_globs() {
        assert_eq!(
            date_range("20200101-20201231"),
            (Some("20200101".into()), Some("20201231".into()))
        );
        assert_eq!(date_range("-20201231"), (None, Some("20201231".into())));
        assert_eq!(date_range("20200101-"), (Some("20200101".into()), None));
        assert_eq!(
            date_range("20200101"),
            (Some("20200101".into()), Some("20200101".into()))
        );
        assert_eq!(glob("T2*FLAIR[1]?"), "T2*FLAIR[[]1]?");
    }
}
