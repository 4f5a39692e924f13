//! `msnode register`: align a prior scan to the current one; writes the prior resampled onto the
//! current grid (cubic B-spline) and the transform as an ITK file (current -> prior points, LPS).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use msnode::analyze::ScanSource;
use msnode::register::itk::write_itk_transform;
use msnode::register::{Grid, Interpolation, Model, RegisterOptions, register, resample};
use msnode::settings::Settings;

#[derive(clap::Args)]
pub struct Args {
    /// Current scan: series folder or file, stored Series Instance UID, or NIfTI.
    #[arg(long)]
    fixed: String,
    /// Prior scan, as --fixed.
    #[arg(long)]
    moving: String,
    /// Aligned prior (NIfTI).
    #[arg(long)]
    out: PathBuf,
    /// ITK transform file (default: OUT with the extension .tfm).
    #[arg(long)]
    transform: Option<PathBuf>,
    /// 12 degrees of freedom after the rigid alignment.
    #[arg(long)]
    affine: bool,
}

/// OUT with `.nii` or `.nii.gz` replaced by `.tfm`.
fn transform_beside(out: &Path) -> PathBuf {
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
    out.with_file_name(format!("{stem}.tfm"))
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (data_dir, database) = (&settings.data_dir, &settings.database);
    let fixed = ScanSource::resolve(&args.fixed, data_dir, database).await?;
    let moving = ScanSource::resolve(&args.moving, data_dir, database).await?;
    let options = RegisterOptions {
        model: if args.affine {
            Model::Affine
        } else {
            Model::Rigid
        },
        ..Default::default()
    };
    let out = args.out.clone();
    let transform_path = args.transform.unwrap_or_else(|| transform_beside(&out));
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let current = fixed.load()?.volume;
        let prior = moving.load()?.volume;
        let result = register(&current, &prior, &options)?;
        let aligned = resample(
            &prior,
            &result.transform,
            &Grid::of(&current),
            Interpolation::BSpline,
        )?;
        msnode::volume::write_nifti(&aligned, &out)?;
        Ok(result)
    })
    .await??;
    write_itk_transform(&result.transform, &transform_path)?;
    let q = result.quality;
    println!(
        "{}, {}: NCC {:.4}, brain correlation {:.4}, overlap {:.3}, start {:?}, {:.2} s",
        args.out.display(),
        transform_path.display(),
        q.metric,
        q.brain_correlation,
        q.overlap,
        result.start,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
