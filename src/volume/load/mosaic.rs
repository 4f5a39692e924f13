//! Siemens mosaics: the CSA image header and the tiles of a mosaic as slices.

use std::collections::BTreeMap;
use std::path::Path;

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

use super::headers::vector3;
use super::{Frame, Tile};
use crate::volume::VolumeError;

/// Split a Siemens mosaic into its slices. Image Position (Patient) of a mosaic is the corner of
/// the whole mosaic; each tile's own position is recovered as dcm2niix does, and the slice
/// direction (whose sign the orientation alone does not give) comes from the CSA image header.
pub(super) fn tiles(
    path: &Path,
    obj: &InMemDicomObject,
    mosaic: Frame,
) -> Result<Vec<Frame>, VolumeError> {
    let unsupported = |message: String| VolumeError::Unsupported {
        path: path.display().to_string(),
        message,
    };
    let csa = obj
        .get(Tag(0x0029, 0x1010))
        .and_then(|e| e.to_bytes().ok())
        .ok_or_else(|| {
            unsupported("Siemens mosaic without a CSA image header (0029,1010)".into())
        })?;
    let csa = csa_fields(&csa);
    let count = csa
        .get("NumberOfImagesInMosaic")
        .and_then(|v| v.first())
        .map(|v| *v as u32)
        .filter(|n| *n > 0)
        .ok_or_else(|| unsupported("CSA header has no NumberOfImagesInMosaic".into()))?;
    let normal = csa
        .get("SliceNormalVector")
        .and_then(|v| vector3(Some(v.clone())))
        .ok_or_else(|| unsupported("CSA header has no SliceNormalVector".into()))?;
    let per_row = (count as f64).sqrt().ceil() as u32;
    if !mosaic.rows.is_multiple_of(per_row) || !mosaic.columns.is_multiple_of(per_row) {
        return Err(unsupported(format!(
            "a {} x {} mosaic cannot hold {count} tiles of equal size",
            mosaic.columns, mosaic.rows
        )));
    }
    let (rows, columns) = (mosaic.rows / per_row, mosaic.columns / per_row);
    let [row_spacing, column_spacing] = mosaic.pixel_spacing;
    let corner = mosaic.position;
    let first = [0, 1, 2].map(|c| {
        corner[c]
            + mosaic.row_direction[c] * column_spacing * f64::from(mosaic.columns - columns) / 2.0
            + mosaic.column_direction[c] * row_spacing * f64::from(mosaic.rows - rows) / 2.0
    });
    let step = mosaic.spacing_between_slices.unwrap_or(1.0);
    Ok((0..count)
        .map(|index| Frame {
            tile: Some(Tile { index, per_row }),
            position: [0, 1, 2].map(|c| first[c] + normal[c] * step * f64::from(index)),
            rows,
            columns,
            temporal_key: (mosaic.temporal_key.0, mosaic.temporal_key.1, index),
            ..mosaic.clone()
        })
        .collect())
}

/// Numeric fields of a Siemens CSA header ("SV10" layout); text values that are not numbers are
/// left out.
fn csa_fields(bytes: &[u8]) -> BTreeMap<String, Vec<f64>> {
    let mut out = BTreeMap::new();
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    if bytes.get(..4) != Some(b"SV10") {
        return out;
    }
    let Some(tags) = u32_at(8) else { return out };
    let mut at = 16;
    for _ in 0..tags.min(1000) {
        let Some(name) = bytes.get(at..at + 64) else {
            break;
        };
        let name = String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or_default())
            .into_owned();
        let Some(items) = u32_at(at + 76) else { break };
        at += 84;
        let mut values = Vec::new();
        for _ in 0..items.min(1000) {
            let Some(length) = u32_at(at + 4) else {
                return out;
            };
            let length = length as usize;
            at += 16;
            if let Some(text) = bytes.get(at..at + length) {
                let text = String::from_utf8_lossy(text);
                if let Ok(v) = text.trim_end_matches('\0').trim().parse::<f64>() {
                    values.push(v);
                }
            }
            at += length.div_ceil(4) * 4;
        }
        if !values.is_empty() {
            out.insert(name, values);
        }
    }
    out
}
