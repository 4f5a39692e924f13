//! Priors from PACS: a job whose patient has no prior in the index waits (`waiting_for_prior`)
//! while every peer with `query_for_priors` is asked in turn:
//!
//! 1. C-FIND at study level (Patient Root): the patient's MR studies dated at least the minimum
//!    interval before the current one, taken in the order of the prior policy;
//! 2. C-FIND at series level in each: MR series whose description or protocol matches a FLAIR
//!    name pattern (rule 4 of [`selection`](super::selection); a PACS's answer carries no more);
//! 3. C-MOVE of those series to our own AE title (they arrive through the SCP), or C-GET of them
//!    (`retrieve = "get"`: they arrive on our association); they are recorded as this job's prior
//!    (so they start no job themselves) and judged at once.
//!
//! The first peer that yields a prior the index accepts ends the wait: the job is queued again
//! and a worker finds the prior in the index. Otherwise the job ends `no_prior` with what each
//! peer answered. Each peer gets `retrieve_timeout_s` in all.

use std::sync::Arc;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::complete;
use super::{PriorSource, WorkflowError, WorkflowSettings, prior};
use crate::config::{PriorPolicy, RetrieveMethod};
use crate::dicom::read::text;
use crate::index::{Index, JobPatient, JobRow, JobState};
use crate::ingest::Ingest;
use crate::logging::chain;
use crate::net::identifier::{Keys, Level};
use crate::net::retrieve::{self, RetrieveError};
use crate::net::scu::Remote;

/// Ask PACS for the prior of every job waiting for one.
pub async fn step(
    settings: Arc<WorkflowSettings>,
    index: Index,
    ingest: Arc<Ingest>,
    queued: Arc<Notify>,
) -> Result<(), WorkflowError> {
    for job in index.jobs_waiting_for_prior().await? {
        let (outcome, arrived) = ask_for_prior(&settings, &index, &ingest, &job).await?;
        // Without a prior the job runs again all the same when a single-visit model reports
        // the visit's lesion load.
        let requeue = arrived || settings.single_visit.is_some();
        let state = index.finish_prior_query(job.id, &outcome, requeue).await?;
        if arrived {
            info!(job = job.id, %outcome, "prior retrieved from PACS");
        } else {
            warn!(job = job.id, %outcome, "no prior from PACS");
        }
        if state == JobState::Queued {
            queued.notify_waiters();
        }
    }
    Ok(())
}

/// What asking every peer found, and whether a prior the index accepts arrived.
async fn ask_for_prior(
    settings: &WorkflowSettings,
    index: &Index,
    ingest: &Ingest,
    job: &JobRow,
) -> Result<(String, bool), WorkflowError> {
    let patient = index.job_patient(&job.current_series).await?;
    let mut answers = Vec::new();
    for source in &settings.prior_sources {
        let remote = &source.remote;
        let peer = Peer {
            source,
            ingest,
            patient: &patient,
        };
        let asked = tokio::time::timeout(
            settings.prior.retrieve_timeout,
            ask_peer(settings, index, job, &peer),
        )
        .await;
        let answer = match asked {
            Ok(Ok(Asked::Moved(what))) => {
                let candidates = index.prior_candidates(&job.current_series).await?;
                match prior::choose(&candidates, &settings.prior) {
                    Ok(_) => return Ok((format!("{}: {what}", remote.called_ae), true)),
                    Err(why) => format!("{}: {what}, but {why}", remote.called_ae),
                }
            }
            Ok(Ok(Asked::Nothing(why))) => format!("{}: {why}", remote.called_ae),
            Ok(Err(e)) => chain(&e),
            Err(_) => format!(
                "{}: no prior within {} s",
                remote.called_ae,
                settings.prior.retrieve_timeout.as_secs()
            ),
        };
        answers.push(answer);
    }
    Ok((
        format!("no prior in the index; {}", answers.join("; ")),
        false,
    ))
}

/// What one peer gave.
enum Asked {
    /// Series were moved to us: what, said for the job record.
    Moved(String),
    /// Nothing to move, and why.
    Nothing(String),
}

#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error(transparent)]
    Retrieve(#[from] RetrieveError),
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error("index")]
    Index(#[from] crate::index::IndexError),
}

/// A study a peer holds, as its C-FIND match says.
struct FoundStudy {
    uid: String,
    date: String,
    time: String,
}

/// One PACS being asked, for one patient.
struct Peer<'a> {
    source: &'a PriorSource,
    ingest: &'a Ingest,
    patient: &'a JobPatient,
}

