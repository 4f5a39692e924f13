//! Reading headers: the 2D frames each file holds (classic, enhanced multi-frame or mosaic) and
//! their geometry, without touching the pixel data.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::{Frame, MAX_VOXELS, dicom_error, missing, mosaic};
use crate::dicom::read::{first_item, float, floats, int, text};
use crate::dicom::structure::check_file;
use crate::volume::VolumeError;

/// An attribute of a functional group: per-frame first, then shared.
fn group_value<T>(
    per_frame: Option<&InMemDicomObject>,
    shared: Option<&InMemDicomObject>,
    sequence: Tag,
    read: impl Fn(&InMemDicomObject) -> Option<T>,
) -> Option<T> {
    [per_frame, shared]
        .into_iter()
        .flatten()
        .filter_map(|g| first_item(g, sequence))
        .find_map(read)
}

pub(super) fn vector3(values: Option<Vec<f64>>) -> Option<[f64; 3]> {
    values.filter(|v| v.len() == 3).map(|v| [v[0], v[1], v[2]])
}

fn orientation(values: Option<Vec<f64>>) -> Option<([f64; 3], [f64; 3])> {
    values
        .filter(|v| v.len() == 6)
        .map(|v| ([v[0], v[1], v[2]], [v[3], v[4], v[5]]))
}

fn spacing2(values: Option<Vec<f64>>) -> Option<[f64; 2]> {
    values
        .filter(|v| v.len() == 2 && v[0] > 0.0 && v[1] > 0.0)
        .map(|v| [v[0], v[1]])
}

/// The 2D images one file holds, with their geometry (headers only: pixel data is not read).
pub(super) fn read_frames(path: &Path, file: usize) -> Result<Vec<Frame>, VolumeError> {
    // Before the parser, which allocates every declared length before reading it.
    check_file(path).map_err(|reason| VolumeError::Malformed {
        path: path.display().to_string(),
        reason,
    })?;
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| dicom_error(path, e))?;
    let sop_instance_uid = text(&obj, tags::SOP_INSTANCE_UID)
        .ok_or_else(|| missing(path, "SOP Instance UID", String::new()))?;
    let series_instance_uid = text(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let rows = int(&obj, tags::ROWS)
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| missing(path, "Rows", String::new()))? as u32;
    let columns = int(&obj, tags::COLUMNS)
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| missing(path, "Columns", String::new()))? as u32;
    let frames = int(&obj, tags::NUMBER_OF_FRAMES)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(1)
        .max(1);
    if rows == 0
        || columns == 0
        || u64::from(rows) * u64::from(columns) * u64::from(frames) > MAX_VOXELS
    {
        return Err(VolumeError::Unsupported {
            path: path.display().to_string(),
            message: format!(
                "{frames} frame(s) of {rows} x {columns} pixels: not an image msnode reads (at most {MAX_VOXELS} voxels)"
            ),
        });
    }
    let instance_number = int(&obj, tags::INSTANCE_NUMBER).unwrap_or(0);
    let spacing_between_slices = float(&obj, tags::SPACING_BETWEEN_SLICES)
        .or_else(|| float(&obj, tags::SLICE_THICKNESS))
        .filter(|s| *s > 0.0);
    let top_slope = float(&obj, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let top_intercept = float(&obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0);

    let per_frame_groups = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items());
    let shared = first_item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);

    if let Some(groups) = per_frame_groups {
        if groups.len() != frames as usize {
            return Err(VolumeError::Unsupported {
                path: path.display().to_string(),
                message: format!(
                    "Number of Frames is {frames} but the Per-frame Functional Groups Sequence has {} items",
                    groups.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(groups.len());
        for (f, group) in groups.iter().enumerate() {
            let context = format!(" (frame {}, functional groups)", f + 1);
            let g = Some(group);
            let position = group_value(g, shared, tags::PLANE_POSITION_SEQUENCE, |s| {
                vector3(floats(s, tags::IMAGE_POSITION_PATIENT))
            })
            .ok_or_else(|| missing(path, "Image Position (Patient)", context.clone()))?;
            let (row_direction, column_direction) =
                group_value(g, shared, tags::PLANE_ORIENTATION_SEQUENCE, |s| {
                    orientation(floats(s, tags::IMAGE_ORIENTATION_PATIENT))
                })
                .ok_or_else(|| missing(path, "Image Orientation (Patient)", context.clone()))?;
            let pixel_spacing = group_value(g, shared, tags::PIXEL_MEASURES_SEQUENCE, |s| {
                spacing2(floats(s, tags::PIXEL_SPACING))
            })
            .ok_or_else(|| missing(path, "Pixel Spacing", context.clone()))?;
            let (slope, intercept) =
                group_value(g, shared, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |s| {
                    Some((
                        float(s, tags::RESCALE_SLOPE)?,
                        float(s, tags::RESCALE_INTERCEPT)?,
                    ))
                })
                .unwrap_or((top_slope, top_intercept));
            let temporal = group_value(g, shared, tags::FRAME_CONTENT_SEQUENCE, |s| {
                int(s, tags::TEMPORAL_POSITION_INDEX)
            })
            .unwrap_or(0);
            let thickness = group_value(g, shared, tags::PIXEL_MEASURES_SEQUENCE, |s| {
                float(s, tags::SPACING_BETWEEN_SLICES).or_else(|| float(s, tags::SLICE_THICKNESS))
            });
            out.push(Frame {
                file,
                frame: f as u32,
                multi_frame: true,
                tile: None,
                sop_instance_uid: sop_instance_uid.clone(),
                series_instance_uid: series_instance_uid.clone(),
                position,
                row_direction,
                column_direction,
                pixel_spacing,
                rows,
                columns,
                slope,
                intercept,
                temporal_key: (temporal, instance_number, f as u32),
                spacing_between_slices: thickness.or(spacing_between_slices),
            });
        }
        return Ok(out);
    }
    if frames > 1 {
        return Err(VolumeError::Unsupported {
            path: path.display().to_string(),
            message: format!(
                "{frames} frames but no Per-frame Functional Groups Sequence: the frames have no geometry"
            ),
        });
    }
    let position = vector3(floats(&obj, tags::IMAGE_POSITION_PATIENT))
        .ok_or_else(|| missing(path, "Image Position (Patient)", String::new()))?;
    let (row_direction, column_direction) =
        orientation(floats(&obj, tags::IMAGE_ORIENTATION_PATIENT))
            .ok_or_else(|| missing(path, "Image Orientation (Patient)", String::new()))?;
    let pixel_spacing = spacing2(floats(&obj, tags::PIXEL_SPACING))
        .ok_or_else(|| missing(path, "Pixel Spacing", String::new()))?;
    let temporal = int(&obj, tags::TEMPORAL_POSITION_IDENTIFIER).unwrap_or(0);
    let frame = Frame {
        file,
        frame: 0,
        multi_frame: false,
        tile: None,
        sop_instance_uid,
        series_instance_uid,
        position,
        row_direction,
        column_direction,
        pixel_spacing,
        rows,
        columns,
        slope: top_slope,
        intercept: top_intercept,
        temporal_key: (temporal, instance_number, 0),
        spacing_between_slices,
    };
    let is_mosaic = obj
        .get(tags::IMAGE_TYPE)
        .and_then(|e| e.to_multi_str().ok())
        .is_some_and(|v| v.iter().any(|s| s.trim() == "MOSAIC"));
    if is_mosaic {
        mosaic::tiles(path, &obj, frame)
    } else {
        Ok(vec![frame])
    }
}
