//! The outputs stage: what goes back to PACS. DICOM-SEG (`seg`) on the source FLAIR grid and a
//! TID 1500 measurement report (`sr`), and an RGB overlay series with PNG previews (`overlay`).
//!
//! Every object copies the patient and study of the current FLAIR, shares its Frame of Reference,
//! and gets new series and instance UIDs.

pub mod overlay;
pub mod seg;
pub mod sr;

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use crate::dicom::object::put;
use crate::dicom::read::{float, text};
use crate::lesions::{AnalysisKind, Change};
use crate::volume::Volume;

/// One class of lesion the outputs draw: its SEG segment, its colours in the SEG and the overlay,
/// and the lesions it holds (by their change; None in a lesion-load analysis).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LesionClass {
    pub label: &'static str,
    pub change: Option<Change>,
    /// Recommended display colour, CIELab scaled to 0..65535 as DICOM wants it.
    pub cielab: [u16; 3],
    pub rgb: [u8; 3],
}

const RED: ([u16; 3], [u8; 3]) = ([34885, 53485, 50171], [255, 40, 40]);
const YELLOW: ([u16; 3], [u8; 3]) = ([63321, 31353, 55831], [255, 220, 0]);

/// A follow-up's classes: new lesions red, enlarging ones yellow.
const FOLLOW_UP: [LesionClass; 2] = [
    LesionClass {
        label: "New lesion",
        change: Some(Change::New),
        cielab: RED.0,
        rgb: RED.1,
    },
    LesionClass {
        label: "Enlarging lesion",
        change: Some(Change::Enlarging),
        cielab: YELLOW.0,
        rgb: YELLOW.1,
    },
];

/// A lesion load's one class: every lesion, red.
const LESION_LOAD: [LesionClass; 1] = [LesionClass {
    label: "Lesion",
    change: None,
    cielab: RED.0,
    rgb: RED.1,
}];

/// The classes of an analysis of `kind`, in SEG segment order (segment 1 first).
pub fn lesion_classes(kind: AnalysisKind) -> &'static [LesionClass] {
    match kind {
        AnalysisKind::FollowUp => &FOLLOW_UP,
        AnalysisKind::LesionLoad => &LESION_LOAD,
    }
}

/// The SEG segment number that holds lesions with `change` in an analysis of `kind`.
pub fn segment_number(kind: AnalysisKind, change: Option<Change>) -> u16 {
    let position = lesion_classes(kind)
        .iter()
        .position(|c| c.change == change)
        .unwrap_or(0);
    position as u16 + 1
}

/// Why a result was not written. A message says what failed; the cause, where there is one, is
/// its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot read the source series header {path}")]
    Source {
        path: PathBuf,
        source: Box<dicom_object::ReadError>,
    },
    #[error("cannot read the source series header {path}: no {attribute}")]
    MissingAttribute {
        path: PathBuf,
        attribute: &'static str,
    },
    #[error("the source series {0}")]
    Geometry(String),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl OutputError {
    pub(crate) fn write(
        path: &Path,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> OutputError {
        OutputError::Write {
            path: path.to_owned(),
            source: source.into(),
        }
    }
}

/// Who made a result: written into every object so a reader knows it is automated.
#[derive(Debug, Clone)]
pub struct Algorithm {
    pub name: String,
    pub version: String,
}

/// Patient, study and frame-of-reference attributes of the current FLAIR, and where each of its
/// slices came from.
#[derive(Debug, Clone)]
pub struct SourceSeries {
    /// Patient and study attributes copied as they are (tag, VR, value).
    pub copied: Vec<DataElement<InMemDicomObject>>,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub sop_class_uid: String,
    pub slice_thickness: Option<f64>,
}

/// Attributes copied from the source so that results file under the same patient and study.
const COPIED: [Tag; 12] = [
    tags::SPECIFIC_CHARACTER_SET,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
];

impl SourceSeries {
    /// Read the header of the first source instance.
    pub fn read(first_file: &Path) -> Result<SourceSeries, OutputError> {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(first_file)
            .map_err(|e| OutputError::Source {
                path: first_file.to_owned(),
                source: Box::new(e),
            })?;
        let required = |tag: Tag, attribute: &'static str| {
            text(&obj, tag).ok_or_else(|| OutputError::MissingAttribute {
                path: first_file.to_owned(),
                attribute,
            })
        };
        let copied = COPIED
            .iter()
            .filter_map(|tag| obj.element_opt(*tag).ok().flatten().cloned())
            .collect();
        Ok(SourceSeries {
            copied,
            study_instance_uid: required(tags::STUDY_INSTANCE_UID, "Study Instance UID")?,
            series_instance_uid: required(tags::SERIES_INSTANCE_UID, "Series Instance UID")?,
            frame_of_reference_uid: required(
                tags::FRAME_OF_REFERENCE_UID,
                "Frame of Reference UID",
            )?,
            sop_class_uid: required(tags::SOP_CLASS_UID, "SOP Class UID")?,
            slice_thickness: float(&obj, tags::SLICE_THICKNESS),
        })
    }
}

