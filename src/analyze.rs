//! The whole analysis of one follow-up, offline: two series (or NIfTI files) in, DICOM-SEG, the
//! TID 1500 report, the overlay series, PNG previews and a summary out. The node's job runner
//! calls this; `msnode analyze` exposes it.
//!
//! volume -> register (prior onto current) -> model grid, brain mask, channels, normalisation ->
//! infer -> probabilities back on the current grid -> lesions -> outputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array3, Array4, Axis, s};
use serde::Serialize;
use tracing::info;

use crate::infer::{Model, Predictor, Provider, RuntimeSettings};
use crate::lesions::{Change, Lesion, LesionSummary, find_lesions};
use crate::outputs::overlay::{render, write_overlay_series, write_png};
use crate::outputs::seg::{CIELAB_RED, CIELAB_YELLOW, Segment, write_seg};
use crate::outputs::sr::{Evidence, ReportContent, write_report};
use crate::outputs::{Algorithm, SourceSeries};
use crate::register::{
    Grid, Interpolation, Quality, RegisterOptions, Registration, Transform, brain_mask, head_mask,
    nonzero_mask, normalize, register, resample,
};
use crate::volume::{LoadOptions, Volume, load_series, read_nifti, series_files, write_nifti};

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{what}: {source}")]
    Volume {
        what: &'static str,
        source: crate::volume::VolumeError,
    },
    #[error("registration of the prior to the current scan failed: {0}")]
    Register(#[from] crate::register::RegisterError),
    #[error("{0}")]
    Infer(#[from] crate::infer::InferError),
    #[error("{0}")]
    Output(#[from] crate::outputs::OutputError),
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// The two visits and how to run the model on them: what `analyze` and `infer` share.
#[derive(Debug, Clone)]
pub struct PairRequest {
    /// Series folder, DICOM file, Series Instance UID in the store, or NIfTI file.
    pub current: String,
    pub prior: String,
    /// The store's data directory, for inputs given as Series Instance UIDs.
    pub data_dir: PathBuf,
    pub model_dir: PathBuf,
    pub runtime: RuntimeSettings,
    /// Test-time mirroring over the card's axes (8 passes for 3 axes).
    pub mirror: bool,
}

/// Where the inputs are, how to run and where the outputs go.
#[derive(Debug, Clone)]
pub struct AnalyzeRequest {
    pub pair: PairRequest,
    pub out_dir: PathBuf,
    /// Overrides the model card's default threshold.
    pub threshold: Option<f32>,
    /// Overrides the model card's minimum lesion volume.
    pub min_lesion_volume_mm3: Option<f64>,
}

/// Wall time of each stage, seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub load: f64,
    pub register: f64,
    pub preprocess: f64,
    pub infer: f64,
    pub lesions: f64,
    pub outputs: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistrationSummary {
    pub quality: Quality,
    /// Current (fixed) point -> prior (moving) point, LPS mm, rows of the 4 x 4 matrix.
    pub transform: [[f64; 4]; 4],
    /// Below [`WEAK_PAIRING_CORRELATION`] brain correlation the pairing is weak: the report says so.
    pub weak: bool,
}

/// What one analysis found and wrote; also written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AnalysisSummary {
    pub model: String,
    pub model_version: String,
    pub execution_provider: String,
    pub threshold: f32,
    pub min_lesion_volume_mm3: f64,
    pub mirroring: bool,
    pub registration: RegistrationSummary,
    pub totals: LesionSummary,
    pub lesions: Vec<Lesion>,
    pub outputs: Vec<PathBuf>,
    pub timings: Timings,
}

/// Where `msnode infer` reads its inputs and writes the probability map.
#[derive(Debug, Clone)]
pub struct InferRequest {
    pub pair: PairRequest,
    /// Overrides the model card's default threshold for the mask.
    pub threshold: Option<f32>,
    /// Lesion probability on the current grid (NIfTI).
    pub probability_out: PathBuf,
    /// The thresholded probability on the current grid (NIfTI, 0 or 1).
    pub mask_out: Option<PathBuf>,
    /// A folder for what the network saw: each input channel on the model grid before
    /// normalisation, and the probability on that grid (NIfTI).
    pub inputs_out: Option<PathBuf>,
}

/// What `msnode infer` did; printed as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct InferSummary {
    pub model: String,
    pub model_version: String,
    pub execution_provider: String,
    pub threshold: f32,
    pub mirroring: bool,
    pub registration_brain_correlation: f64,
    /// Voxels at or above the threshold on the current grid, and their volume.
    pub lesion_voxels: usize,
    pub lesion_volume_mm3: f64,
    pub outputs: Vec<PathBuf>,
    pub timings: Timings,
}

/// Brain correlation below which a pairing is reported as weak: true Lesjak pairs align at 0.63 and
/// 0.87, a prior of another patient at 0.31.
pub const WEAK_PAIRING_CORRELATION: f64 = 0.5;

struct Input {
    volume: Volume,
    /// The DICOM files, when the input was a series.
    files: Vec<PathBuf>,
}

fn is_nifti(source: &str) -> bool {
    source.ends_with(".nii") || source.ends_with(".nii.gz")
}

fn load(source: &str, data_dir: &Path, what: &'static str) -> Result<Input, AnalyzeError> {
    let volume_error = |source| AnalyzeError::Volume { what, source };
    if is_nifti(source) {
        let volume = read_nifti(Path::new(source))
            .and_then(|n| n.volume(0))
            .map_err(volume_error)?;
        return Ok(Input {
            volume,
            files: Vec::new(),
        });
    }
    let files = series_files(source, data_dir).map_err(volume_error)?;
    let volume = load_series(&files, &LoadOptions::default()).map_err(volume_error)?;
    Ok(Input { volume, files })
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> AnalyzeError {
    AnalyzeError::Write {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Bounding box (inclusive start, exclusive end) of the mask, [slice, row, column].
fn bounding_box(mask: &Array3<bool>) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for ((k, j, i), &on) in mask.indexed_iter() {
        if on {
            for (a, v) in [k, j, i].into_iter().enumerate() {
                lo[a] = lo[a].min(v);
                hi[a] = hi[a].max(v + 1);
            }
        }
    }
    (lo[0] != usize::MAX).then_some((lo, hi))
}

/// Plain z-score inside a mask, no clipping: for the difference channel and the prior's z-map.
fn zscore_in_mask() -> crate::infer::card::Normalization {
    crate::infer::card::Normalization {
        scheme: "zscore".into(),
        use_mask: true,
        clip_percentiles: None,
    }
}

/// The model's input channels on the model grid, cropped to the nonzero mask, and where the crop sits.
struct ModelInput {
    channels: Array4<f32>,
    origin: [usize; 3],
    grid: Grid,
    /// The same channels on the whole model grid before normalisation, in the card's order: what
    /// nnU-Net's own preprocessing (crop, z-score) starts from.
    raw: Vec<(String, Array3<f32>)>,
}

fn model_input(
    current: &Volume,
    prior: &Volume,
    to_prior: &Transform,
    model: &Model,
) -> Result<ModelInput, AnalyzeError> {
    let grid = Grid::of(current).for_model(model.card.spacing_mm)?;
    let current_model = resample(
        current,
        &Transform::identity(),
        &grid,
        Interpolation::BSpline,
    )?;
    let prior_model = resample(prior, to_prior, &grid, Interpolation::BSpline)?;
    // The model was trained on skull-stripped visits: keep the current scan's brain only.
    let brain = brain_mask(&current_model, &head_mask(&current_model)?)?;
    let strip = |v: &Volume| {
        let mut data = v.data.clone();
        ndarray::Zip::from(&mut data).and(&brain).for_each(|d, &b| {
            if !b {
                *d = 0.0;
            }
        });
        data.mapv_inplace(|x| x.max(0.0));
        data
    };
    let (prior_data, current_data) = (strip(&prior_model), strip(&current_model));
    let mask = nonzero_mask(&[&prior_data, &current_data])?;
    let plain = zscore_in_mask();
    let difference =
        normalize(&current_data, &mask, &plain)? - normalize(&prior_data, &mask, &plain)?;
    let raw = [prior_data, current_data, difference];
    let (lo, hi) =
        bounding_box(&mask).unwrap_or(([0; 3], [mask.dim().0, mask.dim().1, mask.dim().2]));
    let crop = s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]];
    let mut channels = Array4::<f32>::zeros((
        model.card.input_channels.len(),
        hi[0] - lo[0],
        hi[1] - lo[1],
        hi[2] - lo[2],
    ));
    let mut raw_channels = Vec::with_capacity(model.card.input_channels.len());
    for (c, name) in model.card.input_channels.iter().enumerate() {
        let index = ["prior", "current", "current_minus_prior"]
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| crate::infer::InferError::InvalidModel {
                dir: model.dir.clone(),
                why: format!("input channel {name:?} is not one msnode can build"),
            })?;
        let normalised = normalize(&raw[index], &mask, &model.card.normalization)?;
        channels
            .index_axis_mut(Axis(0), c)
            .assign(&normalised.slice(crop));
        raw_channels.push((name.clone(), raw[index].clone()));
    }
    Ok(ModelInput {
        channels,
        origin: lo,
        grid,
        raw: raw_channels,
    })
}

