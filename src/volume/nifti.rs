//! NIfTI-1 in and out (`.nii` or `.nii.gz`), with dcm2niix's conventions: the world is RAS
//! (DICOM LPS with x and y negated), sform and qform both set with code 1 (scanner), millimetres.
//! Voxels are written as float32 in the volume's own order (column fastest, then row, then slice);
//! dcm2niix may store another order (it flips rows), which the affine accounts for, so two files
//! agree when they map each voxel centre to the same world point.

use std::io::{Read, Write};
use std::path::Path;

use ndarray::Array3;

use super::{Affine, Volume, VolumeError, column, flip_lps_ras, from_columns, norm, scale};

const HEADER_SIZE: usize = 348;
const DATA_OFFSET: usize = 352;
const FLOAT32: i16 = 16;

/// Write `volume` as NIfTI-1 (gzip-compressed when the name ends in `.gz`).
pub fn write_nifti(volume: &Volume, path: &Path) -> Result<(), VolumeError> {
    let [nx, ny, nz] = volume.dims();
    let ras = flip_lps_ras(&volume.affine);
    let spacing = volume.spacing();
    let mut h = vec![0u8; DATA_OFFSET];
    let put_i16 = |h: &mut [u8], at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 =
        |h: &mut [u8], at: usize, v: f64| h[at..at + 4].copy_from_slice(&(v as f32).to_le_bytes());
    h[0..4].copy_from_slice(&(HEADER_SIZE as i32).to_le_bytes());
    for (i, d) in [3usize, nx, ny, nz, 1, 1, 1, 1].into_iter().enumerate() {
        let d = i16::try_from(d).map_err(|_| {
            VolumeError::NotRepresentable(format!(
                "NIfTI-1 holds at most 32767 voxels per axis, the volume has {nx} x {ny} x {nz}"
            ))
        })?;
        put_i16(&mut h, 40 + 2 * i, d);
    }
    put_i16(&mut h, 70, FLOAT32);
    put_i16(&mut h, 72, 32);
    let (quaternion, qfac) = quaternion(&ras);
    put_f32(&mut h, 76, qfac);
    for (i, s) in spacing.iter().enumerate() {
        put_f32(&mut h, 80 + 4 * i, *s);
    }
    put_f32(&mut h, 108, DATA_OFFSET as f64);
    put_f32(&mut h, 112, 1.0);
    h[123] = 2; // millimetres
    let description = b"msnode";
    h[148..148 + description.len()].copy_from_slice(description);
    put_i16(&mut h, 252, 1);
    put_i16(&mut h, 254, 1);
    for (i, q) in quaternion.iter().enumerate() {
        put_f32(&mut h, 256 + 4 * i, *q);
    }
    for (i, t) in [ras[0][3], ras[1][3], ras[2][3]].iter().enumerate() {
        put_f32(&mut h, 268 + 4 * i, *t);
    }
    for (r, row) in ras.iter().take(3).enumerate() {
        for (c, v) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, *v);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");

    let file = std::fs::File::create(path).map_err(|e| VolumeError::write(path, e))?;
    let gzip = path.extension().is_some_and(|e| e == "gz");
    let mut out: Box<dyn Write> = if gzip {
        // Level 1: the volume is float32 and most of the time goes into deflate at higher levels.
        Box::new(flate2::write::GzEncoder::new(
            std::io::BufWriter::new(file),
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(std::io::BufWriter::new(file))
    };
    let write = |out: &mut Box<dyn Write>| -> std::io::Result<()> {
        out.write_all(&h)?;
        let mut buffer = Vec::with_capacity(nx * 4);
        for row in volume.data.rows() {
            buffer.clear();
            for v in row {
                buffer.extend_from_slice(&v.to_le_bytes());
            }
            out.write_all(&buffer)?;
        }
        out.flush()
    };
    write(&mut out).map_err(|e| VolumeError::write(path, e))?;
    drop(out);
    Ok(())
}

/// The NIfTI quaternion (b, c, d) and qfac of an affine's rotation (its columns normalised).
fn quaternion(a: &Affine) -> ([f64; 3], f64) {
    let mut r = [0, 1, 2].map(|c| {
        let v = column(a, c);
        scale(v, 1.0 / norm(v).max(f64::MIN_POSITIVE))
    });
    let det = r[0][0] * (r[1][1] * r[2][2] - r[2][1] * r[1][2])
        - r[1][0] * (r[0][1] * r[2][2] - r[2][1] * r[0][2])
        + r[2][0] * (r[0][1] * r[1][2] - r[1][1] * r[0][2]);
    let qfac = if det < 0.0 {
        r[2] = scale(r[2], -1.0);
        -1.0
    } else {
        1.0
    };
    // m(i, j): row i, column j of the rotation (r holds columns).
    let m = |i: usize, j: usize| r[j][i];
    let trace = m(0, 0) + m(1, 1) + m(2, 2) + 1.0;
    let [b, c, d] = if trace > 0.5 {
        let a = 0.5 * trace.sqrt();
        [
            0.25 * (m(2, 1) - m(1, 2)) / a,
            0.25 * (m(0, 2) - m(2, 0)) / a,
            0.25 * (m(1, 0) - m(0, 1)) / a,
        ]
    } else {
        let xd = 1.0 + m(0, 0) - (m(1, 1) + m(2, 2));
        let yd = 1.0 + m(1, 1) - (m(0, 0) + m(2, 2));
        let zd = 1.0 + m(2, 2) - (m(0, 0) + m(1, 1));
        let (a, bcd) = if xd > 1.0 {
            let b = 0.5 * xd.sqrt();
            (
                0.25 * (m(2, 1) - m(1, 2)) / b,
                [
                    b,
                    0.25 * (m(0, 1) + m(1, 0)) / b,
                    0.25 * (m(0, 2) + m(2, 0)) / b,
                ],
            )
        } else if yd > 1.0 {
            let c = 0.5 * yd.sqrt();
            (
                0.25 * (m(0, 2) - m(2, 0)) / c,
                [
                    0.25 * (m(0, 1) + m(1, 0)) / c,
                    c,
                    0.25 * (m(1, 2) + m(2, 1)) / c,
                ],
            )
        } else {
            let d = 0.5 * zd.sqrt();
            (
                0.25 * (m(1, 0) - m(0, 1)) / d,
                [
                    0.25 * (m(0, 2) + m(2, 0)) / d,
                    0.25 * (m(1, 2) + m(2, 1)) / d,
                    d,
                ],
            )
        };
        // The quaternion's real part is taken non-negative, as NIfTI stores only b, c, d.
        if a < 0.0 { bcd.map(|v| -v) } else { bcd }
    };
    ([b, c, d], qfac)
}

/// A NIfTI-1 file held in memory: header fields and the voxel bytes.
pub struct NiftiFile {
    dims: [usize; 3],
    volumes: usize,
    datatype: i16,
    slope: f64,
    intercept: f64,
    big_endian: bool,
    affine_lps: Affine,
    bytes: Vec<u8>,
    offset: usize,
}

/// Read a NIfTI-1 file (`.nii` or `.nii.gz`).
pub fn read_nifti(path: &Path) -> Result<NiftiFile, VolumeError> {
    let error = |message: String| VolumeError::Nifti {
        path: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| VolumeError::io(path, e))?;
    let mut bytes = Vec::new();
    let mut reader = std::io::BufReader::new(file);
    let mut magic = [0u8; 2];
    let read_error = |source| VolumeError::NiftiRead {
        path: path.display().to_string(),
        source,
    };
    reader.read_exact(&mut magic).map_err(read_error)?;
    let chained = std::io::Cursor::new(magic).chain(reader);
    if magic == [0x1f, 0x8b] {
        flate2::read::MultiGzDecoder::new(chained).read_to_end(&mut bytes)
    } else {
        { chained }.read_to_end(&mut bytes)
    }
    .map_err(read_error)?;
    if bytes.len() < HEADER_SIZE {
        return Err(error(format!("only {} bytes", bytes.len())));
    }
    let big_endian = match bytes[0..4].try_into().map(i32::from_le_bytes) {
        Ok(348) => false,
        _ if bytes[0..4] == 348i32.to_be_bytes() => true,
        _ => return Err(error("sizeof_hdr is not 348".into())),
    };
    if &bytes[344..347] != b"n+1" && &bytes[344..347] != b"ni1" {
        return Err(error("no NIfTI-1 magic (n+1 or ni1)".into()));
    }
    if &bytes[344..347] == b"ni1" {
        return Err(error(
            "a header-only .hdr/.img pair: give the single-file .nii form".into(),
        ));
    }
    let i16_at = |at: usize| {
        let b = [bytes[at], bytes[at + 1]];
        if big_endian {
            i16::from_be_bytes(b)
        } else {
            i16::from_le_bytes(b)
        }
    };
    let f32_at = |at: usize| {
        let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        f64::from(if big_endian {
            f32::from_be_bytes(b)
        } else {
            f32::from_le_bytes(b)
        })
    };
    let rank = i16_at(40);
    if !(1..=7).contains(&rank) {
        return Err(error(format!("dim[0] is {rank}")));
    }
    let mut dim = [1usize; 7];
    for (i, d) in dim.iter_mut().enumerate().take(rank as usize) {
        let v = i16_at(42 + 2 * i);
        if v < 1 {
            return Err(error(format!("dim[{}] is {v}", i + 1)));
        }
        *d = v as usize;
    }
    let datatype = i16_at(70);
    let size = bytes_per_voxel(datatype)
        .ok_or_else(|| error(format!("unsupported datatype code {datatype}")))?;
    let offset = f32_at(108) as usize;
    let dims = [dim[0], dim[1], dim[2]];
    let volumes = dim[3..].iter().product::<usize>();
    let needed = offset + dims.iter().product::<usize>() * volumes * size;
    if offset < HEADER_SIZE || bytes.len() < needed {
        return Err(error(format!(
            "{} bytes of voxel data, {} expected",
            bytes.len().saturating_sub(offset),
            needed.saturating_sub(offset)
        )));
    }
    let (mut slope, intercept) = (f32_at(112), f32_at(116));
    if slope == 0.0 || !slope.is_finite() {
        slope = 1.0;
    }
    let pixdim = [f32_at(80), f32_at(84), f32_at(88)].map(|p| if p > 0.0 { p } else { 1.0 });
    let ras = if i16_at(254) > 0 {
        let mut a = [[0.0; 4]; 4];
        for (r, row) in a.iter_mut().enumerate().take(3) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f32_at(280 + 16 * r + 4 * c);
            }
        }
        a[3][3] = 1.0;
        a
    } else if i16_at(252) > 0 {
        let (b, c, d) = (f32_at(256), f32_at(260), f32_at(264));
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let qfac = if f32_at(76) < 0.0 { -1.0 } else { 1.0 };
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let col = |j: usize, s: f64| [r[0][j] * s, r[1][j] * s, r[2][j] * s];
        from_columns(
            col(0, pixdim[0]),
            col(1, pixdim[1]),
            col(2, pixdim[2] * qfac),
            [f32_at(268), f32_at(272), f32_at(276)],
        )
    } else {
        from_columns(
            [pixdim[0], 0.0, 0.0],
            [0.0, pixdim[1], 0.0],
            [0.0, 0.0, pixdim[2]],
            [0.0; 3],
        )
    };
    Ok(NiftiFile {
        dims,
        volumes,
        datatype,
        slope,
        intercept,
        big_endian,
        affine_lps: flip_lps_ras(&ras),
        bytes,
        offset,
    })
}

