//! What an analysis writes: the objects for PACS (DICOM-SEG, TID 1500 report, overlay series),
//! kept apart from the files that stay on the node (NIfTI maps, PNG previews, `summary.json`).

use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3, Axis};

use super::{AnalysisSummary, InferOutputs, Prediction, RegistrationSummary, Scan};
use crate::dicom::uid::Uids;
use crate::infer::Provider;
use crate::lesions::{AnalysisKind, LesionMap, LesionSummary};
use crate::outputs::overlay::{RgbImage, render, write_overlay_series, write_png};
use crate::outputs::seg::{SegSeries, Segment, write_seg};
use crate::outputs::sr::{Evidence, ReportContent, write_report};
use crate::outputs::{Algorithm, LesionClass, OutputError, SourceSeries, lesion_classes};
use crate::volume::{Volume, VolumeError, write_nifti};

/// Series numbers of the result series: far above a scanner's own.
pub const SEG_SERIES_NUMBER: i32 = 9901;
pub const REPORT_SERIES_NUMBER: i32 = 9902;
pub const OVERLAY_SERIES_NUMBER: i32 = 9903;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Nifti {
        path: PathBuf,
        #[source]
        source: VolumeError,
    },
    #[error("cannot write {path}")]
    Summary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the summary")]
    Json(#[source] serde_json::Error),
    // The output error names the object it failed on.
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// The visits an analysis looked at: the current one, and the prior it was compared with.
pub struct Visits<'a> {
    pub current: &'a Scan,
    pub prior: Option<&'a Scan>,
}

/// How the analysis ran: what every report and caption says about it.
pub struct Run<'a> {
    pub model_name: &'a str,
    pub model_version: &'a str,
    pub provider: Provider,
    pub threshold: f32,
    pub min_lesion_volume_mm3: f64,
    /// How the prior was aligned; None for a lesion-load analysis.
    pub registration: Option<&'a RegistrationSummary>,
}

impl Run<'_> {
    fn kind(&self) -> AnalysisKind {
        match self.registration {
            Some(_) => AnalysisKind::FollowUp,
            None => AnalysisKind::LesionLoad,
        }
    }
}

/// The files written, by where they go.
#[derive(Debug, Default)]
pub struct Written {
    pub for_pacs: Vec<PathBuf>,
    pub local: Vec<PathBuf>,
}

fn create_dir(path: &Path) -> Result<(), ResultsError> {
    std::fs::create_dir_all(path).map_err(|source| ResultsError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

fn save_nifti(volume: &Volume, path: &Path) -> Result<(), ResultsError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    write_nifti(volume, path).map_err(|source| ResultsError::Nifti {
        path: path.to_owned(),
        source,
    })
}

/// The mask of each lesion class of the analysis (on the current grid), in SEG segment order.
struct ClassMasks {
    classes: &'static [LesionClass],
    masks: Vec<Array3<bool>>,
}

/// The class masks and the overlay images burned from them, one per current slice.
struct Rendered {
    masks: ClassMasks,
    images: Vec<RgbImage>,
}

impl ClassMasks {
    fn of(kind: AnalysisKind, lesions: &LesionMap) -> ClassMasks {
        let classes = lesion_classes(kind);
        let masks = classes
            .iter()
            .map(|class| {
                lesions
                    .labels
                    .mapv(|l| l > 0 && lesions.lesions[l as usize - 1].change == class.change)
            })
            .collect();
        ClassMasks { classes, masks }
    }

    /// Slices that hold a lesion of any class.
    fn slices_with_lesions(&self) -> Vec<usize> {
        let slices = self.masks.first().map_or(0, |m| m.dim().0);
        (0..slices)
            .filter(|&k| {
                self.masks
                    .iter()
                    .any(|m| m.index_axis(Axis(0), k).iter().any(|v| *v))
            })
            .collect()
    }

    fn outlines(&self) -> Vec<(ArrayView3<'_, bool>, [u8; 3])> {
        self.classes
            .iter()
            .zip(&self.masks)
            .map(|(class, mask)| (mask.view(), class.rgb))
            .collect()
    }

    fn segments(&self) -> Vec<Segment<'_>> {
        self.classes
            .iter()
            .zip(&self.masks)
            .map(|(class, mask)| Segment {
                label: class.label.into(),
                mask: mask.view(),
                cielab: class.cielab,
            })
            .collect()
    }
}

