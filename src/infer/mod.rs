//! The infer stage: run a model from `models/<name>/` through ONNX Runtime over a preprocessed
//! two-visit input, with nnU-Net v2's sliding window.

pub mod card;
pub mod runtime;
pub mod sliding;
pub mod window;

use std::path::PathBuf;

pub use card::{Model, ModelCard};
pub use runtime::{Predictor, Provider, RuntimeSettings};

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("model {dir}: {why}")]
    InvalidModel { dir: PathBuf, why: String },
    #[error("{0}")]
    Runtime(String),
    #[error("invalid input: {0}")]
    Input(String),
}
