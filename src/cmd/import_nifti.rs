//! `msnode import-nifti IN OUTDIR`: a NIfTI volume as a new classic MR Image Storage series.

use std::path::PathBuf;
use std::process::ExitCode;

use msnode::volume::{ImportOptions, import_nifti};

#[derive(clap::Args)]
pub struct Args {
    input: PathBuf,
    outdir: PathBuf,
    #[arg(long, default_value = "NIFTI")]
    patient_id: String,
    #[arg(long, default_value = "NIFTI^IMPORT")]
    patient_name: String,
    /// Add the series to this study instead of a new one.
    #[arg(long)]
    study_uid: Option<String>,
    /// YYYYMMDD (default: today).
    #[arg(long)]
    study_date: Option<String>,
    #[arg(long, default_value = "FLAIR (imported from NIfTI)")]
    series_description: String,
    #[arg(long, default_value_t = 1)]
    series_number: i32,
    /// Mark the series ORIGINAL (as a scanner's) instead of DERIVED, so that the node's workflow
    /// analyses it: for demonstrations and tests.
    #[arg(long)]
    as_acquired: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        patient_id: args.patient_id,
        patient_name: args.patient_name,
        study_instance_uid: args.study_uid,
        study_date: args.study_date,
        series_description: args.series_description,
        series_number: args.series_number,
        as_acquired: args.as_acquired,
    };
    let report = import_nifti(&args.input, &args.outdir, &options)?;
    println!(
        "{}: {} instance(s), study {}, series {}",
        args.outdir.display(),
        report.files.len(),
        report.study_instance_uid,
        report.series_instance_uid
    );
    if let Some((slope, intercept)) = report.rescale {
        println!(
            "voxels are not 16-bit integers: stored quantised, rescale slope {slope} intercept {intercept}"
        );
    }
    Ok(ExitCode::SUCCESS)
}