/// The caption under every overlay image.
fn caption(run: &Run<'_>, summary: &LesionSummary) -> String {
    match run.registration {
        Some(registration) => format!(
            "{} NEW, {} ENLARGING, {:.0} MM3{}",
            summary.new,
            summary.enlarging,
            summary.total_volume_mm3,
            if registration.weak {
                " - WEAK PAIRING"
            } else {
                ""
            }
        ),
        None => format!(
            "{} LESIONS, {:.0} MM3 - NO PRIOR",
            summary.count, summary.total_volume_mm3
        ),
    }
}

/// Everything an analysis writes into `out_dir` but `summary.json`.
pub fn write_all(
    out_dir: &Path,
    visits: &Visits<'_>,
    probability: &Volume,
    lesions: &LesionMap,
    run: &Run<'_>,
    uids: &mut Uids,
) -> Result<Written, ResultsError> {
    let current = visits.current;
    create_dir(out_dir)?;
    let mut written = Written::default();
    let probability_path = out_dir.join("probability.nii.gz");
    save_nifti(probability, &probability_path)?;
    written.local.push(probability_path);
    let labels_path = out_dir.join("lesions.nii.gz");
    let labels = Volume {
        data: lesions.labels.mapv(|l| l as f32),
        affine: current.volume.affine,
        slices: Vec::new(),
    };
    save_nifti(&labels, &labels_path)?;
    written.local.push(labels_path);

    let masks = ClassMasks::of(run.kind(), lesions);
    let images = render(
        &current.volume,
        &masks.outlines(),
        &caption(run, &lesions.summary()),
    );
    let rendered = Rendered { masks, images };
    written
        .local
        .extend(write_previews(&out_dir.join("preview"), &rendered)?);
    if let Some(first) = current.files.first() {
        let source = SourceSeries::read(first)?;
        written.for_pacs = write_for_pacs(out_dir, &source, visits, &rendered, lesions, run, uids)?;
    }
    Ok(written)
}

/// PNG previews of the slices with lesions, or of the middle slice when there are none.
fn write_previews(dir: &Path, rendered: &Rendered) -> Result<Vec<PathBuf>, ResultsError> {
    create_dir(dir)?;
    let images = &rendered.images;
    let mut slices = rendered.masks.slices_with_lesions();
    if slices.is_empty() {
        slices.push(images.len() / 2);
    }
    let mut files = Vec::with_capacity(slices.len());
    for k in slices {
        let path = dir.join(format!("slice{:03}.png", k + 1));
        write_png(&path, &images[k])?;
        files.push(path);
    }
    Ok(files)
}

/// The SEG, the report and the overlay series, in the current scan's study.
fn write_for_pacs(
    out_dir: &Path,
    source: &SourceSeries,
    visits: &Visits<'_>,
    rendered: &Rendered,
    lesions: &LesionMap,
    run: &Run<'_>,
    uids: &mut Uids,
) -> Result<Vec<PathBuf>, ResultsError> {
    let (current, prior) = (visits.current, visits.prior);
    let algorithm = Algorithm {
        name: run.model_name.to_string(),
        version: run.model_version.to_string(),
    };
    let seg_path = out_dir.join("seg.dcm");
    let seg = write_seg(
        &seg_path,
        source,
        &current.volume,
        &rendered.masks.segments(),
        &algorithm,
        SegSeries {
            number: SEG_SERIES_NUMBER,
            kind: run.kind(),
        },
        uids,
    )?;
    let sr_path = out_dir.join("sr.dcm");
    let evidence = evidence(source, current, prior)?;
    let content = ReportContent {
        kind: run.kind(),
        lesions: &lesions.lesions,
        seg: &seg,
        notes: report_notes(run),
    };
    write_report(
        &sr_path,
        source,
        &content,
        &evidence,
        &algorithm,
        REPORT_SERIES_NUMBER,
        uids,
    )?;
    let (overlay, _) = write_overlay_series(
        &out_dir.join("overlay"),
        source,
        &current.volume,
        &rendered.images,
        OVERLAY_SERIES_NUMBER,
        uids,
    )?;
    let mut files = vec![seg_path, sr_path];
    files.extend(overlay);
    Ok(files)
}

