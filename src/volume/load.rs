//! DICOM series to [`Volume`]: classic single-frame MR (including Siemens mosaics) and enhanced
//! multi-frame MR (per-frame and shared functional groups), in every transfer syntax the receiver
//! accepts.
//!
//! Two passes keep memory to the volume itself: headers first (geometry is checked before any
//! pixel is decoded), then each file is decoded once, straight into its slices of the volume.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use ndarray::{Array3, ArrayViewMut2, Axis};

use super::{SliceSource, Volume, VolumeError, cross, dot, from_columns, norm, scale, sub};
use crate::dicom::read::{first_item, float, floats, int, text};

/// Two slice positions closer than this along the normal are the same position (mm).
const SAME_POSITION_MM: f64 = 0.01;
/// Orientation cosines and pixel spacings that differ by less than this are equal.
const SAME_DIRECTION: f64 = 1e-3;
const SAME_SPACING_MM: f64 = 1e-3;
/// Slice spacing may deviate from the median by this fraction (plus 0.01 mm of rounding).
const SPACING_TOLERANCE: f64 = 0.01;

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Which volume to take from a series of repeated positions (0-based, in acquisition order).
    pub temporal_index: Option<usize>,
}

/// The DICOM files of a series: a folder (walked; files without the DICM prefix are ignored), a
/// single file, or a Series Instance UID held in the store under `data_dir`.
pub fn series_files(source: &str, data_dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let path = Path::new(source);
    let folder = if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    } else if path.is_dir() {
        path.to_path_buf()
    } else {
        // The store keeps `dicom/<study>/<series>/<sop>.dcm`.
        let studies = data_dir.join("dicom");
        let found = std::fs::read_dir(&studies)
            .map_err(|e| VolumeError::io(&studies, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(source))
            .find(|p| p.is_dir());
        found.ok_or_else(|| VolumeError::NotFound {
            what: source.to_string(),
            store: studies.display().to_string(),
        })?
    };
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&folder)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && has_dicm_prefix(e.path()))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(VolumeError::Empty(folder.display().to_string()));
    }
    Ok(files)
}

fn has_dicm_prefix(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[128..] == b"DICM"
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
    let mut data = Array3::<f32>::zeros((n, first.rows as usize, first.columns as usize));
    decode_into(files, &selected, &mut data)?;
    Ok(Volume {
        data,
        affine,
        slices,
    })
}