/// The Image Pixel attributes of unsigned pixels: RGB has three samples, anything else one.
pub(crate) fn put_image_pixel(
    obj: &mut InMemDicomObject,
    rows: usize,
    columns: usize,
    photometric: &str,
    bits: u16,
) {
    let samples: u16 = if photometric == "RGB" { 3 } else { 1 };
    put(
        obj,
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        dicom_core::dicom_value!(U16, [samples]),
    );
    put(obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric);
    put(
        obj,
        tags::ROWS,
        VR::US,
        dicom_core::dicom_value!(U16, [rows as u16]),
    );
    put(
        obj,
        tags::COLUMNS,
        VR::US,
        dicom_core::dicom_value!(U16, [columns as u16]),
    );
    put(
        obj,
        tags::BITS_ALLOCATED,
        VR::US,
        dicom_core::dicom_value!(U16, [bits]),
    );
    put(
        obj,
        tags::BITS_STORED,
        VR::US,
        dicom_core::dicom_value!(U16, [bits]),
    );
    put(
        obj,
        tags::HIGH_BIT,
        VR::US,
        dicom_core::dicom_value!(U16, [bits - 1]),
    );
    put(
        obj,
        tags::PIXEL_REPRESENTATION,
        VR::US,
        dicom_core::dicom_value!(U16, [0]),
    );
}

/// Geometry of the source slices, from the volume the series was loaded into.
pub(crate) struct SliceGeometry {
    /// Image Orientation (Patient): row direction then column direction.
    pub orientation: [f64; 6],
    /// Pixel Spacing: between rows, then between columns.
    pub pixel_spacing: [f64; 2],
    pub slice_spacing: f64,
    /// Image Position (Patient) of each slice's first voxel.
    pub positions: Vec<[f64; 3]>,
}

impl SliceGeometry {
    pub fn of(volume: &Volume) -> SliceGeometry {
        let a = &volume.affine;
        let spacing = volume.spacing();
        let unit = |c: usize| [0, 1, 2].map(|r| a[r][c] / spacing[c]);
        let (row_dir, col_dir) = (unit(0), unit(1));
        let slices = volume.data.dim().0;
        SliceGeometry {
            orientation: [
                row_dir[0], row_dir[1], row_dir[2], col_dir[0], col_dir[1], col_dir[2],
            ],
            pixel_spacing: [spacing[1], spacing[0]],
            slice_spacing: spacing[2],
            positions: (0..slices)
                .map(|k| volume.world([0.0, 0.0, k as f64]))
                .collect(),
        }
    }
}

/// Decimal strings (DS) of at most 16 characters.
pub(crate) fn ds(values: &[f64]) -> PrimitiveValue {
    let strings: Vec<String> = values
        .iter()
        .map(|v| {
            let mut s = format!("{v:.6}");
            while s.len() > 16 {
                s.pop();
            }
            let trimmed = s.trim_end_matches('0').trim_end_matches('.');
            if trimmed.is_empty() || trimmed == "-" {
                "0".to_string()
            } else {
                trimmed.to_string()
            }
        })
        .collect();
    PrimitiveValue::Strs(strings.into())
}

/// A code sequence item: (code value, coding scheme designator, code meaning).
pub(crate) fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::CODE_VALUE, VR::SH, value);
    put(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put(&mut item, tags::CODE_MEANING, VR::LO, meaning);
    item
}

/// Write `obj` as a DICOM file (Explicit VR Little Endian) at `path`.
pub(crate) fn write_file(
    obj: InMemDicomObject,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    path: &Path,
) -> Result<(), OutputError> {
    crate::dicom::meta::write_file(obj, sop_class_uid, sop_instance_uid, path)
        .map_err(|e| OutputError::write(path, e))
}
