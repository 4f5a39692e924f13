//! What selection reads of a series: the header of its first instance (up to the pixel data).

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;

use super::selection::SeriesHeader;
use crate::dicom::read::{first_item, float, int, text};

#[derive(Debug, thiserror::Error)]
#[error("cannot read the header of {path}")]
pub struct HeaderError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: Box<dicom_object::ReadError>,
}

/// Multi-valued code strings (Image Type, Scanning Sequence) as their values.
fn values(text: Option<String>) -> Vec<String> {
    text.map(|t| t.split('\\').map(|v| v.trim().to_uppercase()).collect())
        .unwrap_or_default()
}

impl SeriesHeader {
    /// The header of `first_file`, standing for a series of `instances` instances.
    pub fn read(first_file: &Path, instances: usize) -> Result<SeriesHeader, HeaderError> {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(first_file)
            .map_err(|source| HeaderError {
                path: first_file.to_owned(),
                source: Box::new(source),
            })?;
        let get = |tag| text(&obj, tag).unwrap_or_default();
        // Enhanced MR keeps the slice thickness in the shared functional groups.
        let shared_thickness = first_item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
            .and_then(|g| first_item(g, tags::PIXEL_MEASURES_SEQUENCE))
            .and_then(|m| float(m, tags::SLICE_THICKNESS));
        Ok(SeriesHeader {
            series_instance_uid: get(tags::SERIES_INSTANCE_UID),
            modality: get(tags::MODALITY),
            sop_class_uid: get(tags::SOP_CLASS_UID),
            image_type: values(text(&obj, tags::IMAGE_TYPE)),
            series_description: get(tags::SERIES_DESCRIPTION),
            protocol_name: get(tags::PROTOCOL_NAME),
            sequence_name: get(tags::SEQUENCE_NAME),
            scanning_sequence: values(text(&obj, tags::SCANNING_SEQUENCE)),
            inversion_time_ms: float(&obj, tags::INVERSION_TIME),
            acquisition_type: get(tags::MR_ACQUISITION_TYPE).to_uppercase(),
            slice_thickness_mm: float(&obj, tags::SLICE_THICKNESS).or(shared_thickness),
            series_number: int(&obj, tags::SERIES_NUMBER),
            instances,
        })
    }
}
