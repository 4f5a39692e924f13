//! Query/Retrieve as a provider: what msnode answers to a C-FIND at study or series level, and
//! which stored files a C-MOVE sends, both from the index. A match returns the keys the request
//! asked for: with a value where the index keeps one, empty otherwise (msnode does not keep
//! patient names or birth dates).

use std::collections::BTreeMap;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::identifier::{IdentifierError, Level};
use crate::dicom::read::{int, text};
use crate::index::query::{SeriesKeys, StoredFile, StudyKeys};
use crate::index::{Index, IndexError};

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error(transparent)]
    Identifier(#[from] IdentifierError),
    #[error("C-FIND at {0} level is not answered (STUDY and SERIES are)")]
    FindLevel(&'static str),
    #[error("a {0}-level retrieve needs {1}")]
    MissingKey(&'static str, &'static str),
    #[error("index")]
    Index(#[from] IndexError),
}

/// A key's value, None when the key is absent or empty (it then matches everything).
fn key(identifier: &InMemDicomObject, tag: Tag) -> Option<String> {
    text(identifier, tag).filter(|v| !v.is_empty())
}

/// The values the index holds for one match, by tag.
type Values = BTreeMap<Tag, (VR, String)>;

fn put(values: &mut Values, tag: Tag, vr: VR, value: Option<String>) {
    values.insert(tag, (vr, value.unwrap_or_default()));
}

/// The answer to one match: every key of the request, plus the level and the unique key.
fn answer(request: &InMemDicomObject, level: Level, values: &Values) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    for element in request.iter() {
        let tag = element.header().tag;
        match values.get(&tag) {
            Some((vr, value)) => obj.put(DataElement::new(
                tag,
                *vr,
                PrimitiveValue::from(value.as_str()),
            )),
            None => obj.put(DataElement::new(
                tag,
                element.header().vr,
                PrimitiveValue::Empty,
            )),
        };
    }
    obj.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(level.as_str()),
    ));
    let unique = if level == Level::Study {
        tags::STUDY_INSTANCE_UID
    } else {
        tags::SERIES_INSTANCE_UID
    };
    if let Some((vr, value)) = values.get(&unique) {
        obj.put(DataElement::new(
            unique,
            *vr,
            PrimitiveValue::from(value.as_str()),
        ));
    }
    obj
}

/// The matches of a C-FIND identifier, each as the identifier to answer with.
pub async fn find(
    index: &Index,
    request: &InMemDicomObject,
    retrieve_ae: &str,
) -> Result<Vec<InMemDicomObject>, QrError> {
    let level = Level::of(request)?;
    match level {
        Level::Study => find_studies(index, request, retrieve_ae).await,
        Level::Series => find_series(index, request, retrieve_ae).await,
        Level::Image => Err(QrError::FindLevel(level.as_str())),
    }
}

async fn find_studies(
    index: &Index,
    request: &InMemDicomObject,
    retrieve_ae: &str,
) -> Result<Vec<InMemDicomObject>, QrError> {
    let keys = StudyKeys {
        patient_id: key(request, tags::PATIENT_ID),
        study_instance_uids: key(request, tags::STUDY_INSTANCE_UID),
        study_date: key(request, tags::STUDY_DATE),
        accession_number: key(request, tags::ACCESSION_NUMBER),
        modality: key(request, tags::MODALITIES_IN_STUDY),
    };
    let matches = index.find_studies(&keys).await?;
    Ok(matches
        .into_iter()
        .map(|m| {
            let mut values = Values::new();
            put(&mut values, tags::PATIENT_ID, VR::LO, Some(m.patient_id));
            put(
                &mut values,
                tags::ISSUER_OF_PATIENT_ID,
                VR::LO,
                Some(m.issuer),
            );
            put(
                &mut values,
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                Some(m.study_instance_uid),
            );
            put(&mut values, tags::STUDY_DATE, VR::DA, m.study_date);
            put(&mut values, tags::STUDY_TIME, VR::TM, m.study_time);
            put(
                &mut values,
                tags::ACCESSION_NUMBER,
                VR::SH,
                m.accession_number,
            );
            put(
                &mut values,
                tags::STUDY_DESCRIPTION,
                VR::LO,
                m.study_description,
            );
            put(&mut values, tags::MODALITIES_IN_STUDY, VR::CS, m.modalities);
            let series = Some(m.series.to_string());
            put(
                &mut values,
                tags::NUMBER_OF_STUDY_RELATED_SERIES,
                VR::IS,
                series,
            );
            let instances = Some(m.instances.to_string());
            put(
                &mut values,
                tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
                VR::IS,
                instances,
            );
            put(
                &mut values,
                tags::RETRIEVE_AE_TITLE,
                VR::AE,
                Some(retrieve_ae.into()),
            );
            answer(request, Level::Study, &values)
        })
        .collect())
}

async fn find_series(
    index: &Index,
    request: &InMemDicomObject,
    retrieve_ae: &str,
) -> Result<Vec<InMemDicomObject>, QrError> {
    let keys = SeriesKeys {
        patient_id: key(request, tags::PATIENT_ID),
        study_instance_uids: key(request, tags::STUDY_INSTANCE_UID),
        series_instance_uids: key(request, tags::SERIES_INSTANCE_UID),
        modality: key(request, tags::MODALITY),
        series_description: key(request, tags::SERIES_DESCRIPTION),
        series_number: key(request, tags::SERIES_NUMBER).and(int(request, tags::SERIES_NUMBER)),
    };
    let matches = index.find_series(&keys).await?;
    Ok(matches
        .into_iter()
        .map(|m| {
            let mut values = Values::new();
            put(&mut values, tags::PATIENT_ID, VR::LO, Some(m.patient_id));
            put(
                &mut values,
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                Some(m.study_instance_uid),
            );
            put(
                &mut values,
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                Some(m.series_instance_uid),
            );
            put(&mut values, tags::MODALITY, VR::CS, m.modality);
            let number = m.series_number.map(|n| n.to_string());
            put(&mut values, tags::SERIES_NUMBER, VR::IS, number);
            put(
                &mut values,
                tags::SERIES_DESCRIPTION,
                VR::LO,
                m.series_description,
            );
            let instances = Some(m.instances.to_string());
            put(
                &mut values,
                tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
                VR::IS,
                instances,
            );
            put(
                &mut values,
                tags::RETRIEVE_AE_TITLE,
                VR::AE,
                Some(retrieve_ae.into()),
            );
            answer(request, Level::Series, &values)
        })
        .collect())
}

/// The stored files a C-MOVE (or C-GET) identifier names. The unique key of its level is
/// required, as are those above it in the Study Root model.
pub async fn files_to_retrieve(
    index: &Index,
    request: &InMemDicomObject,
) -> Result<Vec<StoredFile>, QrError> {
    let level = Level::of(request)?;
    let study = key(request, tags::STUDY_INSTANCE_UID);
    let series = key(request, tags::SERIES_INSTANCE_UID);
    let instances = key(request, tags::SOP_INSTANCE_UID);
    let missing = |what| QrError::MissingKey(level.as_str(), what);
    match level {
        Level::Study if study.is_none() => return Err(missing("Study Instance UID")),
        Level::Series if series.is_none() => return Err(missing("Series Instance UID")),
        Level::Image if instances.is_none() => return Err(missing("SOP Instance UID")),
        _ => {}
    }
    Ok(index
        .retrieve_files(study.as_deref(), series.as_deref(), instances.as_deref())
        .await?)
}
