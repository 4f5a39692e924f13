//! `msnode analyze`: the whole analysis of a follow-up, and the two visits' arguments that
//! `analyze` and `infer` share.

use std::path::PathBuf;
use std::process::ExitCode;

use msnode::analyze::{AnalysisSettings, AnalysisSummary, AnalyzeError, Analyzer, ScanSource};
use msnode::dicom::uid::Uids;
use msnode::settings::Settings;

/// The two visits and the model settings `analyze` and `infer` share.
#[derive(clap::Args)]
pub struct PairArgs {
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

/// The two visits found, and the analysis settings with the command line's overrides.
pub struct Pair {
    pub current: ScanSource,
    pub prior: ScanSource,
    pub analysis: AnalysisSettings,
}

impl Pair {
    /// Open the analyzer and run `job` on the two visits with it, off the async threads.
    pub async fn run<T: Send + 'static>(
        self,
        job: impl FnOnce(&mut Analyzer, &ScanSource, &ScanSource) -> Result<T, AnalyzeError>
        + Send
        + 'static,
    ) -> anyhow::Result<T> {
        let result = tokio::task::spawn_blocking(move || {
            let mut analyzer = Analyzer::open(self.analysis)?;
            job(&mut analyzer, &self.current, &self.prior)
        })
        .await?;
        Ok(result?)
    }
}

impl PairArgs {
    pub async fn resolve(self, settings: &Settings) -> anyhow::Result<Pair> {
        let (data_dir, database) = (&settings.data_dir, &settings.database);
        let mut analysis = settings.analysis.clone();
        analysis.mirror = self.mirror;
        analysis.threshold = self.threshold.or(analysis.threshold);
        Ok(Pair {
            current: ScanSource::resolve(&self.current, data_dir, database).await?,
            prior: ScanSource::resolve(&self.prior, data_dir, database).await?,
            analysis,
        })
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pair: PairArgs,
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let out = args.out;
    let summary = args
        .pair
        .resolve(settings)
        .await?
        .run(move |analyzer, current, prior| {
            analyzer.analyze(current, prior, &out, &mut Uids::Random)
        })
        .await?;
    print_analysis(&summary);
    Ok(ExitCode::SUCCESS)
}

/// The analysis as a short table.
fn print_analysis(summary: &AnalysisSummary) {
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
    println!(
        "{} object(s) for PACS, {} local file(s)",
        summary.for_pacs.len(),
        summary.local.len()
    );
}