fn dicom_error(path: &Path, e: impl std::fmt::Display) -> VolumeError {
    VolumeError::Dicom {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn missing(path: &Path, attribute: &'static str, context: String) -> VolumeError {
    VolumeError::MissingAttribute {
        path: path.display().to_string(),
        attribute,
        context,
    }
}

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

fn vector3(values: Option<Vec<f64>>) -> Option<[f64; 3]> {
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
fn read_frames(path: &Path, file: usize) -> Result<Vec<Frame>, VolumeError> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| dicom_error(path, e))?;
    let sop_instance_uid = text(&obj, tags::SOP_INSTANCE_UID)
        .ok_or_else(|| missing(path, "SOP Instance UID", String::new()))?;
    let series_instance_uid = text(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let rows = int(&obj, tags::ROWS).ok_or_else(|| missing(path, "Rows", String::new()))? as u32;
    let columns =
        int(&obj, tags::COLUMNS).ok_or_else(|| missing(path, "Columns", String::new()))? as u32;
    let frames = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32;
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
        mosaic_tiles(path, &obj, frame)
    } else {
        Ok(vec![frame])
    }
}

/// Split a Siemens mosaic into its slices. Image Position (Patient) of a mosaic is the corner of
/// the whole mosaic; each tile's own position is recovered as dcm2niix does, and the slice
/// direction (whose sign the orientation alone does not give) comes from the CSA image header.
fn mosaic_tiles(
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

fn describe_counts<K: Ord>(
    frames: &[Frame],
    files: &[PathBuf],
    key: impl Fn(&Frame) -> K,
    show: impl Fn(&Frame) -> String,
) -> Option<String> {
    let mut groups: BTreeMap<K, Vec<&Frame>> = BTreeMap::new();
    for f in frames {
        groups.entry(key(f)).or_default().push(f);
    }
    if groups.len() < 2 {
        return None;
    }
    let mut text = String::new();
    for (i, members) in groups.values().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        let _ = write!(text, "{} ({} image(s)", show(members[0]), members.len());
        if members.len() <= 3 {
            let names: Vec<String> = members.iter().map(|f| file_name(&files[f.file])).collect();
            let _ = write!(text, ": {}", names.join(", "));
        }
        text.push(')');
    }
    Some(text)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn quantize(v: f64, step: f64) -> i64 {
    (v / step).round() as i64
}

/// Everything that must be equal across the images of one volume.
fn check_same(frames: &[Frame], files: &[PathBuf]) -> Result<(), VolumeError> {
    if let Some(detail) = describe_counts(
        frames,
        files,
        |f| f.series_instance_uid.clone(),
        |f| format!("series {}", f.series_instance_uid),
    ) {
        return Err(VolumeError::DifferingGeometry {
            what: "Series Instance UID",
            detail,
        });
    }
    if let Some(detail) = describe_counts(
        frames,
        files,
        |f| (f.columns, f.rows),
        |f| format!("{} x {}", f.columns, f.rows),
    ) {
        return Err(VolumeError::DifferingGeometry {
            what: "image size (columns x rows)",
            detail,
        });
    }
    if let Some(detail) = describe_counts(
        frames,
        files,
        |f| f.pixel_spacing.map(|s| quantize(s, SAME_SPACING_MM)),
        |f| format!("{:.4}\\{:.4} mm", f.pixel_spacing[0], f.pixel_spacing[1]),
    ) {
        return Err(VolumeError::DifferingGeometry {
            what: "pixel spacing",
            detail,
        });
    }
    let cosines = |f: &Frame| {
        let mut v = [0i64; 6];
        for c in 0..3 {
            v[c] = quantize(f.row_direction[c], SAME_DIRECTION);
            v[c + 3] = quantize(f.column_direction[c], SAME_DIRECTION);
        }
        v
    };
    if let Some(detail) = describe_counts(frames, files, cosines, |f| {
        let r = f.row_direction;
        let c = f.column_direction;
        format!(
            "{:.3}\\{:.3}\\{:.3}\\{:.3}\\{:.3}\\{:.3}",
            r[0], r[1], r[2], c[0], c[1], c[2]
        )
    }) {
        return Err(VolumeError::MixedOrientations(detail));
    }
    let f = &frames[0];
    let (r, c) = (f.row_direction, f.column_direction);
    if (norm(r) - 1.0).abs() > 1e-2 || (norm(c) - 1.0).abs() > 1e-2 || dot(r, c).abs() > 1e-2 {
        return Err(VolumeError::Unsupported {
            path: files[f.file].display().to_string(),
            message: format!(
                "Image Orientation (Patient) {r:?} {c:?} is not two orthogonal unit vectors"
            ),
        });
    }
    Ok(())
}

/// Runs of frames at the same position (frames sorted along the normal): index ranges.
fn group_positions(frames: &[Frame], along: impl Fn(&Frame) -> f64) -> Vec<(usize, usize)> {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        match groups.last_mut() {
            Some((start, end)) if along(f) - along(&frames[*start]) < SAME_POSITION_MM => {
                *end = i + 1
            }
            _ => groups.push((i, i + 1)),
        }
    }
    groups
}

fn select_volume<'a>(
    frames: &'a [Frame],
    positions: &[(usize, usize)],
    files: &[PathBuf],
    options: &LoadOptions,
) -> Result<Vec<&'a Frame>, VolumeError> {
    let counts: Vec<usize> = positions.iter().map(|(s, e)| e - s).collect();
    let volumes = counts.iter().copied().min().unwrap_or(0);
    if counts.iter().any(|c| *c != volumes) {
        let normal = cross(frames[0].row_direction, frames[0].column_direction);
        let mut detail = String::new();
        let repeated: Vec<_> = positions.iter().filter(|(s, e)| e - s != volumes).collect();
        for (i, (s, e)) in repeated.iter().take(5).enumerate() {
            if i > 0 {
                detail.push_str("; ");
            }
            let names: Vec<String> = frames[*s..*e]
                .iter()
                .take(4)
                .map(|f| describe_frame(f, files))
                .collect();
            let _ = write!(
                detail,
                "z = {:.2} mm has {} images ({}{})",
                dot(frames[*s].position, normal),
                e - s,
                names.join(", "),
                if e - s > 4 { ", ..." } else { "" }
            );
        }
        if repeated.len() > 5 {
            let _ = write!(detail, "; and {} more positions", repeated.len() - 5);
        }
        let _ = write!(
            detail,
            " (other positions have {volumes} image(s); z is the position along the slice normal)"
        );
        return Err(VolumeError::DuplicatePositions(detail));
    }
    let index = match options.temporal_index {
        None if volumes > 1 => {
            return Err(VolumeError::SeveralVolumes {
                volumes,
                positions: positions.len(),
            });
        }
        None => 0,
        Some(index) if index >= volumes => {
            return Err(VolumeError::NoSuchVolume { index, volumes });
        }
        Some(index) => index,
    };
    Ok(positions.iter().map(|(s, _)| &frames[s + index]).collect())
}

