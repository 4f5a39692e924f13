//! TID 1500 Measurement Report in a Comprehensive 3D SR: one volumetric measurement group per
//! lesion (tracking identifier and UID, the SEG segment it is drawn in, finding, finding site,
//! volume in mm3, new or enlarging), a summary, the prior and current studies as evidence, and the
//! caveat that an automated result is for review by a radiologist. Without a prior (a lesion-load
//! analysis) the summary is the lesion load of the one visit and no lesion has a change.

use std::path::Path;

use dicom_core::{VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::seg::WrittenSeg;
use super::{Algorithm, OutputError, SourceSeries, code, ds, segment_number, write_file};
use crate::dicom::meta::IMPLEMENTATION_CLASS_UID;
use crate::dicom::object::{DateTime, Equipment, NewSeries, put, put_sequence};
use crate::dicom::sop_class::{COMPREHENSIVE_3D_SR_STORAGE, SEGMENTATION_STORAGE};
use crate::dicom::uid::Uids;
use crate::lesions::{AnalysisKind, Change, Lesion, total_volume_mm3};

/// The caveat every report carries.
pub const REVIEW_CAVEAT: &str = "Automated result for review by a radiologist. Research and evaluation software, \
     not cleared for clinical use.";

/// A series the report cites as evidence: its study, series and instances.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uids: Vec<String>,
}

/// What the report is about.
pub struct ReportContent<'a> {
    /// Change since a prior, or the lesion load of one visit: the summary and the SEG's segments.
    pub kind: AnalysisKind,
    pub lesions: &'a [Lesion],
    /// The SEG the lesions are drawn in (segments as [`super::lesion_classes`] numbers them).
    pub seg: &'a WrittenSeg,
    /// Free-text lines added to the summary (registration quality, execution provider, model).
    pub notes: Vec<String>,
}

fn content_item(
    relationship: &str,
    value_type: &str,
    concept: InMemDicomObject,
) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::RELATIONSHIP_TYPE, VR::CS, relationship);
    put(&mut item, tags::VALUE_TYPE, VR::CS, value_type);
    put_sequence(&mut item, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![concept]);
    item
}

