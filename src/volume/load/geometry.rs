//! What makes frames one volume: equal size, spacing and orientation, one image per position
//! (or a chosen temporal index), evenly spaced slices; and refusals that name the files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Frame, LoadOptions};
use crate::volume::{VolumeError, cross, dot, norm};

/// Two slice positions closer than this along the normal are the same position (mm).
const SAME_POSITION_MM: f64 = 0.01;
/// Orientation cosines and pixel spacings that differ by less than this are equal.
const SAME_DIRECTION: f64 = 1e-3;
const SAME_SPACING_MM: f64 = 1e-3;
/// Slice spacing may deviate from the median by this fraction (plus 0.01 mm of rounding).
const SPACING_TOLERANCE: f64 = 0.01;

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
pub(super) fn check_same(frames: &[Frame], files: &[PathBuf]) -> Result<(), VolumeError> {
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
pub(super) fn group_positions(
    frames: &[Frame],
    along: impl Fn(&Frame) -> f64,
) -> Vec<(usize, usize)> {
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

pub(super) fn select_volume<'a>(
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
pub(super) fn check_spacing(z: &[f64]) -> Result<(), VolumeError> {
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
}
