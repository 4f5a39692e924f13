//! An overlay series for viewers that cannot show DICOM-SEG: every current FLAIR slice as an RGB
//! Secondary Capture image with the lesion outlines burned in (in their classes' colours: red new,
//! yellow enlarging; red every lesion of a lesion load) and a banner saying it is an automated
//! result; and the same images as PNG for the command line.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::tags;
use ndarray::ArrayView3;

use super::{OutputError, SliceGeometry, SourceSeries, ds, put_image_pixel, write_file};
use crate::dicom::object::{DateTime, Equipment, NewSeries, put};
use crate::dicom::sop_class::SECONDARY_CAPTURE_IMAGE_STORAGE;
use crate::dicom::uid::Uids;
use crate::volume::Volume;

pub const BANNER: &str = "MSNODE AUTOMATED RESULT - FOR REVIEW BY A RADIOLOGIST";
const YELLOW: [u8; 3] = [255, 220, 0];

/// One rendered slice, RGB, rows first.
#[derive(Debug, Clone)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    fn set(&mut self, x: usize, y: usize, colour: [u8; 3]) {
        if x < self.width && y < self.height {
            let at = 3 * (y * self.width + x);
            self.pixels[at..at + 3].copy_from_slice(&colour);
        }
    }

    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let at = 3 * (y * self.width + x);
        [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
    }
}

/// 5 x 7 glyphs, one byte a row, bit 4 leftmost; characters not listed draw as space.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        _ => [0; 7],
    }
}

/// Draw `text` with its top-left corner at (x, y), each font pixel `scale` x `scale`.
fn draw_text(image: &mut RgbImage, text: &str, x: usize, y: usize, scale: usize, colour: [u8; 3]) {
    for (n, c) in text.chars().enumerate() {
        let left = x + n * 6 * scale;
        for (row, bits) in glyph(c).iter().enumerate() {
            for column in 0..5 {
                if bits & (0x10 >> column) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            image.set(left + column * scale + dx, y + row * scale + dy, colour);
                        }
                    }
                }
            }
        }
    }
}

/// Grey levels: the 1st to 99.5th percentile of the non-zero voxels mapped to 0..255.
fn window(volume: &Volume) -> (f32, f32) {
    let mut values: Vec<f32> = volume.data.iter().copied().filter(|v| *v > 0.0).collect();
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let lo = (values.len() as f64 * 0.01) as usize;
    let hi = ((values.len() as f64 * 0.995) as usize).min(values.len() - 1);
    let (_, &mut low, _) = values.select_nth_unstable_by(lo, f32::total_cmp);
    let (_, &mut high, _) = values.select_nth_unstable_by(hi, f32::total_cmp);
    (low, if high > low { high } else { low + 1.0 })
}

/// Render every slice of `volume` ([slice, row, column]) with the outline of each mask in its
/// colour, and the banner.
pub fn render(
    volume: &Volume,
    outlines: &[(ArrayView3<bool>, [u8; 3])],
    caption: &str,
) -> Vec<RgbImage> {
    let (slices, rows, columns) = volume.data.dim();
    let (low, high) = window(volume);
    // As large as the banner fits across the image.
    let scale = (columns / (BANNER.len() * 6 + 2)).max(1);
    (0..slices)
        .map(|k| {
            let mut image = RgbImage {
                width: columns,
                height: rows,
                pixels: vec![0; rows * columns * 3],
            };
            for j in 0..rows {
                for i in 0..columns {
                    let v = ((volume.data[[k, j, i]] - low) / (high - low) * 255.0)
                        .clamp(0.0, 255.0) as u8;
                    image.set(i, j, [v, v, v]);
                }
            }
            for &(ref mask, colour) in outlines {
                for j in 0..rows {
                    for i in 0..columns {
                        // An outline voxel is in the mask and has an in-plane neighbour outside it.
                        let inside = |jj: isize, ii: isize| {
                            jj >= 0
                                && ii >= 0
                                && (jj as usize) < rows
                                && (ii as usize) < columns
                                && mask[[k, jj as usize, ii as usize]]
                        };
                        let (jj, ii) = (j as isize, i as isize);
                        if inside(jj, ii)
                            && !(inside(jj - 1, ii)
                                && inside(jj + 1, ii)
                                && inside(jj, ii - 1)
                                && inside(jj, ii + 1))
                        {
                            image.set(i, j, colour);
                        }
                    }
                }
            }
            let banner_height = 9 * scale;
            for j in 0..banner_height.min(rows) {
                for i in 0..columns {
                    image.set(i, j, [0, 0, 0]);
                }
            }
            draw_text(&mut image, BANNER, scale, scale, scale, YELLOW);
            draw_text(
                &mut image,
                caption,
                scale,
                rows.saturating_sub(9 * scale),
                scale,
                [255, 255, 255],
            );
            image
        })
        .collect()
}