/// Seconds since the last lap.
struct Stopwatch(Instant);

impl Stopwatch {
    fn lap(&mut self) -> f64 {
        let seconds = self.0.elapsed().as_secs_f64();
        self.0 = Instant::now();
        seconds
    }
}

/// The inference half of an analysis: the prior aligned to the current scan, the model run on
/// both, and the lesion probability. `msnode infer` stops here; `analyze` goes on to lesions and
/// outputs.
pub struct Prediction {
    pub registration: Registration,
    pub model: Model,
    pub provider: Provider,
    /// Lesion probability on the current scan's grid.
    pub probability: Volume,
    /// Lesion probability on the model grid, where the network ran.
    pub model_probability: Volume,
    /// The network's input channels on the model grid before normalisation, in the card's order.
    pub model_inputs: Vec<(String, Volume)>,
}

/// Align `prior` to `current`, build the model's input and run it. Fills the register,
/// preprocess and infer timings.
pub fn predict(
    current: &Volume,
    prior: &Volume,
    model_dir: &Path,
    runtime: &RuntimeSettings,
    mirror: bool,
    timings: &mut Timings,
) -> Result<Prediction, AnalyzeError> {
    let mut watch = Stopwatch(Instant::now());
    let registration = register(current, prior, &RegisterOptions::default())?;
    info!(
        correlation = registration.quality.brain_correlation,
        metric = registration.quality.metric,
        "prior aligned to the current scan"
    );
    timings.register = watch.lap();

    let model = Model::open(model_dir)?;
    let input = model_input(current, prior, &registration.transform, &model)?;
    timings.preprocess = watch.lap();

    let mut predictor = Predictor::new(model.clone(), runtime)?;
    let probabilities = predictor.predict(input.channels.view(), mirror, 2)?;
    timings.infer = watch.lap();

    // Lesion probability back on the model grid, then on the current FLAIR grid.
    let [nx, ny, nz] = input.grid.dims;
    let mut on_model = Array3::<f32>::zeros((nz, ny, nx));
    let o = input.origin;
    let (_, cz, cy, cx) = probabilities.dim();
    on_model
        .slice_mut(s![o[0]..o[0] + cz, o[1]..o[1] + cy, o[2]..o[2] + cx])
        .assign(&probabilities.index_axis(Axis(0), 1));
    let on_model_grid = |data: Array3<f32>| Volume {
        data,
        affine: input.grid.affine,
        slices: Vec::new(),
    };
    let model_probability = on_model_grid(on_model);
    let probability = resample(
        &model_probability,
        &Transform::identity(),
        &Grid::of(current),
        Interpolation::Linear,
    )?;
    Ok(Prediction {
        registration,
        provider: predictor.provider,
        model,
        probability,
        model_probability,
        model_inputs: input
            .raw
            .into_iter()
            .map(|(name, data)| (name, on_model_grid(data)))
            .collect(),
    })
}

