//! `msnode analyze`: the whole analysis of a follow-up (or, without `--prior`, the lesion load of
//! one visit by the single-visit model), and the visits' arguments that `analyze` and `infer`
//! share.

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
    /// Prior scan, as --current. Without it the single-visit model (`[model] single_visit_dir`)
    /// reports every lesion of the current scan.
    #[arg(long)]
    prior: Option<String>,
    /// Lesion probability threshold (default: the configuration, else the model card).
    #[arg(long)]
    threshold: Option<f32>,
    /// Test-time mirroring over the model card's axes (8 passes for 3 axes).
    #[arg(long)]
    mirror: bool,
}

/// The visits found, and the analysis settings with the command line's overrides.
pub struct Pair {
    pub current: ScanSource,
    pub prior: Option<ScanSource>,
    pub analysis: AnalysisSettings,
}

impl Pair {
    /// Open the analyzer and run `job` on the two visits with it, off the async threads.
    pub async fn run<T: Send + 'static>(
        self,
        job: impl FnOnce(&mut Analyzer, &ScanSource, Option<&ScanSource>) -> Result<T, AnalyzeError>
        + Send
        + 'static,
    ) -> anyhow::Result<T> {
        let result = tokio::task::spawn_blocking(move || {
            let mut analyzer = Analyzer::open(self.analysis)?;
            job(&mut analyzer, &self.current, self.prior.as_ref())
        })
        .await?;
        Ok(result?)
    }
}

impl PairArgs {
    pub async fn resolve(self, settings: &Settings) -> anyhow::Result<Pair> {
        let (data_dir, database) = (&settings.data_dir, &settings.database);
        let mut analysis = match (&self.prior, &settings.single_visit) {
            (Some(_), _) => settings.analysis.clone(),
            (None, Some(single_visit)) => single_visit.clone(),
            (None, None) => anyhow::bail!(
                "no --prior, and no single-visit model is configured ([model] single_visit_dir)"
            ),
        };
        analysis.mirror = self.mirror;
        analysis.threshold = self.threshold.or(analysis.threshold);
        let prior = match &self.prior {
            Some(prior) => Some(ScanSource::resolve(prior, data_dir, database).await?),
            None => None,
        };
        Ok(Pair {
            current: ScanSource::resolve(&self.current, data_dir, database).await?,
            prior,
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
    let comparison = match &summary.registration {
        Some(r) => format!(
            "registration brain correlation {:.3}{}",
            r.quality.brain_correlation,
            if r.weak { " (WEAK PAIRING)" } else { "" }
        ),
        None => "no prior: lesion load of this visit".to_string(),
    };
    println!(
        "model {} {} on {}; threshold {}; {comparison}",
        summary.model, summary.model_version, summary.execution_provider, summary.threshold,
    );
    println!(
        "{:>4}  {:<9}  {:>10}  {:>26}  {:>6}",
        "id", "change", "volume mm3", "centroid LPS mm", "max p"
    );
    for l in &summary.lesions {
        println!(
            "{:>4}  {:<9}  {:>10.1}  {:>8.1} {:>8.1} {:>8.1}  {:>6.2}",
            l.id,
            l.change
                .map_or("-".to_string(), |c| format!("{c:?}").to_lowercase()),
            l.volume_mm3,
            l.centroid_lps[0],
            l.centroid_lps[1],
            l.centroid_lps[2],
            l.max_probability
        );
    }
    let t = &summary.totals;
    let counts = match summary.registration {
        Some(_) => format!("{} new, {} enlarging", t.new, t.enlarging),
        None => "lesion load, no prior".to_string(),
    };
    println!(
        "{} lesion(s): {counts}, {:.1} mm3 in all; {:.1} s ({:.1} s inference)",
        t.count, t.total_volume_mm3, summary.timings.total, summary.timings.infer
    );
    println!(
        "{} object(s) for PACS, {} local file(s)",
        summary.for_pacs.len(),
        summary.local.len()
    );
}
