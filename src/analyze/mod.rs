//! The whole analysis of one follow-up: the orchestration of the typed stages, top to bottom.
//!
//! volume (both visits) -> register (prior onto current) -> prepare (model grid, brain, channels,
//! normalisation, crop) -> infer -> prepare (uncrop, back to the current grid) -> lesions ->
//! [`results`] (DICOM-SEG, TID 1500 report and overlay series for PACS; NIfTI, PNG previews and
//! `summary.json` kept locally).
//!
//! A single-visit model (its card's channels need no prior) makes the same stages a
//! [`AnalysisKind::LesionLoad`] analysis of the current visit alone: no registration, every lesion
//! without a change, the total lesion count and volume in the report.
//!
//! An [`Analyzer`] holds the opened, verified model and its ONNX Runtime session, and runs many
//! analyses (as nnU-Net's `nnUNetPredictor` is built once and predicts many cases); it re-verifies
//! the model only when its files change. `msnode analyze` and `msnode infer` run one.

pub mod results;
mod source;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use ndarray::Axis;
use serde::Serialize;
use tracing::info;

use crate::dicom::uid::Uids;
use crate::infer::{InferError, Model, Predictor, Provider, RuntimeSettings};
pub use crate::lesions::AnalysisKind;
use crate::lesions::{Lesion, LesionSummary, find_lesions};
use crate::prepare::{
    AlignedPrior, BrainStats, Channel, CurrentOnModelGrid, PrepareError, PriorZ, model_input,
    to_current_grid,
};
use crate::register::{Quality, RegisterError, RegisterOptions, Registration, register};
use crate::volume::{Volume, VolumeError};