/// The series the report is based on: the current one, and the prior when it was DICOM.
fn evidence(
    source: &SourceSeries,
    current: &Scan,
    prior: Option<&Scan>,
) -> Result<Vec<Evidence>, ResultsError> {
    let of = |source: &SourceSeries, scan: &Scan| Evidence {
        study_instance_uid: source.study_instance_uid.clone(),
        series_instance_uid: source.series_instance_uid.clone(),
        sop_class_uid: source.sop_class_uid.clone(),
        sop_instance_uids: scan
            .volume
            .slices
            .iter()
            .map(|s| s.sop_instance_uid.clone())
            .collect(),
    };
    let mut evidence = vec![of(source, current)];
    if let Some((prior, prior_first)) = prior.and_then(|p| Some((p, p.files.first()?))) {
        evidence.push(of(&SourceSeries::read(prior_first)?, prior));
    }
    Ok(evidence)
}

/// What the report says about how it was made.
fn report_notes(run: &Run<'_>) -> Vec<String> {
    let comparison = match run.registration {
        Some(registration) => format!(
            "Registration of the prior: brain correlation {:.3}, NCC {:.3}{}",
            registration.quality.brain_correlation,
            registration.quality.metric,
            if registration.weak {
                " (weak pairing: review the alignment)"
            } else {
                ""
            }
        ),
        None => "No prior FLAIR was available: every lesion of this visit is reported, not change"
            .to_string(),
    };
    vec![
        comparison,
        format!(
            "Model {} {} on {}",
            run.model_name, run.model_version, run.provider
        ),
        format!(
            "Threshold {}, minimum lesion volume {} mm3",
            run.threshold, run.min_lesion_volume_mm3
        ),
    ]
}

/// Write `summary.json` into `out_dir`, listing itself among the local files.
pub fn write_summary(out_dir: &Path, summary: &mut AnalysisSummary) -> Result<(), ResultsError> {
    let path = out_dir.join("summary.json");
    summary.local.push(path.clone());
    let json = serde_json::to_string_pretty(summary).map_err(ResultsError::Json)?;
    std::fs::write(&path, json).map_err(|source| ResultsError::Summary { path, source })
}

/// What `msnode infer` wrote.
pub struct WrittenInference {
    pub files: Vec<PathBuf>,
    /// Voxels at or above the threshold on the current grid.
    pub lesion_voxels: usize,
}

/// The probability, and on request the thresholded mask and the model-grid inputs.
pub fn write_inference(
    prediction: &Prediction,
    threshold: f32,
    outputs: &InferOutputs,
) -> Result<WrittenInference, ResultsError> {
    let mut files = Vec::new();
    let mut save = |volume: &Volume, path: &Path| -> Result<(), ResultsError> {
        save_nifti(volume, path)?;
        files.push(path.to_owned());
        Ok(())
    };
    let probability = &prediction.probability;
    save(probability, &outputs.probability)?;
    let mask = probability
        .data
        .mapv(|p| if p >= threshold { 1.0f32 } else { 0.0 });
    let lesion_voxels = mask.iter().filter(|v| **v > 0.0).count();
    if let Some(path) = &outputs.mask {
        let mask = Volume {
            data: mask,
            affine: probability.affine,
            slices: Vec::new(),
        };
        save(&mask, path)?;
    }
    if let Some(dir) = &outputs.inputs {
        for (channel, volume) in &prediction.model_inputs {
            save(volume, &dir.join(format!("{channel}.nii.gz")))?;
        }
        save(
            &prediction.model_probability,
            &dir.join("probability_model_grid.nii.gz"),
        )?;
    }
    Ok(WrittenInference {
        files,
        lesion_voxels,
    })
}
