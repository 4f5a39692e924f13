//! Prior matching in the index: the same patient (Patient ID and its issuer), an earlier study,
//! a FLAIR series in it. The policy picks the study (`most_recent` earlier one at least the
//! minimum interval before, or the `oldest`: the baseline); inside it, the best-ranked FLAIR.

use time::{Date, Month};

use super::selection::{SeriesHeader, rank};
use crate::config::{PriorConfig, PriorPolicy};
use crate::index::PriorCandidate;

/// The chosen prior series and why, or why there is none.
pub fn choose(
    candidates: &[PriorCandidate],
    policy: &PriorConfig,
) -> Result<(String, String), String> {
    if candidates.is_empty() {
        return Err("no earlier FLAIR of this patient in the index".into());
    }
    let current = candidates[0]
        .current_study_date
        .as_deref()
        .and_then(parse_date);
    let interval = |c: &PriorCandidate| -> Option<i64> {
        let prior = c.study_date.as_deref().and_then(parse_date)?;
        Some((current? - prior).whole_days())
    };
    let eligible: Vec<&PriorCandidate> = candidates
        .iter()
        .filter(|c| interval(c).is_none_or(|days| days >= i64::from(policy.min_interval_days)))
        .collect();
    if eligible.is_empty() {
        return Err(format!(
            "{} earlier FLAIR series, none at least {} days before the current study",
            candidates.len(),
            policy.min_interval_days
        ));
    }
    // Candidates come most recent first.
    let study = match policy.policy {
        PriorPolicy::MostRecent => &eligible[0].study_instance_uid,
        PriorPolicy::Oldest => &eligible[eligible.len() - 1].study_instance_uid,
    };
    let in_study: Vec<&&PriorCandidate> = eligible
        .iter()
        .filter(|c| &c.study_instance_uid == study)
        .collect();
    let mut headers: Vec<SeriesHeader> = in_study
        .iter()
        .filter_map(|c| serde_json::from_str(&c.header).ok())
        .collect();
    rank(&mut headers);
    let chosen = headers
        .first()
        .map(|h| h.series_instance_uid.clone())
        .unwrap_or_else(|| in_study[0].series_instance_uid.clone());
    let prior = in_study
        .iter()
        .find(|c| c.series_instance_uid == chosen)
        .unwrap_or(&in_study[0]);
    let days = interval(prior).map_or("an unknown number of".to_string(), |d| d.to_string());
    let rule = match policy.policy {
        PriorPolicy::MostRecent => "the most recent earlier study",
        PriorPolicy::Oldest => "the oldest study (baseline)",
    };
    let why = format!(
        "{rule} with a FLAIR, {} days before (study {} of {}; {} FLAIR series there, the best ranked taken)",
        days,
        prior.study_instance_uid,
        prior.study_date.as_deref().unwrap_or("no date"),
        in_study.len()
    );
    Ok((chosen, why))
}

/// The latest Study Date (YYYYMMDD) a prior of a study dated `current` may have under the
/// minimum interval; None when the current study has no valid date.
pub fn latest_prior_date(current: &str, policy: &PriorConfig) -> Option<String> {
    let latest = parse_date(current)? - time::Duration::days(i64::from(policy.min_interval_days));
    Some(format!(
        "{:04}{:02}{:02}",
        latest.year(),
        u8::from(latest.month()),
        latest.day()
    ))
}

/// A DICOM date (YYYYMMDD).
fn parse_date(da: &str) -> Option<Date> {
    let da = da.trim();
    if da.len() != 8 {
        return None;
    }
    let year = da[0..4].parse().ok()?;
    let month = Month::try_from(da[4..6].parse::<u8>().ok()?).ok()?;
    let day = da[6..8].parse().ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_prior_date_keeps_the_minimum_interval() {
        let policy = |days| PriorConfig {
            policy: PriorPolicy::MostRecent,
            min_interval_days: days,
            retrieve_timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(
            latest_prior_date("20240301", &policy(30)).as_deref(),
            Some("20240131")
        );
        assert_eq!(
            latest_prior_date("20240301", &policy(0)).as_deref(),
            Some("20240301")
        );
        assert_eq!(latest_prior_date("2024", &policy(30)), None);
    }

    fn candidate(series: &str, study: &str, date: &str) -> PriorCandidate {
        let header = SeriesHeader {
            series_instance_uid: series.into(),
            acquisition_type: "2D".into(),
            instances: 40,
            ..Default::default()
        };
        PriorCandidate {
            series_instance_uid: series.into(),
            study_instance_uid: study.into(),
            study_date: Some(date.into()),
            study_time: None,
            header: serde_json::to_string(&header).unwrap(),
            current_study_date: Some("20120101".into()),
        }
    }

    #[test]
    fn policy_and_interval_pick_the_prior() {
        // Most recent first, as the index returns them.
        let candidates = [
            candidate("s3", "st3", "20111220"),
            candidate("s2", "st2", "20110601"),
            candidate("s1", "st1", "20100101"),
        ];
        let most_recent = PriorConfig {
            policy: PriorPolicy::MostRecent,
            min_interval_days: 30,
            retrieve_timeout: std::time::Duration::from_secs(1),
        };
        let (series, why) = choose(&candidates, &most_recent).unwrap();
        assert_eq!(series, "s2", "s3 is only 12 days before");
        assert!(why.contains("214 days before"), "{why}");
        let no_minimum = PriorConfig {
            min_interval_days: 0,
            ..most_recent.clone()
        };
        assert_eq!(choose(&candidates, &no_minimum).unwrap().0, "s3");
        let baseline = PriorConfig {
            policy: PriorPolicy::Oldest,
            ..most_recent.clone()
        };
        assert_eq!(choose(&candidates, &baseline).unwrap().0, "s1");
        let strict = PriorConfig {
            min_interval_days: 1000,
            ..most_recent
        };
        let why = choose(&candidates, &strict).unwrap_err();
        assert!(why.contains("none at least 1000 days"), "{why}");
        assert!(
            choose(&[], &no_minimum)
                .unwrap_err()
                .contains("no earlier FLAIR")
        );
    }
}
