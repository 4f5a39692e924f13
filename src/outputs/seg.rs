//! DICOM Segmentation (BINARY) on the source FLAIR grid, as viewers need it (see
//! shared/notes/dicom.md): one frame per source slice and segment, empty frames included, in source
//! order; every frame names its source slice; same study and Frame of Reference; segments coded
//! with SNOMED CT; the algorithm identified.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use ndarray::ArrayView3;

use super::{
    Algorithm, OutputError, SliceGeometry, SourceSeries, code, ds, put_image_pixel, write_file,
};
use crate::dicom::object::{DateTime, Equipment, NewSeries, put, put_sequence};
use crate::dicom::sop_class::SEGMENTATION_STORAGE;
use crate::dicom::uid::Uids;
use crate::lesions::AnalysisKind;
use crate::volume::{SliceSource, Volume};

/// One segment: a label and a binary mask on the source grid ([slice, row, column]).
pub struct Segment<'a> {
    pub label: String,
    pub mask: ArrayView3<'a, bool>,
    /// Recommended display colour, CIELab scaled to 0..65535 as DICOM wants it.
    pub cielab: [u16; 3],
}

/// The series a SEG starts: its number, and what kind of analysis it shows (its descriptions).
#[derive(Debug, Clone, Copy)]
pub struct SegSeries {
    pub number: i32,
    pub kind: AnalysisKind,
}

