//! `msnode infer`: the inference half of `analyze`, for inspection: align the prior, run the
//! model, write the lesion probability on the current grid (NIfTI) and print a JSON summary.

use std::path::PathBuf;
use std::process::ExitCode;

use msnode::analyze::InferOutputs;
use msnode::settings::Settings;

use super::analyze::PairArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pair: PairArgs,
    /// Lesion probability (NIfTI).
    #[arg(long)]
    out: PathBuf,
    /// The probability thresholded (NIfTI, 0 or 1).
    #[arg(long)]
    mask_out: Option<PathBuf>,
    /// A folder for the network's input channels on the model grid, before normalisation, and
    /// the probability on that grid (NIfTI): what nnU-Net's own predictor can be given.
    #[arg(long)]
    inputs_out: Option<PathBuf>,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let outputs = InferOutputs {
        probability: args.out,
        mask: args.mask_out,
        inputs: args.inputs_out,
    };
    let summary = args
        .pair
        .resolve(settings)
        .await?
        .run(move |analyzer, current, prior| analyzer.infer(current, prior, &outputs))
        .await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}
