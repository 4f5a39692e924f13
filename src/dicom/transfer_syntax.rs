//! The transfer syntaxes msnode reads, writes or negotiates, by their names in the standard.

use dicom_dictionary_std::uids;

pub const IMPLICIT_VR_LE: &str = uids::IMPLICIT_VR_LITTLE_ENDIAN;
pub const EXPLICIT_VR_LE: &str = uids::EXPLICIT_VR_LITTLE_ENDIAN;
pub const DEFLATED_EXPLICIT_VR_LE: &str = uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
/// Retired; neither received nor read.
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
/// JPEG baseline (process 1).
pub const JPEG_BASELINE: &str = uids::JPEG_BASELINE8_BIT;
/// JPEG lossless (process 14).
pub const JPEG_LOSSLESS: &str = uids::JPEG_LOSSLESS;
/// JPEG lossless, first-order prediction (process 14, selection value 1).
pub const JPEG_LOSSLESS_SV1: &str = uids::JPEG_LOSSLESS_SV1;
pub const JPEG_LS_LOSSLESS: &str = uids::JPEGLS_LOSSLESS;
pub const JPEG_LS_NEAR_LOSSLESS: &str = uids::JPEGLS_NEAR_LOSSLESS;
/// JPEG 2000, lossless only.
pub const JPEG_2000_LOSSLESS: &str = uids::JPEG2000_LOSSLESS;
pub const JPEG_2000: &str = uids::JPEG2000;
pub const RLE_LOSSLESS: &str = uids::RLE_LOSSLESS;