async fn ask_peer(
    settings: &WorkflowSettings,
    index: &Index,
    job: &JobRow,
    peer: &Peer<'_>,
) -> Result<Asked, AskError> {
    let (remote, patient) = (&peer.source.remote, peer.patient);
    let latest = patient
        .study_date
        .as_deref()
        .and_then(|d| prior::latest_prior_date(d, &settings.prior));
    let studies = earlier_studies(remote, patient, latest.as_deref(), settings).await?;
    if studies.is_empty() {
        return Ok(Asked::Nothing(format!(
            "no MR study of the patient dated {}",
            latest.map_or("before the current one".into(), |d| format!(
                "{d} or earlier"
            ))
        )));
    }
    for study in &studies {
        let series = flair_series(remote, patient, &study.uid, settings).await?;
        if series.is_empty() {
            continue;
        }
        index
            .record_prior_retrieval(job.id, &remote.called_ae, &series)
            .await?;
        let mut moved = 0u32;
        for uid in &series {
            let keys = Keys::at(Level::Series)
                .with(tags::PATIENT_ID, VR::LO, &patient.patient_id)
                .with(tags::STUDY_INSTANCE_UID, VR::UI, &study.uid)
                .with(tags::SERIES_INSTANCE_UID, VR::UI, uid)
                .build();
            let outcome = match peer.source.retrieve {
                // Our own AE title: the PACS must know it as a move destination.
                RetrieveMethod::Move => {
                    retrieve::move_to(remote, &keys, &remote.calling_ae).await?
                }
                RetrieveMethod::Get => retrieve::get(remote, &keys, peer.ingest).await?,
            };
            moved += u32::from(outcome.sub_operations.completed.unwrap_or(0));
        }
        complete::judge_now(settings, index, &series).await?;
        let verb = match peer.source.retrieve {
            RetrieveMethod::Move => "moved",
            RetrieveMethod::Get => "got",
        };
        return Ok(Asked::Moved(format!(
            "{verb} {} FLAIR series ({moved} instances) of study {} dated {}",
            series.len(),
            study.uid,
            study.date
        )));
    }
    Ok(Asked::Nothing(format!(
        "{} earlier MR studies, none with a series named as FLAIR",
        studies.len()
    )))
}

/// The patient's MR studies on the peer dated no later than `latest`, in the policy's order.
async fn earlier_studies(
    remote: &Remote,
    patient: &JobPatient,
    latest: Option<&str>,
    settings: &WorkflowSettings,
) -> Result<Vec<FoundStudy>, RetrieveError> {
    let range = latest.map(|d| format!("-{d}")).unwrap_or_default();
    let mut keys = Keys::at(Level::Study)
        .with(tags::PATIENT_ID, VR::LO, &patient.patient_id)
        .with(tags::STUDY_INSTANCE_UID, VR::UI, "")
        .with(tags::STUDY_DATE, VR::DA, &range)
        .with(tags::STUDY_TIME, VR::TM, "")
        .with(tags::MODALITIES_IN_STUDY, VR::CS, "MR");
    if !patient.issuer.is_empty() {
        keys = keys.with(tags::ISSUER_OF_PATIENT_ID, VR::LO, &patient.issuer);
    }
    let found = retrieve::find(remote, &keys.build()).await?;
    let mut studies: Vec<FoundStudy> = found
        .iter()
        .filter_map(|m| {
            Some(FoundStudy {
                uid: text(m, tags::STUDY_INSTANCE_UID)?,
                date: text(m, tags::STUDY_DATE).unwrap_or_default(),
                time: text(m, tags::STUDY_TIME).unwrap_or_default(),
            })
        })
        // A PACS that ignores the date range must not hand back the current study or a later one.
        .filter(|s| s.uid != patient.study_instance_uid)
        .filter(|s| latest.is_none_or(|l| !s.date.is_empty() && s.date.as_str() <= l))
        .collect();
    studies.sort_by(|a, b| (&a.date, &a.time).cmp(&(&b.date, &b.time)));
    if settings.prior.policy == PriorPolicy::MostRecent {
        studies.reverse();
    }
    Ok(studies)
}

/// The MR series of a study on the peer whose names say FLAIR.
async fn flair_series(
    remote: &Remote,
    patient: &JobPatient,
    study: &str,
    settings: &WorkflowSettings,
) -> Result<Vec<String>, RetrieveError> {
    let keys = Keys::at(Level::Series)
        .with(tags::PATIENT_ID, VR::LO, &patient.patient_id)
        .with(tags::STUDY_INSTANCE_UID, VR::UI, study)
        .with(tags::SERIES_INSTANCE_UID, VR::UI, "")
        .with(tags::MODALITY, VR::CS, "")
        .with(tags::SERIES_NUMBER, VR::IS, "")
        .with(tags::SERIES_DESCRIPTION, VR::LO, "")
        .with(tags::PROTOCOL_NAME, VR::LO, "")
        .build();
    let found = retrieve::find(remote, &keys).await?;
    Ok(found
        .iter()
        .filter(|m| text(m, tags::MODALITY).as_deref() == Some("MR"))
        .filter(|m| names_say_flair(m, settings))
        .filter_map(|m| text(m, tags::SERIES_INSTANCE_UID))
        .collect())
}

fn names_say_flair(series: &InMemDicomObject, settings: &WorkflowSettings) -> bool {
    let description = text(series, tags::SERIES_DESCRIPTION).unwrap_or_default();
    let protocol = text(series, tags::PROTOCOL_NAME).unwrap_or_default();
    settings
        .selection
        .name_match(&[
            ("series description", &description),
            ("protocol name", &protocol),
        ])
        .is_some()
}
