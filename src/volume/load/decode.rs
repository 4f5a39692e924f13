//! Decoding pixel data: each file once, in parallel, straight into its slices of the volume,
//! rescaled per frame.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_object::OpenFileOptions;
use dicom_pixeldata::PixelDecoder;
use ndarray::{Array3, ArrayViewMut2, Axis};

use super::{Frame, Tile, dicom_error};
use crate::volume::VolumeError;

/// One slice to fill: which frame (or tile) of the file goes into which view of the volume.
struct Target<'v> {
    frame: u32,
    tile: Option<Tile>,
    slope: f64,
    intercept: f64,
    view: ArrayViewMut2<'v, f32>,
}

/// Decode every file once, in parallel, straight into the volume's slices.
pub(super) fn decode_into(
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
    let decode_error = |source| VolumeError::Decode {
        path: path.display().to_string(),
        source: Box::new(source),
    };
    let obj = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| dicom_error(path, e))?;
    let pixels = obj.decode_pixel_data().map_err(decode_error)?;
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
        let bytes = pixels.frame_data(target.frame).map_err(decode_error)?;
        let (rows, cols) = target.view.dim();
        let (row0, col0) = match target.tile {
            Some(t) => (
                (t.index / t.per_row) as usize * rows,
                (t.index % t.per_row) as usize * cols,
            ),
            None => (0, 0),
        };
        if bytes.len() < ((row0 + rows - 1) * columns + col0 + cols) * bytes_per {
            return Err(VolumeError::Unsupported {
                path: path.display().to_string(),
                message: format!(
                    "cannot decode the pixel data: frame {} has {} bytes, fewer than its {} x {} pixels need",
                    target.frame + 1,
                    bytes.len(),
                    columns,
                    rows
                ),
            });
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
