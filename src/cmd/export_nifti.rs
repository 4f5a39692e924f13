//! `msnode export-nifti SERIES OUT`: a series as NIfTI (RAS, as dcm2niix writes it).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use msnode::analyze::ScanSource;
use msnode::settings::Settings;
use msnode::volume::{LoadOptions, load_series, write_nifti};

#[derive(clap::Args)]
pub struct Args {
    /// Series folder or file, or a stored Series Instance UID.
    series: String,
    out: PathBuf,
    /// Which volume (0-based) of a series with repeated positions, such as EPI.
    #[arg(long)]
    volume: Option<usize>,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let source = ScanSource::resolve(&args.series, &settings.data_dir, &settings.database).await?;
    let ScanSource::Series(files) = source else {
        bail!("{} is already NIfTI", args.series);
    };
    let options = LoadOptions {
        temporal_index: args.volume,
    };
    let loaded = load_series(&files, &options)?;
    write_nifti(&loaded, &args.out)?;
    let [x, y, z] = loaded.dims();
    let [sx, sy, sz] = loaded.spacing();
    println!(
        "{}: {x} x {y} x {z} voxels of {sx:.3} x {sy:.3} x {sz:.3} mm from {} file(s)",
        args.out.display(),
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}