/// Load both visits and run [`predict`] on them; fills the load timing too.
fn load_and_predict(
    pair: &PairRequest,
    timings: &mut Timings,
) -> Result<(Input, Input, Prediction), AnalyzeError> {
    let mut watch = Stopwatch(Instant::now());
    let current = load(&pair.current, &pair.data_dir, "current scan")?;
    let prior = load(&pair.prior, &pair.data_dir, "prior scan")?;
    timings.load = watch.lap();
    let prediction = predict(
        &current.volume,
        &prior.volume,
        &pair.model_dir,
        &pair.runtime,
        pair.mirror,
        timings,
    )?;
    Ok((current, prior, prediction))
}

/// Align, run the model and write the lesion probability (and on request the mask and the
/// model-grid inputs): the inference half of [`analyze`], for inspection and parity checks.
pub fn infer(request: &InferRequest) -> Result<InferSummary, AnalyzeError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let (_, _, prediction) = load_and_predict(&request.pair, &mut timings)?;
    let mut watch = Stopwatch(Instant::now());
    let threshold = request
        .threshold
        .unwrap_or(prediction.model.card.default_threshold);
    let mut outputs = Vec::new();
    let mut save = |volume: &Volume, path: &Path| -> Result<(), AnalyzeError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
        }
        write_nifti(volume, path).map_err(|e| write_error(path, e))?;
        outputs.push(path.to_owned());
        Ok(())
    };
    save(&prediction.probability, &request.probability_out)?;
    let mask = prediction
        .probability
        .data
        .mapv(|p| if p >= threshold { 1.0f32 } else { 0.0 });
    let lesion_voxels = mask.iter().filter(|v| **v > 0.0).count();
    if let Some(path) = &request.mask_out {
        save(
            &Volume {
                data: mask,
                affine: prediction.probability.affine,
                slices: Vec::new(),
            },
            path,
        )?;
    }
    if let Some(dir) = &request.inputs_out {
        for (name, channel) in &prediction.model_inputs {
            save(channel, &dir.join(format!("{name}.nii.gz")))?;
        }
        save(
            &prediction.model_probability,
            &dir.join("probability_model_grid.nii.gz"),
        )?;
    }
    timings.outputs = watch.lap();
    timings.total = started.elapsed().as_secs_f64();
    Ok(InferSummary {
        model: prediction.model.card.name.clone(),
        model_version: prediction.model.card.version.clone(),
        execution_provider: prediction.provider.to_string(),
        threshold,
        mirroring: request.pair.mirror,
        registration_brain_correlation: prediction.registration.quality.brain_correlation,
        lesion_voxels,
        lesion_volume_mm3: lesion_voxels as f64
            * crate::lesions::voxel_volume(&prediction.probability.affine),
        outputs,
        timings,
    })
}