fn describe_frame(f: &Frame, files: &[PathBuf]) -> String {
    let name = file_name(&files[f.file]);
    match (f.multi_frame, f.tile) {
        (true, _) => format!("{name} frame {}", f.frame + 1),
        (false, Some(t)) => format!("{name} tile {}", t.index + 1),
        _ => name,
    }
}

/// Slices must be evenly spaced: name each gap (missing slices) and each irregular step.
fn check_spacing(z: &[f64]) -> Result<(), VolumeError> {
    if z.len() < 3 {
        return Ok(());
    }
    let mut steps: Vec<f64> = z.windows(2).map(|w| w[1] - w[0]).collect();
    let original = steps.clone();
    steps.sort_by(f64::total_cmp);
    let nominal = steps[steps.len() / 2];
    let tolerance = SAME_POSITION_MM + SPACING_TOLERANCE * nominal;
    let mut gaps = Vec::new();
    let mut irregular = Vec::new();
    for (i, step) in original.iter().enumerate() {
        if (step - nominal).abs() <= tolerance {
            continue;
        }
        let k = (step / nominal).round();
        if k >= 2.0 && (step - k * nominal).abs() <= tolerance * k {
            gaps.push(format!(
                "{} slice(s) missing between z = {:.2} mm and z = {:.2} mm",
                k as usize - 1,
                z[i],
                z[i + 1]
            ));
        } else {
            irregular.push(format!(
                "{:.3} mm between z = {:.2} mm and z = {:.2} mm",
                step,
                z[i],
                z[i + 1]
            ));
        }
    }
    let note = format!(
        " (slices are {nominal:.3} mm apart elsewhere; z is the position along the slice normal)"
    );
    if !gaps.is_empty() {
        return Err(VolumeError::MissingSlices(gaps.join("; ") + &note));
    }
    if !irregular.is_empty() {
        return Err(VolumeError::NonUniformSpacing(irregular.join("; ") + &note));
    }
    Ok(())
}

/// One slice to fill: which frame (or tile) of the file goes into which view of the volume.
struct Target<'v> {
    frame: u32,
    tile: Option<Tile>,
    slope: f64,
    intercept: f64,
    view: ArrayViewMut2<'v, f32>,
}

/// Decode every file once, in parallel, straight into the volume's slices.
fn decode_into(
    files: &[PathBuf],
    selected: &[&Frame],
    data: &mut Array3<f32>,
) -> Result<(), VolumeError> {
    let mut by_file: BTreeMap<usize, Vec<Target<'_>>> = BTreeMap::new();
    for (frame, view) in selected.iter().zip(data.axis_iter_mut(Axis(0))) {
        by_file.entry(frame.file).or_default().push(Target {
            frame: frame.frame,
            tile: frame.tile,
            slope: frame.slope,
            intercept: frame.intercept,
            view,
        });
    }
    let mut jobs: Vec<(usize, Vec<Target<'_>>)> = by_file.into_iter().collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len().max(1));
    let chunk = jobs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks_mut(chunk)
            .map(|chunk| {
                scope.spawn(move || {
                    for (file, targets) in chunk.iter_mut() {
                        decode_file(&files[*file], targets)?;
                    }
                    Ok::<(), VolumeError>(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(VolumeError::Unsupported {
                        path: String::new(),
                        message: "a decoding thread panicked".into(),
                    })
                })
            })
            .collect::<Result<Vec<()>, VolumeError>>()
    })?;
    Ok(())
}