fn bytes_per_voxel(datatype: i16) -> Option<usize> {
    Some(match datatype {
        2 | 256 => 1,
        4 | 512 => 2,
        8 | 16 | 768 => 4,
        64 => 8,
        _ => return None,
    })
}

impl NiftiFile {
    /// `[x, y, z]` voxels of each volume.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// How many 3D volumes the file holds (the product of dim[4..]).
    pub fn volumes(&self) -> usize {
        self.volumes
    }

    /// Whether the stored voxels are integers, which import-nifti can write back exactly.
    pub fn is_integer(&self) -> bool {
        !matches!(self.datatype, 16 | 64) && self.slope == 1.0 && self.intercept == 0.0
    }

    /// Volume `t` (0-based) with scl_slope/scl_inter applied and its affine in LPS.
    pub fn volume(&self, t: usize) -> Result<Volume, VolumeError> {
        if t >= self.volumes {
            return Err(VolumeError::NoSuchVolume {
                index: t,
                volumes: self.volumes,
            });
        }
        let [nx, ny, nz] = self.dims;
        let count = nx * ny * nz;
        let size = bytes_per_voxel(self.datatype).unwrap_or(1);
        let start = self.offset + t * count * size;
        let raw = &self.bytes[start..start + count * size];
        let be = self.big_endian;
        let read: fn(&[u8], bool) -> f64 = match self.datatype {
            2 => |b, _| f64::from(b[0]),
            256 => |b, _| f64::from(b[0] as i8),
            4 => |b, be| f64::from(endian16(b, be) as i16),
            512 => |b, be| f64::from(endian16(b, be)),
            8 => |b, be| f64::from(endian32(b, be) as i32),
            768 => |b, be| f64::from(endian32(b, be)),
            16 => |b, be| f64::from(f32::from_bits(endian32(b, be))),
            _ => |b, be| {
                let mut a: [u8; 8] = b.try_into().unwrap_or_default();
                if be {
                    a.reverse();
                }
                f64::from_le_bytes(a)
            },
        };
        let values: Vec<f32> = raw
            .chunks_exact(size)
            .map(|b| (read(b, be) * self.slope + self.intercept) as f32)
            .collect();
        let data = Array3::from_shape_vec((nz, ny, nx), values).map_err(VolumeError::NiftiShape)?;
        Ok(Volume {
            data,
            affine: self.affine_lps,
            slices: Vec::new(),
        })
    }
}