fn container(
    relationship: &str,
    concept: InMemDicomObject,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut item = content_item(relationship, "CONTAINER", concept);
    put(&mut item, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    put_sequence(&mut item, tags::CONTENT_SEQUENCE, children);
    item
}

fn text_item(relationship: &str, concept: InMemDicomObject, value: &str) -> InMemDicomObject {
    let mut item = content_item(relationship, "TEXT", concept);
    put(&mut item, tags::TEXT_VALUE, VR::UT, value);
    item
}

fn code_item(
    relationship: &str,
    concept: InMemDicomObject,
    value: InMemDicomObject,
) -> InMemDicomObject {
    let mut item = content_item(relationship, "CODE", concept);
    put_sequence(&mut item, tags::CONCEPT_CODE_SEQUENCE, vec![value]);
    item
}

fn uid_item(relationship: &str, concept: InMemDicomObject, uid: &str) -> InMemDicomObject {
    let mut item = content_item(relationship, "UIDREF", concept);
    put(&mut item, tags::UID, VR::UI, uid);
    item
}

fn num_item(concept: InMemDicomObject, value: f64, unit: InMemDicomObject) -> InMemDicomObject {
    let mut item = content_item("CONTAINS", "NUM", concept);
    let mut measured = InMemDicomObject::new_empty();
    put(&mut measured, tags::NUMERIC_VALUE, VR::DS, ds(&[value]));
    put_sequence(
        &mut measured,
        tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
        vec![unit],
    );
    put_sequence(&mut item, tags::MEASURED_VALUE_SEQUENCE, vec![measured]);
    item
}

fn image_item(
    relationship: &str,
    concept: InMemDicomObject,
    class: &str,
    instance: &str,
    segment: Option<u16>,
) -> InMemDicomObject {
    let mut item = content_item(relationship, "IMAGE", concept);
    let mut reference = InMemDicomObject::new_empty();
    put(
        &mut reference,
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        class,
    );
    put(
        &mut reference,
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        instance,
    );
    if let Some(number) = segment {
        put(
            &mut reference,
            tags::REFERENCED_SEGMENT_NUMBER,
            VR::US,
            dicom_value!(U16, [number]),
        );
    }
    put_sequence(&mut item, tags::REFERENCED_SOP_SEQUENCE, vec![reference]);
    item
}

fn mm3() -> InMemDicomObject {
    code("mm3", "UCUM", "cubic millimeter")
}

/// The items every measurement group opens with: its tracking identifier and UID, and the finding.
fn group_opening(tracking_identifier: &str, tracking_uid: &str) -> Vec<InMemDicomObject> {
    vec![
        text_item(
            "HAS OBS CONTEXT",
            code("112039", "DCM", "Tracking Identifier"),
            tracking_identifier,
        ),
        uid_item(
            "HAS OBS CONTEXT",
            code("112040", "DCM", "Tracking Unique Identifier"),
            tracking_uid,
        ),
        code_item(
            "CONTAINS",
            code("121071", "DCM", "Finding"),
            code("52988006", "SCT", "Lesion"),
        ),
    ]
}

fn lesion_group(
    lesion: &Lesion,
    content: &ReportContent<'_>,
    source: &SourceSeries,
    tracking_uid: &str,
) -> InMemDicomObject {
    let segment = segment_number(content.kind, lesion.change);
    let change = match lesion.change {
        Some(Change::New) => "new lesion",
        Some(Change::Enlarging) => "enlarging lesion",
        None => "lesion",
    };
    let mut children = group_opening(&format!("Lesion {}", lesion.id), tracking_uid);
    children.extend([
        code_item(
            "HAS CONCEPT MOD",
            code("363698007", "SCT", "Finding Site"),
            code("12738006", "SCT", "Brain"),
        ),
        image_item(
            "CONTAINS",
            code("121191", "DCM", "Referenced Segment"),
            SEGMENTATION_STORAGE,
            &content.seg.sop_instance_uid,
            Some(segment),
        ),
        uid_item(
            "CONTAINS",
            code("121232", "DCM", "Source series for segmentation"),
            &source.series_instance_uid,
        ),
        num_item(code("118565006", "SCT", "Volume"), lesion.volume_mm3, mm3()),
    ]);
    children.push(text_item(
        "CONTAINS",
        code("121106", "DCM", "Comment"),
        &format!(
            "{change}; centroid (LPS) {:.1}, {:.1}, {:.1} mm; maximum probability {:.2}",
            lesion.centroid_lps[0],
            lesion.centroid_lps[1],
            lesion.centroid_lps[2],
            lesion.max_probability
        ),
    ));
    container(
        "CONTAINS",
        code("125007", "DCM", "Measurement Group"),
        children,
    )
}

/// Evidence items grouped by study, series within each.
fn evidence_sequence(evidence: &[Evidence]) -> Vec<InMemDicomObject> {
    let mut studies: Vec<(&str, Vec<InMemDicomObject>)> = Vec::new();
    for e in evidence {
        let mut series = InMemDicomObject::new_empty();
        put(
            &mut series,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            e.series_instance_uid.as_str(),
        );
        let instances = e
            .sop_instance_uids
            .iter()
            .map(|uid| {
                let mut item = InMemDicomObject::new_empty();
                put(
                    &mut item,
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    e.sop_class_uid.as_str(),
                );
                put(
                    &mut item,
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    uid.as_str(),
                );
                item
            })
            .collect();
        put_sequence(&mut series, tags::REFERENCED_SOP_SEQUENCE, instances);
        match studies
            .iter_mut()
            .find(|(uid, _)| *uid == e.study_instance_uid)
        {
            Some((_, items)) => items.push(series),
            None => studies.push((&e.study_instance_uid, vec![series])),
        }
    }
    studies
        .into_iter()
        .map(|(uid, series)| {
            let mut study = InMemDicomObject::new_empty();
            put(&mut study, tags::STUDY_INSTANCE_UID, VR::UI, uid);
            put_sequence(&mut study, tags::REFERENCED_SERIES_SEQUENCE, series);
            study
        })
        .collect()
}

/// Write the measurement report to `path`; returns its SOP Instance UID. `evidence` names the
/// current and prior series; the SEG the report points into is added to it.
pub fn write_report(
    path: &Path,
    source: &SourceSeries,
    content: &ReportContent<'_>,
    evidence: &[Evidence],
    algorithm: &Algorithm,
    series_number: i32,
    uids: &mut Uids,
) -> Result<String, OutputError> {
    let instance_uid = uids.issue();
    let series_uid = uids.issue();
    let created = DateTime::now();
    let series = NewSeries {
        patient_study: &source.copied,
        modality: "SR",
        series_instance_uid: &series_uid,
        series_number,
        series_description: "msnode lesion report (automated)",
        frame_of_reference_uid: None,
        equipment: Equipment::General,
        created: &created,
    };
    let mut obj = series.instance(COMPREHENSIVE_3D_SR_STORAGE, &instance_uid, 1);
    put_document_status(&mut obj, source, content, evidence);

    let mut measurements = vec![summary_group(content, &uids.issue())];
    for lesion in content.lesions {
        measurements.push(lesion_group(lesion, content, source, &uids.issue()));
    }
    let mut children = vec![code_item(
        "HAS CONCEPT MOD",
        code("121049", "DCM", "Language of Content Item and Descendants"),
        code("en-US", "RFC5646", "English (United States)"),
    )];
    children.extend(observer_context(algorithm));
    children.push(code_item(
        "HAS CONCEPT MOD",
        code("121058", "DCM", "Procedure reported"),
        code("24590-2", "LN", "MR Brain"),
    ));
    children.push(image_library(source, evidence));
    children.push(container(
        "CONTAINS",
        code("126010", "DCM", "Imaging Measurements"),
        measurements,
    ));
    put_content_root(&mut obj, children);
    write_file(obj, COMPREHENSIVE_3D_SR_STORAGE, &instance_uid, path)?;
    Ok(instance_uid)
}

/// SR Document General: completion and verification flags, and the evidence the report rests on
/// (the given series and the SEG it points into).
fn put_document_status(
    obj: &mut InMemDicomObject,
    source: &SourceSeries,
    content: &ReportContent<'_>,
    evidence: &[Evidence],
) {
    put_sequence(
        obj,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    );
    put(obj, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put(obj, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put_sequence(obj, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new());
    let mut all_evidence = evidence.to_vec();
    all_evidence.push(Evidence {
        study_instance_uid: source.study_instance_uid.clone(),
        series_instance_uid: content.seg.series_instance_uid.clone(),
        sop_class_uid: SEGMENTATION_STORAGE.to_string(),
        sop_instance_uids: vec![content.seg.sop_instance_uid.clone()],
    });
    put_sequence(
        obj,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        evidence_sequence(&all_evidence),
    );
}

/// The summary measurement group: lesion count and total volume, the notes, the review caveat.
fn summary_group(content: &ReportContent<'_>, tracking_uid: &str) -> InMemDicomObject {
    let total = total_volume_mm3(content.lesions);
    let count = content.lesions.len();
    let of = |change| {
        content
            .lesions
            .iter()
            .filter(|l| l.change == Some(change))
            .count()
    };
    let summary = match content.kind {
        AnalysisKind::FollowUp => format!(
            "{count} new or enlarging lesion(s): {} new, {} enlarging; total volume {total:.1} mm3",
            of(Change::New),
            of(Change::Enlarging)
        ),
        AnalysisKind::LesionLoad => format!(
            "Lesion load (no prior study to compare with): {count} lesion(s), total volume {total:.1} mm3"
        ),
    };
    let mut children = group_opening("Summary", tracking_uid);
    children.extend([
        num_item(
            code("246205007", "SCT", "Quantity"),
            content.lesions.len() as f64,
            code("{lesions}", "UCUM", "lesions"),
        ),
        num_item(code("118565006", "SCT", "Volume"), total, mm3()),
        text_item("CONTAINS", code("121106", "DCM", "Comment"), &summary),
    ]);
    let comment = |text: &str| text_item("CONTAINS", code("121106", "DCM", "Comment"), text);
    children.extend(content.notes.iter().map(|note| comment(note)));
    children.push(comment(REVIEW_CAVEAT));
    container(
        "CONTAINS",
        code("125007", "DCM", "Measurement Group"),
        children,
    )
}

/// The device that made the report (TID 1004).
fn observer_context(algorithm: &Algorithm) -> Vec<InMemDicomObject> {
    vec![
        code_item(
            "HAS OBS CONTEXT",
            code("121005", "DCM", "Observer Type"),
            code("121007", "DCM", "Device"),
        ),
        uid_item(
            "HAS OBS CONTEXT",
            code("121012", "DCM", "Device Observer UID"),
            IMPLEMENTATION_CLASS_UID,
        ),
        text_item(
            "HAS OBS CONTEXT",
            code("121013", "DCM", "Device Observer Name"),
            &format!("{} {}", algorithm.name, algorithm.version),
        ),
    ]
}

/// The Image Library: every instance of the current series.
fn image_library(source: &SourceSeries, evidence: &[Evidence]) -> InMemDicomObject {
    let entries = evidence
        .iter()
        .filter(|e| e.series_instance_uid == source.series_instance_uid)
        .flat_map(|e| {
            e.sop_instance_uids.iter().map(|uid| {
                image_item(
                    "CONTAINS",
                    code("260753009", "SCT", "Source"),
                    &e.sop_class_uid,
                    uid,
                    None,
                )
            })
        })
        .collect();
    container(
        "CONTAINS",
        code("111028", "DCM", "Image Library"),
        vec![container(
            "CONTAINS",
            code("126200", "DCM", "Image Library Group"),
            entries,
        )],
    )
}

/// The root of the content tree: an Imaging Measurement Report (TID 1500) holding `children`.
fn put_content_root(obj: &mut InMemDicomObject, children: Vec<InMemDicomObject>) {
    put(obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    put_sequence(
        obj,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code("126000", "DCM", "Imaging Measurement Report")],
    );
    put(obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut template = InMemDicomObject::new_empty();
    put(&mut template, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put(&mut template, tags::TEMPLATE_IDENTIFIER, VR::CS, "1500");
    put_sequence(obj, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template]);
    put_sequence(obj, tags::CONTENT_SEQUENCE, children);
}
