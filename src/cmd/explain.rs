//! `msnode explain SERIES_UID`: which selection rule took or rejected a series, and why.

use std::process::ExitCode;

use anyhow::bail;
use msnode::index::Index;
use msnode::settings::Settings;
use msnode::workflow::selection::SeriesHeader;

#[derive(clap::Args)]
pub struct Args {
    series: String,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let index = Index::open(&settings.database).await?;
    let files = index.series_files(&args.series).await?;
    let Some(first) = files.first() else {
        bail!(
            "no series {} in the index {}",
            args.series,
            settings.database.display()
        );
    };
    // Judged now with the configured rules, and as the workflow recorded it.
    let header = SeriesHeader::read(&settings.data_dir.join(first), files.len())?;
    let verdict = settings.workflow.selection.judge(&header);
    println!(
        "{}: {} by rule {}: {}",
        args.series,
        if verdict.flair { "FLAIR" } else { "not FLAIR" },
        verdict.rule,
        verdict.why
    );
    match index.verdict(&args.series).await? {
        Some(v) => println!(
            "recorded {}: {}, {}, rule {}: {}",
            v.judged_at,
            if v.flair { "FLAIR" } else { "not FLAIR" },
            if v.chosen {
                "chosen for a job"
            } else {
                "no job"
            },
            v.rule,
            v.why
        ),
        None => println!("not judged yet (the series is not complete, or the node has not run)"),
    }
    Ok(ExitCode::SUCCESS)
}