fn decode_file(path: &Path, targets: &mut [Target<'_>]) -> Result<(), VolumeError> {
    let decode_error = |e: &dyn std::fmt::Display| VolumeError::Decode {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let obj = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| dicom_error(path, e))?;
    let pixels = obj.decode_pixel_data().map_err(|e| decode_error(&e))?;
    if pixels.samples_per_pixel() != 1 {
        return Err(VolumeError::Unsupported {
            path: path.display().to_string(),
            message: format!(
                "{} samples per pixel: only greyscale images make a volume",
                pixels.samples_per_pixel()
            ),
        });
    }
    let bits_allocated = pixels.bits_allocated();
    let signed = pixels.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed;
    let columns = pixels.columns() as usize;
    let format =
        SampleFormat::new(bits_allocated, pixels.bits_stored(), signed).ok_or_else(|| {
            VolumeError::Unsupported {
                path: path.display().to_string(),
                message: format!(
                    "{bits_allocated} bits allocated, {} stored per pixel",
                    pixels.bits_stored()
                ),
            }
        })?;
    let bytes_per = format.bytes;
    for target in targets.iter_mut() {
        let bytes = pixels
            .frame_data(target.frame)
            .map_err(|e| decode_error(&e))?;
        let (rows, cols) = target.view.dim();
        let (row0, col0) = match target.tile {
            Some(t) => (
                (t.index / t.per_row) as usize * rows,
                (t.index % t.per_row) as usize * cols,
            ),
            None => (0, 0),
        };
        if bytes.len() < ((row0 + rows - 1) * columns + col0 + cols) * bytes_per {
            return Err(decode_error(&format!(
                "frame {} has {} bytes, fewer than its {} x {} pixels need",
                target.frame + 1,
                bytes.len(),
                columns,
                rows
            )));
        }
        let (slope, intercept) = (target.slope, target.intercept);
        for (r, mut out_row) in target.view.rows_mut().into_iter().enumerate() {
            let start = ((row0 + r) * columns + col0) * bytes_per;
            let line = &bytes[start..start + cols * bytes_per];
            for (out, raw) in out_row.iter_mut().zip(line.chunks_exact(bytes_per)) {
                *out = (format.value(raw) * slope + intercept) as f32;
            }
        }
    }
    Ok(())
}

/// How stored samples are laid out; values are masked to Bits Stored and sign-extended when signed.
#[derive(Debug, Clone, Copy)]
struct SampleFormat {
    bytes: usize,
    bits_stored: u32,
    signed: bool,
}

impl SampleFormat {
    fn new(bits_allocated: u16, bits_stored: u16, signed: bool) -> Option<SampleFormat> {
        matches!(bits_allocated, 8 | 16 | 32)
            .then_some(())
            .filter(|_| (1..=bits_allocated).contains(&bits_stored))
            .map(|_| SampleFormat {
                bytes: usize::from(bits_allocated / 8),
                bits_stored: u32::from(bits_stored),
                signed,
            })
    }

    fn value(self, b: &[u8]) -> f64 {
        let raw = match self.bytes {
            1 => u32::from(b[0]),
            2 => u32::from(u16::from_le_bytes([b[0], b[1]])),
            _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        };
        let shift = 32 - self.bits_stored;
        if self.signed {
            f64::from(((raw << shift) as i32) >> shift)
        } else {
            f64::from((raw << shift) >> shift)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_named_with_its_positions() {
        let e = check_spacing(&[0.0, 6.0, 12.0, 24.0, 30.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not one volume: 1 slice(s) missing between z = 12.00 mm and z = 24.00 mm (slices are 6.000 mm apart elsewhere; z is the position along the slice normal)"
        );
        let e = check_spacing(&[0.0, 6.0, 12.0, 21.0, 27.0]).unwrap_err();
        assert!(matches!(e, VolumeError::NonUniformSpacing(_)), "{e}");
        check_spacing(&[0.0, 6.0, 12.005, 18.0]).unwrap();
    }

    #[test]
    fn twelve_bit_signed_samples_are_sign_extended() {
        let f = SampleFormat::new(16, 12, true).unwrap();
        assert_eq!(f.value(&0x0fffu16.to_le_bytes()), -1.0);
        assert_eq!(f.value(&0x07ffu16.to_le_bytes()), 2047.0);
        let f = SampleFormat::new(16, 12, false).unwrap();
        assert_eq!(f.value(&0xf00fu16.to_le_bytes()), 15.0);
        let f = SampleFormat::new(16, 16, true).unwrap();
        assert_eq!(f.value(&(-300i16).to_le_bytes()), -300.0);
        assert!(SampleFormat::new(12, 12, false).is_none());
    }
}