fn endian16(b: &[u8], big_endian: bool) -> u16 {
    let a = [b[0], b[1]];
    if big_endian {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn endian32(b: &[u8], big_endian: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big_endian {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The qform alone (sform ignored) must give back an oblique, left-handed affine.
    #[test]
    fn qform_round_trips_an_oblique_affine() {
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        let affine = from_columns(
            [0.9 * c, 0.9 * s, 0.0],
            [-0.8 * s, 0.8 * c, 0.0],
            [0.0, 0.0, -3.0],
            [-100.0, 20.0, 50.0],
        );
        let volume = Volume {
            data: Array3::from_shape_fn((2, 3, 4), |(k, j, i)| (k * 100 + j * 10 + i) as f32),
            affine,
            slices: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.nii.gz");
        write_nifti(&volume, &path).unwrap();
        let back = read_nifti(&path).unwrap().volume(0).unwrap();
        assert_eq!(back.data, volume.data);
        // Drop the sform: the reader falls back to the qform.
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&std::fs::read(&path).unwrap()[..])
            .read_to_end(&mut raw)
            .unwrap();
        raw[254..256].copy_from_slice(&0i16.to_le_bytes());
        let plain = dir.path().join("q.nii");
        std::fs::write(&plain, raw).unwrap();
        let q = read_nifti(&plain).unwrap().volume(0).unwrap();
        for (a, b) in [(&back.affine, &affine), (&q.affine, &affine)] {
            for r in 0..3 {
                for c in 0..4 {
                    assert!((a[r][c] - b[r][c]).abs() < 1e-4, "{a:?} != {b:?}");
                }
            }
        }
    }
}
