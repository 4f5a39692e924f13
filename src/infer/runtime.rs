//! ONNX Runtime: loading the library, choosing the execution provider, and one session per
//! predictor (a session runs one request at a time: give each worker its own predictor).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::{Array4, Array5, ArrayView4, Ix5};
use ort::environment::Environment;
use ort::ep;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use tracing::{info, warn};

use super::InferError;
use super::card::Model;
use super::sliding::{WindowSettings, activate, predict_logits};
use crate::config::ExecutionProvider;

/// The execution provider a predictor actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cuda,
    Cpu,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Cuda => "CUDA",
            Provider::Cpu => "CPU",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    /// libonnxruntime.so; `ORT_DYLIB_PATH` when `None`.
    pub library: Option<PathBuf>,
    pub provider: ExecutionProvider,
    /// 0 lets ONNX Runtime decide.
    pub intra_threads: usize,
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static ENVIRONMENT_INIT: Mutex<()> = Mutex::new(());

/// Load ONNX Runtime once per process, from `library` or `ORT_DYLIB_PATH`. A failed load is
/// not remembered: the next call tries again (after the admin fixed the path, say).
fn environment(library: Option<&Path>) -> Result<&'static Environment, InferError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let _one_at_a_time = ENVIRONMENT_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = library
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .ok_or(InferError::NoLibrary)?;
    if !path.is_file() {
        return Err(InferError::LibraryMissing(path));
    }
    let env = ort::init_from(&path)
        .map_err(|source| InferError::LoadLibrary {
            path: path.clone(),
            source,
        })?
        .with_name("msnode")
        .build()
        .map_err(|source| InferError::StartRuntime {
            path: path.clone(),
            source,
        })?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// A model ready to run: its session, the provider it got, and its card.
pub struct Predictor {
    session: Session,
    model: Model,
    pub provider: Provider,
}

fn session(
    env: &Environment,
    model: &Model,
    threads: usize,
    provider: Provider,
) -> Result<Session, ort::Error> {
    let mut builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(ort::Error::<()>::from)?;
    if threads > 0 {
        builder = builder
            .with_intra_threads(threads)
            .map_err(ort::Error::<()>::from)?;
    }
    let mut builder = match provider {
        // error_on_failure: a GPU that does not register must not silently become a CPU run.
        Provider::Cuda => builder
            .with_execution_providers([ep::CUDA::default()
                .with_device_id(0)
                .build()
                .error_on_failure()])
            .map_err(ort::Error::<()>::from)?,
        Provider::Cpu => builder
            .with_execution_providers([ep::CPU::default().build()])
            .map_err(ort::Error::<()>::from)?,
    };
    builder.commit_from_file(&model.onnx_path)
}

impl Predictor {
    pub fn new(model: Model, settings: &RuntimeSettings) -> Result<Predictor, InferError> {
        let env = environment(settings.library.as_deref())?;
        let threads = settings.intra_threads;
        let (session, provider) = match settings.provider {
            ExecutionProvider::Cpu => (session(env, &model, threads, Provider::Cpu), Provider::Cpu),
            ExecutionProvider::Cuda => (
                session(env, &model, threads, Provider::Cuda),
                Provider::Cuda,
            ),
            ExecutionProvider::Auto => match session(env, &model, threads, Provider::Cuda) {
                Ok(s) => (Ok(s), Provider::Cuda),
                Err(e) => {
                    info!(reason = %e, "CUDA is not available; running on CPU");
                    (session(env, &model, threads, Provider::Cpu), Provider::Cpu)
                }
            },
        };
        let session = session.map_err(|e| match provider {
            Provider::Cuda => InferError::CudaUnavailable(e),
            Provider::Cpu => InferError::Session(e),
        })?;
        let predictor = Predictor {
            session,
            model,
            provider,
        };
        predictor.check_signature()?;
        info!(model = %predictor.model.card.name, version = %predictor.model.card.version, provider = %provider, "model loaded");
        Ok(predictor)
    }

    /// The verified model this predictor runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The ONNX graph must take and give what the card says.
    fn check_signature(&self) -> Result<(), InferError> {
        let card = &self.model.card;
        let mismatch = |why: String| InferError::InvalidModel {
            dir: self.model.dir.clone(),
            why,
        };
        let input = self
            .session
            .inputs()
            .iter()
            .find(|i| i.name() == card.input_name)
            .ok_or_else(|| {
                mismatch(format!(
                    "the ONNX graph has no input named {:?}",
                    card.input_name
                ))
            })?;
        let output = self
            .session
            .outputs()
            .iter()
            .find(|o| o.name() == card.output_name)
            .ok_or_else(|| {
                mismatch(format!(
                    "the ONNX graph has no output named {:?}",
                    card.output_name
                ))
            })?;
        for (what, outlet, channels) in [
            ("input", input, card.input_channels.len()),
            ("output", output, card.output_channels()),
        ] {
            let shape = outlet
                .dtype()
                .tensor_shape()
                .ok_or_else(|| mismatch(format!("the {what} is not a tensor")))?;
            if shape.len() != 5 {
                return Err(mismatch(format!(
                    "the {what} has rank {}, expected 5 (N, C, Z, Y, X)",
                    shape.len()
                )));
            }
            if shape[1] >= 0 && shape[1] as usize != channels {
                return Err(mismatch(format!(
                    "the {what} has {} channels, the card says {channels}",
                    shape[1]
                )));
            }
            for (axis, &dim) in shape[2..].iter().enumerate() {
                if dim >= 0 && dim as usize != card.patch_size[axis] {
                    return Err(mismatch(format!(
                        "the {what}'s spatial size {:?} is not the card's patch size {:?}",
                        &shape[2..],
                        card.patch_size
                    )));
                }
            }
        }
        Ok(())
    }

    /// Probabilities (output channels, z, y, x) for a normalised input (input channels, z, y, x)
    /// on the model grid.
    pub fn predict(
        &mut self,
        input: ArrayView4<f32>,
        mirror: bool,
        batch: usize,
    ) -> Result<Array4<f32>, InferError> {
        let card = self.model.card.clone();
        if input.dim().0 != card.input_channels.len() {
            return Err(InferError::Input(format!(
                "{} input channels given, the model takes {} ({})",
                input.dim().0,
                card.input_channels.len(),
                card.input_channels
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let settings = WindowSettings {
            tile: card.patch_size,
            step_fraction: 0.5,
            batch,
            mirror_axes: if mirror {
                card.mirror_axes.clone()
            } else {
                Vec::new()
            },
        };
        let session = &mut self.session;
        let logits = predict_logits(
            input,
            &settings,
            card.output_channels(),
            |tiles: Array5<f32>| {
                let tensor = Tensor::from_array(tiles)?;
                let outputs = session.run(ort::inputs![card.input_name.as_str() => tensor])?;
                let array = outputs[card.output_name.as_str()].try_extract_array::<f32>()?;
                array.to_owned().into_dimensionality::<Ix5>().map_err(|e| {
                    ort::Error::new(format!("the network output is not 5-dimensional: {e}"))
                })
            },
        )
        .map_err(InferError::Run)?;
        if self.provider == Provider::Cpu && mirror && !card.mirror_axes.is_empty() {
            warn!(
                "test-time mirroring on CPU multiplies the run time by {}",
                1 << card.mirror_axes.len()
            );
        }
        Ok(activate(logits, card.output_activation))
    }
}