/// Run the analysis and write every output into `request.out_dir`.
pub fn analyze(request: &AnalyzeRequest) -> Result<AnalysisSummary, AnalyzeError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    std::fs::create_dir_all(&request.out_dir).map_err(|e| write_error(&request.out_dir, e))?;
    let (
        current,
        prior,
        Prediction {
            registration,
            model,
            provider,
            probability,
            ..
        },
    ) = load_and_predict(&request.pair, &mut timings)?;
    let mut watch = Stopwatch(Instant::now());
    let current_grid = Grid::of(&current.volume);
    // The prior on the current grid, z-scored inside the brain, decides new versus enlarging.
    let prior_current = resample(
        &prior.volume,
        &registration.transform,
        &current_grid,
        Interpolation::Linear,
    )?;
    let brain = brain_mask(&current.volume, &head_mask(&current.volume)?)?;
    let prior_z = normalize(&prior_current.data, &brain, &zscore_in_mask())?;
    let threshold = request.threshold.unwrap_or(model.card.default_threshold);
    let min_volume = request
        .min_lesion_volume_mm3
        .unwrap_or(f64::from(model.card.min_lesion_volume_mm3));
    let lesions = find_lesions(
        probability.data.view(),
        &current.volume.affine,
        Some(prior_z.view()),
        threshold,
        min_volume,
    );
    timings.lesions = watch.lap();

    let out = &request.out_dir;
    let mut outputs = Vec::new();
    let probability_path = out.join("probability.nii.gz");
    write_nifti(
        &Volume {
            slices: Vec::new(),
            ..probability.clone()
        },
        &probability_path,
    )
    .map_err(|e| write_error(&probability_path, e))?;
    outputs.push(probability_path);
    let labels_path = out.join("lesions.nii.gz");
    write_nifti(
        &Volume {
            data: lesions.labels.mapv(|l| l as f32),
            affine: current.volume.affine,
            slices: Vec::new(),
        },
        &labels_path,
    )
    .map_err(|e| write_error(&labels_path, e))?;
    outputs.push(labels_path);

    let summary = lesions.summary();
    let weak = registration.quality.brain_correlation < WEAK_PAIRING_CORRELATION;
    let caption = format!(
        "{} NEW, {} ENLARGING, {:.0} MM3{}",
        summary.new,
        summary.enlarging,
        summary.total_volume_mm3,
        if weak { " - WEAK PAIRING" } else { "" }
    );
    let new_mask = lesions
        .labels
        .mapv(|l| l > 0 && lesions.lesions[l as usize - 1].change == Change::New);
    let enlarging_mask = lesions
        .labels
        .mapv(|l| l > 0 && lesions.lesions[l as usize - 1].change == Change::Enlarging);
    let images = render(
        &current.volume,
        new_mask.view(),
        enlarging_mask.view(),
        &caption,
    );
    let preview_dir = out.join("preview");
    std::fs::create_dir_all(&preview_dir).map_err(|e| write_error(&preview_dir, e))?;
    let mut preview_slices: Vec<usize> = (0..images.len())
        .filter(|&k| {
            new_mask
                .index_axis(Axis(0), k)
                .iter()
                .chain(enlarging_mask.index_axis(Axis(0), k).iter())
                .any(|v| *v)
        })
        .collect();
    if preview_slices.is_empty() {
        preview_slices.push(images.len() / 2);
    }
    for k in preview_slices {
        let path = preview_dir.join(format!("slice{:03}.png", k + 1));
        write_png(&path, &images[k])?;
        outputs.push(path);
    }

    let algorithm = Algorithm {
        name: model.card.name.clone(),
        version: model.card.version.clone(),
    };
    if let Some(first) = current.files.first() {
        let source = SourceSeries::read(first)?;
        let seg_path = out.join("seg.dcm");
        let seg = write_seg(
            &seg_path,
            &source,
            &current.volume,
            &[
                Segment {
                    label: "New lesion".into(),
                    mask: new_mask.view(),
                    cielab: CIELAB_RED,
                },
                Segment {
                    label: "Enlarging lesion".into(),
                    mask: enlarging_mask.view(),
                    cielab: CIELAB_YELLOW,
                },
            ],
            &algorithm,
            9901,
        )?;
        outputs.push(seg_path);
        let mut evidence = vec![Evidence {
            study_instance_uid: source.study_instance_uid.clone(),
            series_instance_uid: source.series_instance_uid.clone(),
            sop_class_uid: source.sop_class_uid.clone(),
            sop_instance_uids: current
                .volume
                .slices
                .iter()
                .map(|s| s.sop_instance_uid.clone())
                .collect(),
        }];
        if let Some(prior_first) = prior.files.first() {
            let prior_source = SourceSeries::read(prior_first)?;
            evidence.push(Evidence {
                study_instance_uid: prior_source.study_instance_uid.clone(),
                series_instance_uid: prior_source.series_instance_uid.clone(),
                sop_class_uid: prior_source.sop_class_uid.clone(),
                sop_instance_uids: prior
                    .volume
                    .slices
                    .iter()
                    .map(|s| s.sop_instance_uid.clone())
                    .collect(),
            });
        }
        let mut notes = vec![
            format!(
                "Registration of the prior: brain correlation {:.3}, NCC {:.3}{}",
                registration.quality.brain_correlation,
                registration.quality.metric,
                if weak {
                    " (weak pairing: review the alignment)"
                } else {
                    ""
                }
            ),
            format!(
                "Model {} {} on {}",
                model.card.name, model.card.version, provider
            ),
        ];
        notes.push(format!(
            "Threshold {threshold}, minimum lesion volume {} mm3",
            min_volume
        ));
        let sr_path = out.join("sr.dcm");
        let content = ReportContent {
            lesions: &lesions.lesions,
            seg: &seg,
            new_segment: 1,
            enlarging_segment: 2,
            notes,
        };
        write_report(&sr_path, &source, &content, &evidence, &algorithm, 9902)?;
        outputs.push(sr_path);
        let (overlay_files, _) = write_overlay_series(
            &out.join("overlay"),
            &source,
            &current.volume,
            &images,
            9903,
        )?;
        outputs.extend(overlay_files);
    }
    timings.outputs = watch.lap();
    timings.total = started.elapsed().as_secs_f64();

    let analysis = AnalysisSummary {
        model: model.card.name.clone(),
        model_version: model.card.version.clone(),
        execution_provider: provider.to_string(),
        threshold,
        min_lesion_volume_mm3: min_volume,
        mirroring: request.pair.mirror,
        registration: RegistrationSummary {
            quality: registration.quality,
            transform: registration.transform.affine,
            weak,
        },
        totals: summary,
        lesions: lesions.lesions,
        outputs,
        timings,
    };
    let summary_path = out.join("summary.json");
    let json =
        serde_json::to_string_pretty(&analysis).map_err(|e| write_error(&summary_path, e))?;
    std::fs::write(&summary_path, json).map_err(|e| write_error(&summary_path, e))?;
    Ok(analysis)
}
