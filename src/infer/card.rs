//! Model directories: `models/<name>/model_card.json` beside the ONNX file it describes.
//! The card is written by `training/` (see training/README.md for the schema); the node trusts a
//! model only when the card is complete and the ONNX file's sha256 matches it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::InferError;
use crate::prepare::{Channel, Normalization, Preprocessing};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Softmax,
    Sigmoid,
}

/// What the node needs to know to run a model; extra keys (provenance, evaluation) are kept as JSON.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    pub onnx_file: String,
    pub onnx_sha256: String,
    pub input_name: String,
    pub output_name: String,
    /// Channel order of the input tensor, e.g. ["prior", "current", "current_minus_prior"].
    pub input_channels: Vec<Channel>,
    /// Voxel spacing of the model's working grid, in mm, axis order (z, y, x).
    pub spacing_mm: [f64; 3],
    /// Tile size of the sliding window, axis order (z, y, x).
    pub patch_size: [usize; 3],
    /// Whether the network accepts spatial sizes other than `patch_size`.
    pub dynamic_spatial: bool,
    pub normalization: Normalization,
    pub output_activation: Activation,
    /// Output channel index -> label name.
    pub output_labels: BTreeMap<String, String>,
    pub default_threshold: f32,
    pub min_lesion_volume_mm3: f32,
    /// Spatial axes (0 = z, 1 = y, 2 = x) for test-time mirroring.
    pub mirror_axes: Vec<usize>,
    #[serde(default)]
    pub provenance: serde_json::Value,
    #[serde(default)]
    pub evaluation: serde_json::Value,
}

/// A model directory whose card was read and whose ONNX file was verified.
#[derive(Debug, Clone)]
pub struct Model {
    pub dir: PathBuf,
    pub card: ModelCard,
    pub onnx_path: PathBuf,
}

fn invalid(dir: &Path, why: impl Into<String>) -> InferError {
    InferError::InvalidModel {
        dir: dir.to_owned(),
        why: why.into(),
    }
}

pub fn sha256_hex(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl ModelCard {
    /// Checks that do not need the ONNX file.
    fn check(&self, dir: &Path) -> Result<(), InferError> {
        if self.input_channels.is_empty() {
            return Err(invalid(dir, "input_channels is empty"));
        }
        if self.patch_size.contains(&0) || self.spacing_mm.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(invalid(dir, "patch_size and spacing_mm must be positive"));
        }
        if let Some(axis) = self.mirror_axes.iter().find(|a| **a > 2) {
            return Err(invalid(
                dir,
                format!("mirror axis {axis} is not a spatial axis (0, 1 or 2)"),
            ));
        }
        if !(self.default_threshold > 0.0 && self.default_threshold < 1.0) {
            return Err(invalid(dir, "default_threshold must lie between 0 and 1"));
        }
        let expected: Vec<String> = (0..self.output_labels.len())
            .map(|i| i.to_string())
            .collect();
        let keys: Vec<String> = self.output_labels.keys().cloned().collect();
        let mut sorted_expected = expected.clone();
        sorted_expected.sort();
        if keys != sorted_expected {
            return Err(invalid(
                dir,
                format!(
                    "output_labels must be numbered 0..{}, found {keys:?}",
                    expected.len()
                ),
            ));
        }
        Ok(())
    }

    /// Number of output channels the network must produce.
    pub fn output_channels(&self) -> usize {
        self.output_labels.len()
    }

    /// What the prepare stage must make of the two visits for this model.
    pub fn preprocessing(&self) -> Preprocessing {
        Preprocessing {
            spacing_mm: self.spacing_mm,
            channels: self.input_channels.clone(),
            normalization: self.normalization.clone(),
        }
    }
}

impl Model {
    /// Read `dir/model_card.json`, check it, and verify the ONNX file's sha256.
    pub fn open(dir: &Path) -> Result<Model, InferError> {
        let unreadable = |path: &Path| {
            let path = path.to_owned();
            move |source| InferError::UnreadableModel {
                dir: dir.to_owned(),
                path,
                source,
            }
        };
        let card_path = dir.join("model_card.json");
        let text = std::fs::read_to_string(&card_path).map_err(unreadable(&card_path))?;
        let card: ModelCard =
            serde_json::from_str(&text).map_err(|source| InferError::InvalidCard {
                dir: dir.to_owned(),
                source,
            })?;
        card.check(dir)?;
        let onnx_path = dir.join(&card.onnx_file);
        let actual = sha256_hex(&onnx_path).map_err(unreadable(&onnx_path))?;
        if !actual.eq_ignore_ascii_case(&card.onnx_sha256) {
            return Err(invalid(
                dir,
                format!(
                    "sha256 of {} is {actual}, the card says {}: the file was changed or the card belongs to another model",
                    card.onnx_file, card.onnx_sha256
                ),
            ));
        }
        Ok(Model {
            dir: dir.to_owned(),
            card,
            onnx_path,
        })
    }
}