pub use source::{Scan, ScanSource};

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("cannot load the {what}")]
    Load {
        what: &'static str,
        #[source]
        source: VolumeError,
    },
    #[error("registration of the prior to the current scan failed")]
    Register(#[source] RegisterError),
    #[error("cannot prepare the model's input")]
    Prepare(#[source] PrepareError),
    #[error("cannot open the model")]
    Model(#[source] InferError),
    #[error("inference failed")]
    Infer(#[source] InferError),
    #[error("cannot write the results")]
    Results(#[source] results::ResultsError),
    #[error("model {model} compares two visits: it needs a prior")]
    PriorRequired { model: String },
    #[error("model {model} segments one visit: it takes no prior")]
    PriorNotUsed { model: String },
}

/// How every analysis of an [`Analyzer`] runs (built from the configuration by
/// [`crate::settings::Settings::from_config`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSettings {
    pub model_dir: PathBuf,
    pub runtime: RuntimeSettings,
    /// Test-time mirroring over the card's axes (8 passes for 3 axes).
    pub mirror: bool,
    /// Overrides the model card's default threshold.
    pub threshold: Option<f32>,
    /// Overrides the model card's minimum lesion volume.
    pub min_lesion_volume_mm3: Option<f64>,
    pub registration: RegisterOptions,
}

/// Wall time of each stage, seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub load: f64,
    /// The prior's alignment, with the current scan's resampling onto the model grid and its
    /// brain mask made beside it; 0 without a prior.
    pub register: f64,
    /// The prior onto the model grid (without a prior: the current scan onto it and its brain),
    /// the channels and their normalisation.
    pub preprocess: f64,
    pub infer: f64,
    pub lesions: f64,
    pub outputs: f64,
    pub total: f64,
}

impl Timings {
    /// Each stage with its seconds, the whole analysis last.
    pub fn stages(&self) -> [(&'static str, f64); 7] {
        [
            ("load", self.load),
            ("register", self.register),
            ("preprocess", self.preprocess),
            ("infer", self.infer),
            ("lesions", self.lesions),
            ("outputs", self.outputs),
            ("analysis", self.total),
        ]
    }
}

/// Seconds since the last lap.
struct Stopwatch(Instant);

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    fn lap(&mut self) -> f64 {
        let seconds = self.0.elapsed().as_secs_f64();
        self.0 = Instant::now();
        seconds
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistrationSummary {
    /// `[analysis] registration`: rigid or affine.
    pub model: crate::register::Model,
    pub quality: Quality,
    /// Current (fixed) point -> prior (moving) point, LPS mm, rows of the 4 x 4 matrix.
    pub transform: [[f64; 4]; 4],
    /// Below [`WEAK_PAIRING_CORRELATION`] brain correlation the pairing is weak: the report says so.
    pub weak: bool,
}

/// Brain correlation below which a pairing is reported as weak: true Lesjak pairs align at 0.63 and
/// 0.87, a prior of another patient at 0.31.
pub const WEAK_PAIRING_CORRELATION: f64 = 0.5;

/// What one analysis found and wrote; also written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AnalysisSummary {
    pub kind: AnalysisKind,
    pub model: String,
    pub model_version: String,
    pub execution_provider: String,
    pub threshold: f32,
    pub min_lesion_volume_mm3: f64,
    pub mirroring: bool,
    /// None for a lesion-load analysis (no prior).
    pub registration: Option<RegistrationSummary>,
    pub totals: LesionSummary,
    pub lesions: Vec<Lesion>,
    /// DICOM objects meant for PACS: the SEG, the report and the overlay series (none when the
    /// current scan was not DICOM).
    pub for_pacs: Vec<PathBuf>,
    /// Files kept on the node: probability and label maps (NIfTI), PNG previews, `summary.json`.
    pub local: Vec<PathBuf>,
    pub timings: Timings,
}

/// The inference half of an analysis: the prior aligned to the current scan (when there is one),
/// the model run, and the lesion probability.
pub struct Prediction {
    pub registration: Option<Registration>,
    /// The aligned prior's intensity inside the brain (what its z-scores are taken against).
    pub prior_brain: Option<BrainStats>,
    /// Lesion probability on the current scan's grid.
    pub probability: Volume,
    /// Lesion probability on the model grid, where the network ran.
    pub model_probability: Volume,
    /// The network's input channels on the model grid before normalisation, in the card's order.
    pub model_inputs: Vec<(Channel, Volume)>,
}

/// Where `msnode infer` writes what it found.
#[derive(Debug, Clone)]
pub struct InferOutputs {
    /// Lesion probability on the current grid (NIfTI).
    pub probability: PathBuf,
    /// The thresholded probability on the current grid (NIfTI, 0 or 1).
    pub mask: Option<PathBuf>,
    /// A folder for what the network saw: each input channel on the model grid before
    /// normalisation, and the probability on that grid (NIfTI).
    pub inputs: Option<PathBuf>,
}

/// What `msnode infer` did; printed as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct InferSummary {
    pub model: String,
    pub model_version: String,
    pub execution_provider: String,
    pub threshold: f32,
    pub mirroring: bool,
    /// None without a prior.
    pub registration_brain_correlation: Option<f64>,
    /// Voxels at or above the threshold on the current grid, and their volume.
    pub lesion_voxels: usize,
    pub lesion_volume_mm3: f64,
    pub outputs: Vec<PathBuf>,
    pub timings: Timings,
}

/// Size and modification time of the model's files: a change means the model must be verified
/// and loaded again.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint(Vec<Option<(u64, SystemTime)>>);

impl Fingerprint {
    fn of(model: &Model) -> Fingerprint {
        let files = [model.dir.join("model_card.json"), model.onnx_path.clone()];
        Fingerprint(
            files
                .iter()
                .map(|f| {
                    let meta = std::fs::metadata(f).ok()?;
                    Some((meta.len(), meta.modified().ok()?))
                })
                .collect(),
        )
    }
}

/// A verified model with its session, ready for many analyses.
pub struct Analyzer {
    settings: AnalysisSettings,
    predictor: Predictor,
    fingerprint: Fingerprint,
}

impl Analyzer {
    /// What this analyzer was opened with.
    pub fn settings(&self) -> &AnalysisSettings {
        &self.settings
    }

    /// Open and verify the model (card checked, sha256 of the ONNX file) and start its session.
    pub fn open(settings: AnalysisSettings) -> Result<Analyzer, AnalyzeError> {
        let model = Model::open(&settings.model_dir).map_err(AnalyzeError::Model)?;
        let fingerprint = Fingerprint::of(&model);
        let predictor = Predictor::new(model, &settings.runtime).map_err(AnalyzeError::Model)?;
        Ok(Analyzer {
            settings,
            predictor,
            fingerprint,
        })
    }

    pub fn model(&self) -> &Model {
        self.predictor.model()
    }

    pub fn provider(&self) -> Provider {
        self.predictor.provider
    }

    /// Follow-up or lesion load: what this analyzer's model makes.
    pub fn kind(&self) -> AnalysisKind {
        AnalysisKind::of_channels(&self.model().card.input_channels)
    }

    /// The model's kind must fit the visits given: a prior for a two-visit model, none otherwise.
    fn check_visits(&self, has_prior: bool) -> Result<(), AnalyzeError> {
        let model = || self.model().card.name.clone();
        match (self.kind(), has_prior) {
            (AnalysisKind::FollowUp, false) => Err(AnalyzeError::PriorRequired { model: model() }),
            (AnalysisKind::LesionLoad, true) => Err(AnalyzeError::PriorNotUsed { model: model() }),
            _ => Ok(()),
        }
    }

    /// Verify and load the model again when its files changed since it was opened. Returns
    /// whether it was reloaded.
    pub fn refresh(&mut self) -> Result<bool, AnalyzeError> {
        if Fingerprint::of(self.model()) == self.fingerprint {
            return Ok(false);
        }
        info!(dir = %self.settings.model_dir.display(), "the model's files changed: verifying it again");
        *self = Analyzer::open(self.settings.clone())?;
        Ok(true)
    }

    fn threshold(&self) -> f32 {
        self.settings
            .threshold
            .unwrap_or(self.model().card.default_threshold)
    }

    fn min_lesion_volume(&self) -> f64 {
        self.settings
            .min_lesion_volume_mm3
            .unwrap_or(f64::from(self.model().card.min_lesion_volume_mm3))
    }

    /// Align `prior` (when given) to `current`, build the model's input and run it. Fills the
    /// register, preprocess and infer timings.
    pub fn predict(
        &mut self,
        current: &Volume,
        prior: Option<&Volume>,
        timings: &mut Timings,
    ) -> Result<Prediction, AnalyzeError> {
        self.refresh()?;
        self.check_visits(prior.is_some())?;
        let mut watch = Stopwatch::start();
        let preprocessing = self.model().card.preprocessing();
        // The current scan's part of the model input needs no prior: it is made on the other
        // core while the prior is aligned (both stages use rayon inside; they overlap in their
        // serial parts).
        let (registration, current_on_model) = match prior {
            Some(prior) => {
                let (registration, current_on_model) = rayon::join(
                    || register(current, prior, &self.settings.registration),
                    || CurrentOnModelGrid::new(current, &preprocessing),
                );
                let registration = registration.map_err(AnalyzeError::Register)?;
                info!(
                    correlation = registration.quality.brain_correlation,
                    metric = registration.quality.metric,
                    "prior aligned to the current scan"
                );
                (Some(registration), Some(current_on_model))
            }
            None => (None, None),
        };
        timings.register = watch.lap();
        // Without a prior the current scan's preparation counts as preprocessing.
        let current_on_model = current_on_model
            .unwrap_or_else(|| CurrentOnModelGrid::new(current, &preprocessing))
            .map_err(AnalyzeError::Prepare)?;

        let aligned = prior
            .zip(registration.as_ref())
            .map(|(volume, r)| AlignedPrior {
                volume,
                to_prior: &r.transform,
            });
        let input = model_input(current_on_model, aligned, &preprocessing)
            .map_err(AnalyzeError::Prepare)?;
        timings.preprocess = watch.lap();

        let probabilities = self
            .predictor
            .predict(input.channels.view(), self.settings.mirror, 2)
            .map_err(AnalyzeError::Infer)?;
        timings.infer = watch.lap();

        let model_probability = input.uncrop(probabilities.index_axis(Axis(0), 1));
        let probability =
            to_current_grid(&model_probability, current).map_err(AnalyzeError::Prepare)?;
        Ok(Prediction {
            registration,
            prior_brain: input.prior_brain,
            probability,
            model_probability,
            model_inputs: input.raw,
        })
    }

    /// The whole analysis of `current` against `prior` (or of `current` alone with a single-visit
    /// model): every result is written into `out_dir`, the new objects' UIDs taken from `uids`.
    pub fn analyze(
        &mut self,
        current: &ScanSource,
        prior: Option<&ScanSource>,
        out_dir: &Path,
        uids: &mut Uids,
    ) -> Result<AnalysisSummary, AnalyzeError> {
        let started = Instant::now();
        let mut timings = Timings::default();
        let (current, prior, prediction) = self.load_and_predict(current, prior, &mut timings)?;

        let mut watch = Stopwatch::start();
        let prior_z = match (&prior, &prediction.registration, prediction.prior_brain) {
            (Some(prior), Some(registration), Some(stats)) => {
                let aligned = AlignedPrior {
                    volume: &prior.volume,
                    to_prior: &registration.transform,
                };
                Some(PriorZ::new(&current.volume, aligned, stats).map_err(AnalyzeError::Prepare)?)
            }
            _ => None,
        };
        let prior_z_at = prior_z.as_ref().map(|z| move |voxel| z.at(voxel));
        let (threshold, min_volume) = (self.threshold(), self.min_lesion_volume());
        let lesions = find_lesions(
            prediction.probability.data.view(),
            &current.volume.affine,
            prior_z_at.as_ref().map(|f| f as &dyn Fn([usize; 3]) -> f32),
            threshold,
            min_volume,
        );
        timings.lesions = watch.lap();

        let card = &self.model().card;
        let registration = prediction
            .registration
            .as_ref()
            .map(|r| RegistrationSummary {
                model: self.settings.registration.model,
                quality: r.quality,
                transform: r.transform.affine,
                weak: r.quality.brain_correlation < WEAK_PAIRING_CORRELATION,
            });
        let run = results::Run {
            model_name: &card.name,
            model_version: &card.version,
            provider: self.provider(),
            threshold,
            min_lesion_volume_mm3: min_volume,
            registration: registration.as_ref(),
        };
        let visits = results::Visits {
            current: &current,
            prior: prior.as_ref(),
        };
        let written = results::write_all(
            out_dir,
            &visits,
            &prediction.probability,
            &lesions,
            &run,
            uids,
        )
        .map_err(AnalyzeError::Results)?;
        timings.outputs = watch.lap();
        timings.total = started.elapsed().as_secs_f64();

        let mut summary = AnalysisSummary {
            kind: self.kind(),
            model: card.name.clone(),
            model_version: card.version.clone(),
            execution_provider: self.provider().to_string(),
            threshold,
            min_lesion_volume_mm3: min_volume,
            mirroring: self.settings.mirror,
            registration,
            totals: lesions.summary(),
            lesions: lesions.lesions,
            for_pacs: written.for_pacs,
            local: written.local,
            timings,
        };
        results::write_summary(out_dir, &mut summary).map_err(AnalyzeError::Results)?;
        Ok(summary)
    }

    /// Align, run the model and write the lesion probability (and on request the mask and the
    /// model-grid inputs): the inference half of [`Analyzer::analyze`], for inspection and parity
    /// checks.
    pub fn infer(
        &mut self,
        current: &ScanSource,
        prior: Option<&ScanSource>,
        outputs: &InferOutputs,
    ) -> Result<InferSummary, AnalyzeError> {
        let started = Instant::now();
        let mut timings = Timings::default();
        let (_, _, prediction) = self.load_and_predict(current, prior, &mut timings)?;
        let mut watch = Stopwatch::start();
        let threshold = self.threshold();
        let written = results::write_inference(&prediction, threshold, outputs)
            .map_err(AnalyzeError::Results)?;
        timings.outputs = watch.lap();
        timings.total = started.elapsed().as_secs_f64();
        let card = &self.model().card;
        Ok(InferSummary {
            model: card.name.clone(),
            model_version: card.version.clone(),
            execution_provider: self.provider().to_string(),
            threshold,
            mirroring: self.settings.mirror,
            registration_brain_correlation: prediction
                .registration
                .as_ref()
                .map(|r| r.quality.brain_correlation),
            lesion_voxels: written.lesion_voxels,
            lesion_volume_mm3: written.lesion_voxels as f64
                * crate::lesions::voxel_volume(&prediction.probability.affine),
            outputs: written.files,
            timings,
        })
    }

    /// Load the visits and [`Analyzer::predict`]; fills the load timing too.
    fn load_and_predict(
        &mut self,
        current: &ScanSource,
        prior: Option<&ScanSource>,
        timings: &mut Timings,
    ) -> Result<(Scan, Option<Scan>, Prediction), AnalyzeError> {
        // A prior given to a single-visit model (or missing for a two-visit one) is refused
        // before anything is loaded.
        self.check_visits(prior.is_some())?;
        let mut watch = Stopwatch::start();
        let current = load(current, "current scan")?;
        let prior = prior.map(|p| load(p, "prior scan")).transpose()?;
        timings.load = watch.lap();
        let prediction =
            self.predict(&current.volume, prior.as_ref().map(|p| &p.volume), timings)?;
        Ok((current, prior, prediction))
    }
}

fn load(source: &ScanSource, what: &'static str) -> Result<Scan, AnalyzeError> {
    source
        .load()
        .map_err(|source| AnalyzeError::Load { what, source })
}
