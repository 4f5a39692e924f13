//! NIfTI to a classic MR Image Storage series (one instance per slice), for the demo, the tests and
//! sites that want to try msnode on NIfTI data sets.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{VolumeError, apply, column, cross, dot, norm, read_nifti, scale};
use crate::dicom::meta::write_file;
use crate::dicom::new_uid;
use crate::dicom::object::{DateTime, Equipment, NewSeries};
use crate::dicom::sop_class::MR_IMAGE_STORAGE;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub patient_id: String,
    pub patient_name: String,
    /// Reuse a study (a second series in it); a new one is made when `None`.
    pub study_instance_uid: Option<String>,
    /// YYYYMMDD; today when `None`.
    pub study_date: Option<String>,
    pub series_description: String,
    pub series_number: i32,
    /// Mark the series ORIGINAL, as a scanner would: for demonstrations and tests of the
    /// workflow, which analyses acquired series only. Otherwise it is DERIVED, as it truly is.
    pub as_acquired: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            patient_id: "NIFTI".into(),
            patient_name: "NIFTI^IMPORT".into(),
            study_instance_uid: None,
            study_date: None,
            series_description: "FLAIR (imported from NIfTI)".into(),
            series_number: 1,
            as_acquired: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImportReport {
    pub files: Vec<PathBuf>,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// Rescale slope and intercept when the voxels were not integers that fit 16 bits and had to be
    /// quantised; `None` when they are stored exactly.
    pub rescale: Option<(f64, f64)>,
}

fn text(tag: Tag, vr: VR, value: impl Into<String>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value.into()))
}

fn us(tag: Tag, value: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

/// Decimal strings fit in DS's 16 characters.
fn ds(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| {
            let mut s = format!("{v:.6}");
            if s.len() > 16 {
                s = format!("{v:.6e}");
            }
            if s.contains('.') && !s.contains('e') {
                s = s.trim_end_matches('0').trim_end_matches('.').to_string();
            }
            if s == "-0" { "0".to_string() } else { s }
        })
        .collect::<Vec<_>>()
        .join("\\")
}

/// How the voxels are stored: exactly as 16-bit integers, or quantised with a rescale.
enum Storage {
    Unsigned,
    Signed,
    Rescaled { slope: f64, intercept: f64 },
}

