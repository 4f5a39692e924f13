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
    #[error("model {dir}: cannot read {path}")]
    UnreadableModel {
        dir: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model {dir}: model_card.json is not a valid model card")]
    InvalidCard {
        dir: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "no ONNX Runtime library: set [model] onnxruntime_library or ORT_DYLIB_PATH to \
         libonnxruntime.so.1.31.1 (`make setup` installs it in .venv from the onnxruntime==1.31.1 wheel)"
    )]
    NoLibrary,
    #[error("ONNX Runtime library {0} does not exist")]
    LibraryMissing(PathBuf),
    #[error("cannot load ONNX Runtime from {path} (msnode needs version 1.31.x)")]
    LoadLibrary {
        path: PathBuf,
        #[source]
        source: ort::LoadDynamicError,
    },
    #[error("cannot start ONNX Runtime from {path}")]
    StartRuntime {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },
    #[error(
        "the CUDA execution provider did not register; use execution_provider = \"auto\" or \"cpu\" \
         to run without a GPU"
    )]
    CudaUnavailable(#[source] ort::Error),
    #[error("cannot create an ONNX Runtime session")]
    Session(#[source] ort::Error),
    #[error("the network failed on a batch of tiles")]
    Run(#[source] ort::Error),
    #[error("invalid input: {0}")]
    Input(String),
}