impl SegSeries {
    fn description(&self) -> &'static str {
        match self.kind {
            AnalysisKind::FollowUp => "msnode new/enlarging MS lesions (automated)",
            AnalysisKind::LesionLoad => "msnode MS lesion load (automated)",
        }
    }

    fn content_description(&self) -> &'static str {
        match self.kind {
            AnalysisKind::FollowUp => "New and enlarging lesions, for review by a radiologist",
            AnalysisKind::LesionLoad => "All lesions of one visit, for review by a radiologist",
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct WrittenSeg {
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub frames: usize,
}

/// Pack frames of 0/1 pixels into bits, least significant bit first, frames back to back
/// (BINARY segmentations do not pad frames to whole bytes); the total is padded to an even length.
fn pack_bits(segments: &[Segment<'_>]) -> Vec<u8> {
    let bits: usize = segments.iter().map(|s| s.mask.len()).sum();
    let mut bytes = vec![0u8; bits.div_ceil(8)];
    let mut n = 0usize;
    for segment in segments {
        // Iteration in [slice, row, column] order is frame by frame, row by row.
        for &on in segment.mask.iter() {
            if on {
                bytes[n / 8] |= 1 << (n % 8);
            }
            n += 1;
        }
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    bytes
}

fn segment_item(number: u16, segment: &Segment<'_>, algorithm: &Algorithm) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(
        &mut item,
        tags::SEGMENT_NUMBER,
        VR::US,
        dicom_value!(U16, [number]),
    );
    put(
        &mut item,
        tags::SEGMENT_LABEL,
        VR::LO,
        segment.label.as_str(),
    );
    put(&mut item, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
    put(
        &mut item,
        tags::SEGMENT_ALGORITHM_NAME,
        VR::LO,
        algorithm.name.as_str(),
    );
    put_sequence(
        &mut item,
        tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
        vec![code(
            "49755003",
            "SCT",
            "Morphologically abnormal structure",
        )],
    );
    put_sequence(
        &mut item,
        tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
        vec![code("52988006", "SCT", "Lesion")],
    );
    put_sequence(
        &mut item,
        tags::ANATOMIC_REGION_SEQUENCE,
        vec![code("12738006", "SCT", "Brain")],
    );
    put(
        &mut item,
        tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
        VR::US,
        PrimitiveValue::U16(segment.cielab.to_vec().into()),
    );
    let mut algorithm_item = InMemDicomObject::new_empty();
    put_sequence(
        &mut algorithm_item,
        tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
        vec![code("123110", "DCM", "Artificial Intelligence")],
    );
    put(
        &mut algorithm_item,
        tags::ALGORITHM_NAME,
        VR::LO,
        algorithm.name.as_str(),
    );
    put(
        &mut algorithm_item,
        tags::ALGORITHM_VERSION,
        VR::LO,
        algorithm.version.as_str(),
    );
    put_sequence(
        &mut item,
        tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
        vec![algorithm_item],
    );
    item
}

/// Every mask must lie on the source grid, and every source slice must say where it came from.
fn check_grid(source_volume: &Volume, segments: &[Segment<'_>]) -> Result<(), OutputError> {
    let (slices, rows, columns) = source_volume.data.dim();
    if source_volume.slices.len() != slices {
        return Err(OutputError::Geometry(format!(
            "volume has {slices} slices but {} source references",
            source_volume.slices.len()
        )));
    }
    if let Some(bad) = segments
        .iter()
        .find(|s| s.mask.dim() != (slices, rows, columns))
    {
        return Err(OutputError::Geometry(format!(
            "segment {:?} is {:?}, the source grid is {:?}",
            bad.label,
            bad.mask.dim(),
            (slices, rows, columns)
        )));
    }
    Ok(())
}

/// Write a BINARY segmentation of `segments` (each on the grid of `source`) to `path`.
pub fn write_seg(
    path: &Path,
    source: &SourceSeries,
    source_volume: &Volume,
    segments: &[Segment<'_>],
    algorithm: &Algorithm,
    seg_series: SegSeries,
    uids: &mut Uids,
) -> Result<WrittenSeg, OutputError> {
    check_grid(source_volume, segments)?;
    let geometry = SliceGeometry::of(source_volume);
    let series_uid = uids.issue();
    let instance_uid = uids.issue();
    let created = DateTime::now();
    let series = NewSeries {
        patient_study: &source.copied,
        modality: "SEG",
        series_instance_uid: &series_uid,
        series_number: seg_series.number,
        series_description: seg_series.description(),
        frame_of_reference_uid: Some(&source.frame_of_reference_uid),
        equipment: Equipment::Enhanced {
            model_name: &algorithm.name,
        },
        created: &created,
    };
    let mut obj = series.instance(SEGMENTATION_STORAGE, &instance_uid, 1);
    let frames = segments.len() * source_volume.slices.len();
    put_segmentation_image(
        &mut obj,
        source_volume,
        frames,
        seg_series.content_description(),
    );
    put_sequence(
        &mut obj,
        tags::SEGMENT_SEQUENCE,
        segments
            .iter()
            .enumerate()
            .map(|(n, s)| segment_item(n as u16 + 1, s, algorithm))
            .collect(),
    );
    put_dimensions(&mut obj, &uids.issue());
    put_sequence(
        &mut obj,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared_groups(source, &geometry)],
    );
    put_sequence(
        &mut obj,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        per_frame_groups(source, source_volume, &geometry, segments.len()),
    );
    put_sequence(
        &mut obj,
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![referenced_series(source, source_volume)],
    );
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(pack_bits(segments).into()),
    ));
    write_file(obj, SEGMENTATION_STORAGE, &instance_uid, path)?;
    Ok(WrittenSeg {
        series_instance_uid: series_uid,
        sop_instance_uid: instance_uid,
        frames,
    })
}

/// Segmentation Image and Image Pixel attributes: a BINARY, one-bit, multi-frame image.
fn put_segmentation_image(
    obj: &mut InMemDicomObject,
    source_volume: &Volume,
    frames: usize,
    content_description: &str,
) {
    let (_, rows, columns) = source_volume.data.dim();
    put(
        obj,
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(["DERIVED".to_string(), "PRIMARY".to_string()].into()),
    );
    put(obj, tags::CONTENT_LABEL, VR::CS, "MS_LESIONS");
    put(obj, tags::CONTENT_DESCRIPTION, VR::LO, content_description);
    // A device, as a family name: "msnode^" (without the separator dciodvfy reads a retired form).
    put(obj, tags::CONTENT_CREATOR_NAME, VR::PN, "msnode^");
    put(obj, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put_image_pixel(obj, rows, columns, "MONOCHROME2", 1);
    put(obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put(obj, tags::NUMBER_OF_FRAMES, VR::IS, frames.to_string());
}

/// Multi-frame Dimension module: frames are indexed by segment, then by position along the
/// slice normal.
fn put_dimensions(obj: &mut InMemDicomObject, dimension_uid: &str) {
    let mut organization = InMemDicomObject::new_empty();
    put(
        &mut organization,
        tags::DIMENSION_ORGANIZATION_UID,
        VR::UI,
        dimension_uid,
    );
    put_sequence(
        obj,
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![organization],
    );
    let dimension = |pointer: Tag, group: Tag, description: &str| {
        let mut item = InMemDicomObject::new_empty();
        put(
            &mut item,
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            dimension_uid,
        );
        put(
            &mut item,
            tags::DIMENSION_INDEX_POINTER,
            VR::AT,
            PrimitiveValue::Tags(vec![pointer].into()),
        );
        put(
            &mut item,
            tags::FUNCTIONAL_GROUP_POINTER,
            VR::AT,
            PrimitiveValue::Tags(vec![group].into()),
        );
        put(
            &mut item,
            tags::DIMENSION_DESCRIPTION_LABEL,
            VR::LO,
            description,
        );
        item
    };
    put_sequence(
        obj,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dimension(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dimension(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    );
}

/// The shared functional groups: pixel measures and orientation of the source grid.
fn shared_groups(source: &SourceSeries, geometry: &SliceGeometry) -> InMemDicomObject {
    let mut measures = InMemDicomObject::new_empty();
    put(
        &mut measures,
        tags::PIXEL_SPACING,
        VR::DS,
        ds(&geometry.pixel_spacing),
    );
    put(
        &mut measures,
        tags::SLICE_THICKNESS,
        VR::DS,
        ds(&[source.slice_thickness.unwrap_or(geometry.slice_spacing)]),
    );
    put(
        &mut measures,
        tags::SPACING_BETWEEN_SLICES,
        VR::DS,
        ds(&[geometry.slice_spacing]),
    );
    let mut orientation = InMemDicomObject::new_empty();
    put(
        &mut orientation,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        ds(&geometry.orientation),
    );
    let mut shared = InMemDicomObject::new_empty();
    put_sequence(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    put_sequence(
        &mut shared,
        tags::PLANE_ORIENTATION_SEQUENCE,
        vec![orientation],
    );
    shared
}

/// One per-frame functional group item per segment and source slice, segment by segment.
fn per_frame_groups(
    source: &SourceSeries,
    source_volume: &Volume,
    geometry: &SliceGeometry,
    segments: usize,
) -> Vec<InMemDicomObject> {
    let mut per_frame = Vec::with_capacity(segments * geometry.positions.len());
    for segment_number in 1..=segments as u16 {
        for (k, position) in geometry.positions.iter().enumerate() {
            per_frame.push(frame_group(
                source,
                &source_volume.slices[k],
                segment_number,
                k,
                position,
            ));
        }
    }
    per_frame
}

/// A frame's functional groups: its dimension index values, position, segment, and the source
/// slice it derives from.
fn frame_group(
    source: &SourceSeries,
    source_slice: &SliceSource,
    segment_number: u16,
    k: usize,
    position: &[f64; 3],
) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    let mut content = InMemDicomObject::new_empty();
    put(
        &mut content,
        tags::DIMENSION_INDEX_VALUES,
        VR::UL,
        PrimitiveValue::U32(vec![segment_number as u32, k as u32 + 1].into()),
    );
    put_sequence(&mut item, tags::FRAME_CONTENT_SEQUENCE, vec![content]);
    let mut plane = InMemDicomObject::new_empty();
    put(
        &mut plane,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        ds(position),
    );
    put_sequence(&mut item, tags::PLANE_POSITION_SEQUENCE, vec![plane]);
    let mut identification = InMemDicomObject::new_empty();
    put(
        &mut identification,
        tags::REFERENCED_SEGMENT_NUMBER,
        VR::US,
        dicom_value!(U16, [segment_number]),
    );
    put_sequence(
        &mut item,
        tags::SEGMENT_IDENTIFICATION_SEQUENCE,
        vec![identification],
    );
    put_sequence(
        &mut item,
        tags::DERIVATION_IMAGE_SEQUENCE,
        vec![derivation(source, source_slice)],
    );
    item
}

/// Derivation Image Sequence item: the frame was segmented from this source slice.
fn derivation(source: &SourceSeries, source_slice: &SliceSource) -> InMemDicomObject {
    let mut source_image = InMemDicomObject::new_empty();
    put(
        &mut source_image,
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        source.sop_class_uid.as_str(),
    );
    put(
        &mut source_image,
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        source_slice.sop_instance_uid.as_str(),
    );
    if let Some(frame) = source_slice.frame {
        put(
            &mut source_image,
            tags::REFERENCED_FRAME_NUMBER,
            VR::IS,
            frame.to_string(),
        );
    }
    put_sequence(
        &mut source_image,
        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
        vec![code(
            "121322",
            "DCM",
            "Source image for image processing operation",
        )],
    );
    let mut derivation = InMemDicomObject::new_empty();
    put_sequence(
        &mut derivation,
        tags::DERIVATION_CODE_SEQUENCE,
        vec![code("113076", "DCM", "Segmentation")],
    );
    put_sequence(
        &mut derivation,
        tags::SOURCE_IMAGE_SEQUENCE,
        vec![source_image],
    );
    derivation
}

/// Common Instance Reference: the source series and every one of its instances (OHIF refuses a
/// SEG without it).
fn referenced_series(source: &SourceSeries, source_volume: &Volume) -> InMemDicomObject {
    let mut seen = std::collections::BTreeSet::new();
    let referenced: Vec<InMemDicomObject> = source_volume
        .slices
        .iter()
        .filter(|s| seen.insert(s.sop_instance_uid.clone()))
        .map(|s| {
            let mut item = InMemDicomObject::new_empty();
            put(
                &mut item,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                source.sop_class_uid.as_str(),
            );
            put(
                &mut item,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                s.sop_instance_uid.as_str(),
            );
            item
        })
        .collect();
    let mut series_item = InMemDicomObject::new_empty();
    put(
        &mut series_item,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        source.series_instance_uid.as_str(),
    );
    put_sequence(
        &mut series_item,
        tags::REFERENCED_INSTANCE_SEQUENCE,
        referenced,
    );
    series_item
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn bits_run_on_across_frames_least_significant_first() {
        // Two 1 x 3 frames: 3 bits each, 6 bits in all, no padding between frames.
        let mut mask = Array3::from_elem((2, 1, 3), false);
        mask[[0, 0, 0]] = true;
        mask[[1, 0, 0]] = true; // bit 3
        mask[[1, 0, 2]] = true; // bit 5
        let segment = Segment {
            label: "x".into(),
            mask: mask.view(),
            cielab: [0; 3],
        };
        assert_eq!(pack_bits(&[segment]), vec![0b0010_1001, 0]);
    }
}
