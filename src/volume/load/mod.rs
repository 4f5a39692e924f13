//! DICOM series to [`Volume`]: classic single-frame MR (including Siemens mosaics) and enhanced
//! multi-frame MR (per-frame and shared functional groups), in every transfer syntax the receiver
//! accepts.
//!
//! Two passes keep memory to the volume itself: headers first (geometry is checked before any
//! pixel is decoded), then each file is decoded once, straight into its slices of the volume.
//!
//! `headers` reads each file's frames and their geometry (`mosaic` splits Siemens mosaics),
//! `geometry` decides whether the frames are one volume, `decode` fills it.

mod decode;
mod geometry;
mod headers;
mod mosaic;

use std::path::{Path, PathBuf};

use ndarray::Array3;

use super::{SliceSource, Volume, VolumeError, cross, dot, from_columns, scale, sub};
use decode::decode_into;
use geometry::{check_same, check_spacing, group_positions, select_volume};
use headers::read_frames;

/// Most voxels one file or one volume may have: four times a 512 x 512 x 256 3D FLAIR, 1 GiB as
/// `f32`. Headers are input: a few bytes can claim any size, and the volume is allocated from them.
pub const MAX_VOXELS: u64 = 1 << 28;

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Which volume to take from a series of repeated positions (0-based, in acquisition order).
    pub temporal_index: Option<usize>,
}

/// One 2D image of the series: a single-frame instance, a frame of a multi-frame instance, or a
/// tile of a mosaic.
#[derive(Debug, Clone)]
struct Frame {
    file: usize,
    /// 0-based frame inside the instance.
    frame: u32,
    multi_frame: bool,
    tile: Option<Tile>,
    sop_instance_uid: String,
    series_instance_uid: String,
    position: [f64; 3],
    row_direction: [f64; 3],
    column_direction: [f64; 3],
    /// Pixel Spacing as DICOM orders it: between rows, between columns.
    pixel_spacing: [f64; 2],
    rows: u32,
    columns: u32,
    slope: f64,
    intercept: f64,
    /// Orders repeated positions in time: temporal position, then instance number, then frame.
    temporal_key: (i64, i64, u32),
    spacing_between_slices: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Tile {
    index: u32,
    per_row: u32,
}

/// Load a series into a volume, refusing what is not one volume with the reason.
pub fn load_series(files: &[PathBuf], options: &LoadOptions) -> Result<Volume, VolumeError> {
    let mut frames = Vec::new();
    for (index, path) in files.iter().enumerate() {
        frames.extend(read_frames(path, index)?);
    }
    let Some(first) = frames.first().cloned() else {
        return Err(VolumeError::Empty(format!("{} file(s)", files.len())));
    };
    check_same(&frames, files)?;

    let normal = cross(first.row_direction, first.column_direction);
    let along = |f: &Frame| dot(f.position, normal);
    frames.sort_by(|a, b| {
        along(a)
            .total_cmp(&along(b))
            .then(a.temporal_key.cmp(&b.temporal_key))
    });
    let positions = group_positions(&frames, along);
    let selected = select_volume(&frames, &positions, files, options)?;
    check_spacing(&selected.iter().map(|f| along(f)).collect::<Vec<_>>())?;

    let n = selected.len();
    let [row_spacing, column_spacing] = first.pixel_spacing;
    let slice_step = if n > 1 {
        scale(
            sub(selected[n - 1].position, selected[0].position),
            1.0 / (n - 1) as f64,
        )
    } else {
        scale(normal, first.spacing_between_slices.unwrap_or(1.0))
    };
    let affine = from_columns(
        scale(first.row_direction, column_spacing),
        scale(first.column_direction, row_spacing),
        slice_step,
        selected[0].position,
    );
    let slices = selected
        .iter()
        .map(|f| SliceSource {
            sop_instance_uid: f.sop_instance_uid.clone(),
            frame: f.multi_frame.then_some(f.frame + 1),
        })
        .collect();
    let voxels = n as u64 * u64::from(first.rows) * u64::from(first.columns);
    if voxels > MAX_VOXELS {
        return Err(VolumeError::Unsupported {
            path: files[first.file].display().to_string(),
            message: format!(
                "{n} slices of {} x {} pixels: more than the {MAX_VOXELS} voxels msnode reads",
                first.rows, first.columns
            ),
        });
    }
    let mut data = Array3::<f32>::zeros((n, first.rows as usize, first.columns as usize));
    decode_into(files, &selected, &mut data)?;
    Ok(Volume {
        data,
        affine,
        slices,
    })
}

fn dicom_error(path: &Path, source: dicom_object::ReadError) -> VolumeError {
    VolumeError::Dicom {
        path: path.display().to_string(),
        source: Box::new(source),
    }
}

fn missing(path: &Path, attribute: &'static str, context: String) -> VolumeError {
    VolumeError::MissingAttribute {
        path: path.display().to_string(),
        attribute,
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_dicom_is_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.dcm");
        std::fs::write(&path, [0u8; 200]).unwrap();
        let e = load_series(std::slice::from_ref(&path), &LoadOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: malformed: not a DICOM file (no DICM prefix)",
                path.display()
            )
        );
    }
}