/// Write the rendered slices as an RGB Secondary Capture series in the source study; returns the
/// files and the series UID.
pub fn write_overlay_series(
    out_dir: &Path,
    source: &SourceSeries,
    volume: &Volume,
    images: &[RgbImage],
    series_number: i32,
    uids: &mut Uids,
) -> Result<(Vec<PathBuf>, String), OutputError> {
    std::fs::create_dir_all(out_dir).map_err(|e| OutputError::write(out_dir, e))?;
    let geometry = SliceGeometry::of(volume);
    let series_uid = uids.issue();
    let created = DateTime::now();
    let series = NewSeries {
        patient_study: &source.copied,
        modality: "MR",
        series_instance_uid: &series_uid,
        series_number,
        series_description: "msnode lesion overlay (automated, for review)",
        frame_of_reference_uid: Some(&source.frame_of_reference_uid),
        equipment: Equipment::General,
        created: &created,
    };
    let mut files = Vec::with_capacity(images.len());
    for (k, image) in images.iter().enumerate() {
        let instance_uid = uids.issue();
        let mut obj = series.instance(SECONDARY_CAPTURE_IMAGE_STORAGE, &instance_uid, k + 1);
        put(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
        put(&mut obj, tags::PATIENT_ORIENTATION, VR::CS, "");
        put(
            &mut obj,
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(["DERIVED".to_string(), "SECONDARY".to_string()].into()),
        );
        put(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
        put(&mut obj, tags::IMAGE_COMMENTS, VR::LT, BANNER);
        // Where the slice is, so that viewers can place it beside the source series.
        // Laterality (type 2C) is for paired body parts: absent, with the body part said.
        put(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, "BRAIN");
        put(
            &mut obj,
            tags::SLICE_THICKNESS,
            VR::DS,
            ds(&[source.slice_thickness.unwrap_or(geometry.slice_spacing)]),
        );
        put(
            &mut obj,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            ds(&geometry.positions[k]),
        );
        put(
            &mut obj,
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            ds(&geometry.orientation),
        );
        put(
            &mut obj,
            tags::PIXEL_SPACING,
            VR::DS,
            ds(&geometry.pixel_spacing),
        );
        put_image_pixel(&mut obj, image.height, image.width, "RGB", 8);
        put(
            &mut obj,
            tags::PLANAR_CONFIGURATION,
            VR::US,
            dicom_value!(U16, [0]),
        );
        let mut pixels = image.pixels.clone();
        if pixels.len() % 2 == 1 {
            pixels.push(0);
        }
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(pixels.into()),
        ));
        let path = out_dir.join(format!("overlay{:04}.dcm", k + 1));
        write_file(obj, SECONDARY_CAPTURE_IMAGE_STORAGE, &instance_uid, &path)?;
        files.push(path);
    }
    Ok((files, series_uid))
}

/// Write one image as PNG.
pub fn write_png(path: &Path, image: &RgbImage) -> Result<(), OutputError> {
    let write_error = |e: Box<dyn std::error::Error + Send + Sync>| OutputError::write(path, e);
    let file = std::fs::File::create(path).map_err(|e| write_error(e.into()))?;
    let mut encoder = png::Encoder::new(
        std::io::BufWriter::new(file),
        image.width as u32,
        image.height as u32,
    );
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| write_error(e.into()))?;
    writer
        .write_image_data(&image.pixels)
        .map_err(|e| write_error(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn outlines_ring_the_lesion_and_leave_its_inside_grey() {
        let mut data = Array3::<f32>::zeros((1, 40, 40));
        data.fill(100.0);
        data[[0, 0, 0]] = 0.0;
        let volume = Volume {
            data,
            affine: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            slices: Vec::new(),
        };
        let mut new = Array3::from_elem((1, 40, 40), false);
        for j in 20..25 {
            for i in 20..25 {
                new[[0, j, i]] = true;
            }
        }
        const RED: [u8; 3] = [255, 40, 40];
        let images = render(&volume, &[(new.view(), RED)], "");
        let image = &images[0];
        assert_eq!(image.get(20, 22), RED);
        assert_eq!(image.get(24, 24), RED);
        assert_ne!(image.get(22, 22), RED, "inside the lesion stays grey");
        assert_ne!(image.get(19, 22), RED, "outside the lesion stays grey");
        // The banner: dark band with yellow text in the first rows.
        assert!((0..40).any(|x| image.get(x, 3) == YELLOW));
        assert_eq!(image.get(39, 8), [0, 0, 0]);
    }
}