/// Write the first volume of `input` as a new MR series in `out_dir` (created if needed).
pub fn import_nifti(
    input: &Path,
    out_dir: &Path,
    options: &ImportOptions,
) -> Result<ImportReport, VolumeError> {
    let nifti = read_nifti(input)?;
    if nifti.volumes() != 1 {
        return Err(VolumeError::NotRepresentable(format!(
            "{} holds {} volumes; import one 3D volume at a time",
            input.display(),
            nifti.volumes()
        )));
    }
    let volume = nifti.volume(0)?;
    let a = &volume.affine;
    let (x, y, z) = (column(a, 0), column(a, 1), column(a, 2));
    let (row_direction, column_direction) = (scale(x, 1.0 / norm(x)), scale(y, 1.0 / norm(y)));
    let normal = cross(row_direction, column_direction);
    let slice_gap = norm(z);
    // DICOM can say orthogonal rows and columns, and slices stacked along their normal; anything
    // else (a sheared affine) would be silently distorted.
    if dot(row_direction, column_direction).abs() > 1e-4
        || norm(cross(scale(z, 1.0 / slice_gap), normal)) > 1e-4
    {
        return Err(VolumeError::NotRepresentable(format!(
            "{}: the affine is sheared (its axes are not orthogonal), which a DICOM series cannot describe",
            input.display()
        )));
    }
    let [columns, rows, slices] = volume.dims();
    let (rows16, columns16) = match (u16::try_from(rows), u16::try_from(columns)) {
        (Ok(r), Ok(c)) => (r, c),
        _ => {
            return Err(VolumeError::NotRepresentable(format!(
                "{columns} x {rows} pixels per slice is more than DICOM's 65535"
            )));
        }
    };
    let (min, max) = volume
        .data
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(f64::from(*v)), hi.max(f64::from(*v)))
        });
    if !min.is_finite() || !max.is_finite() {
        return Err(VolumeError::NotRepresentable(format!(
            "{}: voxels are not all finite numbers",
            input.display()
        )));
    }
    let integers = nifti.is_integer() || volume.data.iter().all(|v| v.fract() == 0.0);
    let storage = if integers && min >= 0.0 && max <= 65535.0 {
        Storage::Unsigned
    } else if integers && min >= -32768.0 && max <= 32767.0 {
        Storage::Signed
    } else {
        Storage::Rescaled {
            slope: ((max - min) / 65535.0).max(f64::MIN_POSITIVE),
            intercept: min,
        }
    };

    std::fs::create_dir_all(out_dir).map_err(|e| VolumeError::write(out_dir, e))?;
    let study_uid = options.study_instance_uid.clone().unwrap_or_else(new_uid);
    let series_uid = new_uid();
    let frame_of_reference_uid = new_uid();
    let created = DateTime::now();
    let study_date = options
        .study_date
        .clone()
        .unwrap_or_else(|| created.date.clone());
    if study_date.len() != 8 || !study_date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VolumeError::NotRepresentable(format!(
            "study date {study_date:?} is not YYYYMMDD"
        )));
    }
    let patient_study = [
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        text(tags::PATIENT_NAME, VR::PN, options.patient_name.clone()),
        text(tags::PATIENT_ID, VR::LO, options.patient_id.clone()),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, ""),
        text(tags::PATIENT_SEX, VR::CS, ""),
        text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid.clone()),
        text(tags::STUDY_DATE, VR::DA, study_date),
        text(tags::STUDY_TIME, VR::TM, created.time.clone()),
        text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
        // One study per import; viewers and DICOMDIR want a Study ID.
        text(tags::STUDY_ID, VR::SH, "1"),
        text(tags::ACCESSION_NUMBER, VR::SH, ""),
    ];
    let series = NewSeries {
        patient_study: &patient_study,
        modality: "MR",
        series_instance_uid: &series_uid,
        series_number: options.series_number,
        series_description: &options.series_description,
        frame_of_reference_uid: Some(&frame_of_reference_uid),
        equipment: Equipment::General,
        created: &created,
    };

    let image_type = if options.as_acquired {
        "ORIGINAL\\PRIMARY\\M"
    } else {
        "DERIVED\\PRIMARY\\OTHER"
    };
    let mut image = vec![
        text(tags::IMAGE_TYPE, VR::CS, image_type),
        text(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            "Converted from NIfTI by msnode import-nifti",
        ),
        // The NIfTI header does not say how the scan was acquired: "RM" (research mode) and
        // empty type 2 attributes rather than invented values.
        text(tags::SCANNING_SEQUENCE, VR::CS, "RM"),
        text(tags::SEQUENCE_VARIANT, VR::CS, "NONE"),
        text(tags::SCAN_OPTIONS, VR::CS, ""),
        text(tags::MR_ACQUISITION_TYPE, VR::CS, ""),
        text(tags::SLICE_THICKNESS, VR::DS, ds(&[slice_gap])),
        text(tags::REPETITION_TIME, VR::DS, ""),
        text(tags::ECHO_TIME, VR::DS, ""),
        text(tags::ECHO_TRAIN_LENGTH, VR::IS, ""),
        text(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(&[slice_gap])),
        text(tags::PATIENT_POSITION, VR::CS, ""),
        // Laterality (type 2C) is for paired body parts: absent, with the body part said.
        text(tags::BODY_PART_EXAMINED, VR::CS, "BRAIN"),
        text(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            ds(&[
                row_direction[0],
                row_direction[1],
                row_direction[2],
                column_direction[0],
                column_direction[1],
                column_direction[2],
            ]),
        ),
        us(tags::SAMPLES_PER_PIXEL, 1),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, rows16),
        us(tags::COLUMNS, columns16),
        // Pixel Spacing is row spacing (along a column), then column spacing.
        text(tags::PIXEL_SPACING, VR::DS, ds(&[norm(y), norm(x)])),
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, 16),
        us(tags::HIGH_BIT, 15),
        us(
            tags::PIXEL_REPRESENTATION,
            u16::from(matches!(storage, Storage::Signed)),
        ),
    ];
    if let Storage::Rescaled { slope, intercept } = storage {
        image.push(text(tags::RESCALE_INTERCEPT, VR::DS, ds(&[intercept])));
        image.push(text(tags::RESCALE_SLOPE, VR::DS, ds(&[slope])));
        image.push(text(tags::RESCALE_TYPE, VR::LO, "US"));
    }

    let mut files = Vec::with_capacity(slices);
    for (k, slice) in volume.data.outer_iter().enumerate() {
        let sop_uid = new_uid();
        let position = apply(a, [0.0, 0.0, k as f64]);
        let mut obj = series.instance(MR_IMAGE_STORAGE, &sop_uid, k + 1);
        for element in &image {
            obj.put(element.clone());
        }
        obj.put(text(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&position)));
        obj.put(text(
            tags::SLICE_LOCATION,
            VR::DS,
            ds(&[dot(position, normal)]),
        ));
        let mut pixels = Vec::with_capacity(rows * columns * 2);
        for v in slice.iter() {
            let v = f64::from(*v);
            let stored: u16 = match storage {
                Storage::Unsigned => v as u16,
                Storage::Signed => (v as i16) as u16,
                Storage::Rescaled { slope, intercept } => {
                    ((v - intercept) / slope).round().clamp(0.0, 65535.0) as u16
                }
            };
            pixels.extend_from_slice(&stored.to_le_bytes());
        }
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(pixels),
        ));
        let path = out_dir.join(format!("IM{:04}.dcm", k + 1));
        write_file(obj, MR_IMAGE_STORAGE, &sop_uid, &path)
            .map_err(|e| VolumeError::write(&path, e))?;
        files.push(path);
    }
    Ok(ImportReport {
        files,
        study_instance_uid: study_uid,
        series_instance_uid: series_uid,
        rescale: match storage {
            Storage::Rescaled { slope, intercept } => Some((slope, intercept)),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(&[0.5, -0.0, 3.0]), "0.5\\0\\3");
        assert_eq!(ds(&[-123.4567891]), "-123.456789");
        assert!(ds(&[123456789012.5]).len() <= 16);
    }
}
