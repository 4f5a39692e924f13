//! The `msnode` command line: one enum of commands, each run by its file in `cmd/`.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use msnode::config::Config;
use msnode::settings::Settings;

/// `msnode --version`: what a site reports when it asks for help.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("MSNODE_GIT_COMMIT"),
    "\nONNX Runtime: built for the 1.31 API (the library is loaded at run time from [model] onnxruntime_library or ORT_DYLIB_PATH)",
    "\ndefault model: ",
    env!("MSNODE_DEFAULT_MODEL"),
    " (models/realbg)",
    "\nsingle-visit model: ",
    env!("MSNODE_SINGLE_VISIT_MODEL"),
    " (models/single-visit)",
);

#[derive(Parser)]
#[command(
    name = "msnode",
    version,
    long_version = LONG_VERSION,
    about = "Clinical node for MS follow-up MRI"
)]
struct Cli {
    /// Configuration file (TOML). Defaults are used when none is given.
    #[arg(long, short, global = true, env = "MSNODE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the DICOM listener (C-ECHO, C-STORE) until SIGINT or SIGTERM.
    Serve(cmd::serve::Args),
    /// C-ECHO a peer: a configured peer's AE title, or AE@host:port.
    Echo(cmd::echo::Args),
    /// C-STORE DICOM files (folders are walked) to a peer, each in its own transfer syntax.
    Send(cmd::send::Args),
    /// What the node holds and its recent associations.
    Status(cmd::status::Args),
    /// The audit trail: every association (who sent what) and delivery attempt (what went where).
    Audit(cmd::audit::Args),
    /// Load a series (folder, file or stored Series Instance UID) and write it as NIfTI (RAS, as dcm2niix).
    ExportNifti(cmd::export_nifti::Args),
    /// Write a NIfTI volume as a new classic MR Image Storage series.
    ImportNifti(cmd::import_nifti::Args),
    /// Align a prior scan to the current one: writes the prior resampled onto the current grid
    /// (cubic B-spline) and the transform as an ITK file (current -> prior points, LPS).
    Register(cmd::register::Args),
    /// The whole analysis of a follow-up: DICOM-SEG, TID 1500 report, overlay series, PNG previews
    /// and summary.json in OUT, from the current and prior FLAIR (series folders, stored Series
    /// Instance UIDs, or NIfTI files).
    Analyze(cmd::analyze::Args),
    /// The inference half of `analyze`, for inspection: align the prior, run the model, write the
    /// lesion probability on the current grid (NIfTI) and print a JSON summary.
    Infer(cmd::infer::Args),
    /// The workflow's jobs, newest first.
    Jobs(cmd::jobs::ListArgs),
    /// One job: inputs, the prior and why, events, lesion counts, timings and deliveries.
    Job(cmd::jobs::JobArgs),
    /// Run a failed, no_prior or done job again.
    Retry(cmd::jobs::JobArgs),
    /// A new job for a stored series (new result UIDs, superseding earlier results).
    Reprocess(cmd::jobs::ReprocessArgs),
    /// Which FLAIR selection rule takes or rejects a stored series, and why.
    Explain(cmd::explain::Args),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: cmd::config::Command,
    },
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `config check` judges its own argument, not the --config the other commands run with.
    let config = match (&cli.command, &cli.config) {
        (Command::Config { .. }, _) | (_, None) => Config::default(),
        (_, Some(path)) => Config::load(path)?,
    };
    msnode::logging::init(&config.logging);
    let settings = Settings::from_config(&config);
    match cli.command {
        Command::Serve(args) => cmd::serve::run(args, config, cli.config).await,
        Command::Echo(args) => cmd::echo::run(args, &settings).await,
        Command::Send(args) => cmd::send::run(args, &settings).await,
        Command::Status(args) => cmd::status::run(args, &settings).await,
        Command::Audit(args) => cmd::audit::run(args, &settings).await,
        Command::ExportNifti(args) => cmd::export_nifti::run(args, &settings).await,
        Command::ImportNifti(args) => cmd::import_nifti::run(args),
        Command::Register(args) => cmd::register::run(args, &settings).await,
        Command::Analyze(args) => cmd::analyze::run(args, &settings).await,
        Command::Infer(args) => cmd::infer::run(args, &settings).await,
        Command::Jobs(args) => cmd::jobs::list(args, &settings).await,
        Command::Job(args) => cmd::jobs::show(args, &settings).await,
        Command::Retry(args) => cmd::jobs::retry(args, &settings).await,
        Command::Reprocess(args) => cmd::jobs::reprocess(args, &settings).await,
        Command::Explain(args) => cmd::explain::run(args, &settings).await,
        Command::Config { command } => Ok(cmd::config::run(command)),
    }
}

/// The error and its causes on one line. Library errors never repeat their cause's text, so
/// each cause is printed once.
fn render(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("msnode: {}", render(&e));
            ExitCode::FAILURE
        }
    }
}
