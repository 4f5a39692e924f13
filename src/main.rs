//! The `msnode` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use msnode::config::Config;
use msnode::net::scu::{self, Remote};

#[derive(Parser)]
#[command(name = "msnode", version, about = "Clinical node for MS follow-up MRI")]
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
    Serve,
    /// C-ECHO a peer: a configured peer's AE title, or AE@host:port.
    Echo { peer: String },
    /// C-STORE DICOM files (folders are walked) to a peer, each in its own transfer syntax.
    Send {
        peer: String,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// What the node holds and its recent associations.
    Status {
        /// How many recent associations to list.
        #[arg(long, default_value_t = 10)]
        associations: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Load a series (folder, file or stored Series Instance UID) and write it as NIfTI (RAS, as dcm2niix).
    ExportNifti {
        series: String,
        out: PathBuf,
        /// Which volume (0-based) of a series with repeated positions, such as EPI.
        #[arg(long)]
        volume: Option<usize>,
    },
    /// Write a NIfTI volume as a new classic MR Image Storage series.
    ImportNifti {
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
    },
    /// Align a prior scan to the current one: writes the prior resampled onto the current grid
    /// (cubic B-spline) and the transform as an ITK file (current -> prior points, LPS).
    Register {
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
    },
    /// The whole analysis of a follow-up: DICOM-SEG, TID 1500 report, overlay series, PNG previews
    /// and summary.json in OUT, from the current and prior FLAIR (series folders, stored Series
    /// Instance UIDs, or NIfTI files).
    Analyze {
        #[command(flatten)]
        pair: PairArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// The inference half of `analyze`, for inspection: align the prior, run the model, write the
    /// lesion probability on the current grid (NIfTI) and print a JSON summary.
    Infer {
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
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// The two visits and the model settings `analyze` and `infer` share.
#[derive(clap::Args)]
struct PairArgs {
    /// Current scan: series folder or file, stored Series Instance UID, or NIfTI.
    #[arg(long)]
    current: String,
    /// Prior scan, as --current.
    #[arg(long)]
    prior: String,
    /// Lesion probability threshold (default: the configuration, else the model card).
    #[arg(long)]
    threshold: Option<f32>,
    /// Test-time mirroring over the model card's axes (8 passes for 3 axes).
    #[arg(long)]
    mirror: bool,
}

impl PairArgs {
    fn request(self, config: &Config) -> msnode::analyze::PairRequest {
        msnode::analyze::PairRequest {
            current: self.current,
            prior: self.prior,
            data_dir: config.node.data_dir.clone(),
            model_dir: config.model.dir.clone(),
            runtime: msnode::infer::RuntimeSettings {
                library: config.model.onnxruntime_library.clone(),
                provider: config.model.execution_provider,
                intra_threads: config.model.intra_threads,
            },
            mirror: self.mirror,
        }
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file and name every wrong key or value.
    Check { file: PathBuf },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

/// A peer named by AE title (from the configuration) or given as AE@host:port.
fn remote(config: &Config, peer: &str) -> anyhow::Result<Remote> {
    let (called_ae, address) = match config.peer(peer) {
        Some(p) => (p.ae_title.clone(), format!("{}:{}", p.host, p.port)),
        None => match peer.split_once('@') {
            Some((ae, address)) if address.contains(':') => (ae.to_string(), address.to_string()),
            _ => bail!("{peer:?} is neither a configured peer nor AE@host:port"),
        },
    };
    Ok(Remote {
        calling_ae: config.node.ae_title.clone(),
        called_ae,
        address,
        max_pdu: config.network.max_pdu,
        timeout: config.network.association_timeout,
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `config check` judges its own argument, not the --config the other commands run with.
    let config = match &cli.command {
        Command::Config { .. } => Config::default(),
        _ => load_config(cli.config.as_ref())?,
    };
    msnode::logging::init(&config.logging);
    match cli.command {
        Command::Serve => {
            msnode::node::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Echo { peer } => {
            let remote = remote(&config, &peer)?;
            let (elapsed, status) = scu::echo(&remote).await?;
            println!(
                "C-ECHO {} at {}: status {status:#06x} in {:.1} ms",
                remote.called_ae,
                remote.address,
                elapsed.as_secs_f64() * 1000.0
            );
            Ok(if status == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Send { peer, paths } => {
            let remote = remote(&config, &peer)?;
            let mut files = Vec::new();
            let mut failed = 0usize;
            for path in scu::collect_files(&paths) {
                match scu::inspect(&path) {
                    Ok(file) => files.push(file),
                    Err(e) => {
                        eprintln!("skipped: {e}");
                        failed += 1;
                    }
                }
            }
            if files.is_empty() {
                bail!("no DICOM files found under the given paths");
            }
            let started = std::time::Instant::now();
            let results = scu::send(&remote, &files).await?;
            let mut sent = 0usize;
            for result in &results {
                match &result.outcome {
                    Ok(0) => sent += 1,
                    Ok(status) => {
                        failed += 1;
                        eprintln!(
                            "{}: refused with status {status:#06x}",
                            result.path.display()
                        );
                    }
                    Err(reason) => {
                        failed += 1;
                        eprintln!("{}: not sent: {reason}", result.path.display());
                    }
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "sent {sent} of {} instance(s) to {} in {seconds:.2} s ({:.0} instances/s); {failed} failed",
                sent + failed,
                remote.called_ae,
                sent as f64 / seconds.max(1e-9)
            );
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { associations, json } => {
            let index = msnode::index::Index::open(&config.database_path())
                .await
                .with_context(
                    || "msnode status reads the index of the configured data directory",
                )?;
            let counts = index.counts().await?;
            let recent = index.recent_associations(associations).await?;
            if json {
                let value = serde_json::json!({
                    "patients": counts.patients,
                    "studies": counts.studies,
                    "series": counts.series,
                    "instances": counts.instances,
                    "bytes": counts.bytes,
                    "recent_associations": recent.iter().map(|a| serde_json::json!({
                        "id": a.id, "calling_ae": a.calling_ae, "called_ae": a.called_ae,
                        "peer_address": a.peer_address, "started_at": a.started_at, "ended_at": a.ended_at,
                        "instances_stored": a.instances_stored, "instances_refused": a.instances_refused,
                        "outcome": a.outcome,
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("database   {}", config.database_path().display());
                println!(
                    "patients {}  studies {}  series {}  instances {}  ({:.1} MiB)",
                    counts.patients,
                    counts.studies,
                    counts.series,
                    counts.instances,
                    counts.bytes as f64 / 1048576.0
                );
                println!("recent associations:");
                println!(
                    "{:>5}  {:<20}  {:<16}  {:<21}  {:>6}  {:>7}  outcome",
                    "id", "started", "calling AE", "peer", "stored", "refused"
                );
                for a in &recent {
                    println!(
                        "{:>5}  {:<20}  {:<16}  {:<21}  {:>6}  {:>7}  {}",
                        a.id,
                        a.started_at.get(..19).unwrap_or(&a.started_at),
                        a.calling_ae,
                        a.peer_address,
                        a.instances_stored,
                        a.instances_refused,
                        a.outcome
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportNifti {
            series,
            out,
            volume,
        } => {
            let files = msnode::volume::series_files(&series, &config.node.data_dir)?;
            let options = msnode::volume::LoadOptions {
                temporal_index: volume,
            };
            let loaded = msnode::volume::load_series(&files, &options)?;
            msnode::volume::write_nifti(&loaded, &out)?;
            let [x, y, z] = loaded.dims();
            let [sx, sy, sz] = loaded.spacing();
            println!(
                "{}: {x} x {y} x {z} voxels of {sx:.3} x {sy:.3} x {sz:.3} mm from {} file(s)",
                out.display(),
                files.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportNifti {
            input,
            outdir,
            patient_id,
            patient_name,
            study_uid,
            study_date,
            series_description,
            series_number,
        } => {
            let options = msnode::volume::ImportOptions {
                patient_id,
                patient_name,
                study_instance_uid: study_uid,
                study_date,
                series_description,
                series_number,
            };
            let report = msnode::volume::import_nifti(&input, &outdir, &options)?;
            println!(
                "{}: {} instance(s), study {}, series {}",
                outdir.display(),
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
        Command::Register {
            fixed,
            moving,
            out,
            transform,
            affine,
        } => {
            use msnode::register;
            let started = std::time::Instant::now();
            let current = register::load_image(&fixed, &config.node.data_dir)?;
            let prior = register::load_image(&moving, &config.node.data_dir)?;
            let options = register::RegisterOptions {
                model: if affine {
                    register::Model::Affine
                } else {
                    register::Model::Rigid
                },
                ..Default::default()
            };
            let result = register::register(&current, &prior, &options)?;
            let aligned = register::resample(
                &prior,
                &result.transform,
                &register::Grid::of(&current),
                register::Interpolation::BSpline,
            )?;
            msnode::volume::write_nifti(&aligned, &out)?;
            let transform_path = transform.unwrap_or_else(|| {
                let name = out.file_name().unwrap_or_default().to_string_lossy();
                let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
                out.with_file_name(format!("{stem}.tfm"))
            });
            register::itk::write_itk_transform(&result.transform, &transform_path)?;
            let q = result.quality;
            println!(
                "{}, {}: NCC {:.4}, brain correlation {:.4}, overlap {:.3}, start {:?}, {:.2} s",
                out.display(),
                transform_path.display(),
                q.metric,
                q.brain_correlation,
                q.overlap,
                result.start,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Analyze { pair, out } => {
            let request = msnode::analyze::AnalyzeRequest {
                out_dir: out,
                threshold: pair.threshold.or(config.analysis.probability_threshold),
                min_lesion_volume_mm3: config.analysis.min_lesion_volume_mm3.map(f64::from),
                pair: pair.request(&config),
            };
            let summary =
                tokio::task::spawn_blocking(move || msnode::analyze::analyze(&request)).await??;
            print_analysis(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Infer {
            pair,
            out,
            mask_out,
            inputs_out,
        } => {
            let request = msnode::analyze::InferRequest {
                threshold: pair.threshold.or(config.analysis.probability_threshold),
                pair: pair.request(&config),
                probability_out: out,
                mask_out,
                inputs_out,
            };
            let summary =
                tokio::task::spawn_blocking(move || msnode::analyze::infer(&request)).await??;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }),
    }
}

/// The analysis as a short table.
fn print_analysis(summary: &msnode::analyze::AnalysisSummary) {
    let q = &summary.registration.quality;
    println!(
        "model {} {} on {}; threshold {}; registration brain correlation {:.3}{}",
        summary.model,
        summary.model_version,
        summary.execution_provider,
        summary.threshold,
        q.brain_correlation,
        if summary.registration.weak {
            " (WEAK PAIRING)"
        } else {
            ""
        }
    );
    println!(
        "{:>4}  {:<9}  {:>10}  {:>26}  {:>6}",
        "id", "change", "volume mm3", "centroid LPS mm", "max p"
    );
    for l in &summary.lesions {
        println!(
            "{:>4}  {:<9}  {:>10.1}  {:>8.1} {:>8.1} {:>8.1}  {:>6.2}",
            l.id,
            format!("{:?}", l.change).to_lowercase(),
            l.volume_mm3,
            l.centroid_lps[0],
            l.centroid_lps[1],
            l.centroid_lps[2],
            l.max_probability
        );
    }
    let t = &summary.totals;
    println!(
        "{} lesion(s): {} new, {} enlarging, {:.1} mm3 in all; {:.1} s ({:.1} s inference)",
        t.count,
        t.new,
        t.enlarging,
        t.total_volume_mm3,
        summary.timings.total,
        summary.timings.infer
    );
}

/// The error and its causes on one line, skipping causes its message already quotes.
fn render(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
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
