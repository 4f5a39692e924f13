//! The read-only status page: plain server-rendered HTML (tables, no script), readable in a text
//! browser. It shows UIDs, AE titles and counts; never patient names or birth dates, and Patient
//! ID only where `[admin] show_patient_id` allows it.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Admin;
use super::ready::{self, Check};
use crate::index::{AssociationRow, Counts, IndexError, JobRow, OutboxRow};
use crate::workflow::runner::results_dir;

const RECENT: i64 = 20;

/// Everything the page shows, read from the index and the results folders.
pub struct Status {
    pub ae_title: String,
    pub checks: Vec<Check>,
    pub counts: Counts,
    pub jobs_by_state: Vec<(String, i64)>,
    pub outbox_by_state: Vec<(String, i64)>,
    pub associations: Vec<AssociationRow>,
    pub jobs: Vec<JobView>,
    pub failures: Vec<OutboxRow>,
    pub config_text: String,
}

pub struct JobView {
    pub job: JobRow,
    pub patient_id: Option<String>,
    /// Stage -> seconds, from the job's summary.
    pub timings: Vec<(String, f64)>,
    pub lesions: Option<i64>,
    pub previews: Vec<String>,
}

pub async fn gather(admin: &Admin) -> Result<Status, IndexError> {
    let index = admin.ingest.index();
    let workflow = index.workflow_counts().await?;
    let patient_ids: BTreeMap<i64, String> = if admin.show_patient_id {
        index.job_patient_ids(RECENT).await?.into_iter().collect()
    } else {
        BTreeMap::new()
    };
    let mut jobs = Vec::new();
    for job in index.jobs(None, RECENT).await? {
        let summary: serde_json::Value = job
            .summary
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        let timings = summary["timings"]
            .as_object()
            .map(|t| {
                t.iter()
                    .filter_map(|(stage, s)| Some((stage.clone(), s.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        jobs.push(JobView {
            patient_id: patient_ids.get(&job.id).cloned(),
            timings,
            lesions: summary["totals"]["count"].as_i64(),
            previews: previews(admin, job.id).await,
            job,
        });
    }
    Ok(Status {
        ae_title: admin.ae_title.clone(),
        checks: ready::run(admin).await,
        counts: index.counts().await?,
        jobs_by_state: workflow.jobs,
        outbox_by_state: workflow.outbox,
        associations: index.recent_associations(RECENT).await?,
        jobs,
        failures: index.outbox_failures(RECENT).await?,
        // Debug output names every key with its effective value; the configuration holds no
        // secret (the token lives in its own file, shown only by path).
        config_text: format!("{:#?}", *admin.config.borrow()),
    })
}

/// The preview file names of a job, in slice order.
async fn previews(admin: &Admin, job: i64) -> Vec<String> {
    let dir = results_dir(&admin.data_dir, job).join("preview");
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_preview_name(&name) {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

/// `slice<digits>.png`: the only names the preview route serves.
pub fn is_preview_name(name: &str) -> bool {
    name.strip_prefix("slice")
        .and_then(|rest| rest.strip_suffix(".png"))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table: a header row, then rows of already escaped cells.
fn table(html: &mut String, header: &[&str], rows: &[Vec<String>]) {
    html.push_str("<table border=\"1\">\n<tr>");
    for h in header {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr>\n");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
}

fn states_line(counts: &[(String, i64)]) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(state, n)| format!("{} {n}", escape(state)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn render(status: &Status) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>msnode {ae}</title></head><body>\n\
         <h1>msnode {ae}</h1>\n<p>version {version}</p>\n",
        ae = escape(&status.ae_title),
        version = env!("CARGO_PKG_VERSION"),
    );
    html.push_str("<h2>Readiness</h2>\n<ul>\n");
    for check in &status.checks {
        let _ = writeln!(html, "<li>{}</li>", escape(&check.to_string()));
    }
    html.push_str("</ul>\n");
    let c = &status.counts;
    let _ = write!(
        html,
        "<h2>Held</h2>\n<p>patients {} &middot; studies {} &middot; series {} &middot; instances {} ({:.1} MiB)</p>\n\
         <p>jobs: {}</p>\n<p>outbox: {}</p>\n",
        c.patients,
        c.studies,
        c.series,
        c.instances,
        c.bytes as f64 / 1048576.0,
        states_line(&status.jobs_by_state),
        states_line(&status.outbox_by_state),
    );
    render_jobs(&mut html, &status.jobs);
    render_failures(&mut html, &status.failures);
    render_associations(&mut html, &status.associations);
    let _ = write!(
        html,
        "<h2>Configuration</h2>\n<pre>{}</pre>\n</body></html>\n",
        escape(&status.config_text)
    );
    html
}

fn render_jobs(html: &mut String, jobs: &[JobView]) {
    html.push_str("<h2>Jobs</h2>\n");
    let with_patient = jobs.iter().any(|j| j.patient_id.is_some());
    let mut header = vec!["id", "state", "updated", "current series", "prior series"];
    if with_patient {
        header.push("patient id");
    }
    header.extend(["lesions", "stage timings (s)", "reason", "previews"]);
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|view| {
            let job = &view.job;
            let mut row = vec![
                job.id.to_string(),
                escape(&job.state),
                escape(job.updated_at.get(..19).unwrap_or(&job.updated_at)),
                escape(&job.current_series),
                escape(job.prior_series.as_deref().unwrap_or("")),
            ];
            if with_patient {
                row.push(escape(view.patient_id.as_deref().unwrap_or("")));
            }
            let timings = view
                .timings
                .iter()
                .map(|(stage, s)| format!("{} {s:.1}", escape(stage)))
                .collect::<Vec<_>>()
                .join(", ");
            let previews = view
                .previews
                .iter()
                .map(|name| {
                    format!(
                        "<a href=\"/jobs/{}/previews/{n}\">{n}</a>",
                        job.id,
                        n = escape(name)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            row.extend([
                view.lesions.map(|n| n.to_string()).unwrap_or_default(),
                timings,
                escape(job.reason.as_deref().unwrap_or("")),
                previews,
            ]);
            row
        })
        .collect();
    table(html, &header, &rows);
}

fn render_failures(html: &mut String, failures: &[OutboxRow]) {
    html.push_str("<h2>Deliveries that failed</h2>\n");
    let rows: Vec<Vec<String>> = failures
        .iter()
        .map(|r| {
            let why = match (&r.last_status, &r.last_error) {
                (Some(s), _) => format!("status {s:#06x}"),
                (None, Some(e)) => e.clone(),
                (None, None) => String::new(),
            };
            vec![
                r.job.to_string(),
                escape(&r.destination),
                escape(&r.sop_instance_uid),
                escape(&r.state),
                r.attempts.to_string(),
                escape(&why),
            ]
        })
        .collect();
    table(
        html,
        &[
            "job",
            "destination",
            "SOP instance",
            "state",
            "attempts",
            "last failure",
        ],
        &rows,
    );
}

fn render_associations(html: &mut String, associations: &[AssociationRow]) {
    html.push_str("<h2>Recent associations</h2>\n");
    let rows: Vec<Vec<String>> = associations
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                escape(a.started_at.get(..19).unwrap_or(&a.started_at)),
                escape(&a.calling_ae),
                escape(&a.peer_address),
                a.instances_stored.to_string(),
                a.instances_refused.to_string(),
                escape(&a.outcome),
            ]
        })
        .collect();
    table(
        html,
        &[
            "id",
            "started",
            "calling AE",
            "peer",
            "stored",
            "refused",
            "outcome",
        ],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slice_pngs_are_previews() {
        assert!(is_preview_name("slice007.png"));
        for name in [
            "slice.png",
            "../x.png",
            "slice1.png/..",
            "slice01.PNG",
            "sliceab.png",
        ] {
            assert!(!is_preview_name(name), "{name}");
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
