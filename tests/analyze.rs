//! `msnode analyze` on the real Lesjak longitudinal pairs, converted to DICOM with
//! `msnode import-nifti`, with the shipped model: every output is written and valid, and the
//! lesion-wise F1 against the new-or-enlarging truth is printed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn msnode() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_msnode"));
    command
        .env("ORT_DYLIB_PATH", onnxruntime_library())
        .env("RUST_LOG", "warn");
    command
}

fn import(nifti: &Path, out: &Path, date: &str) {
    let output = run(msnode().arg("import-nifti").arg(nifti).arg(out).args([
        "--patient-id",
        "LESJAK",
        "--study-date",
        date,
    ]));
    assert!(output.status.success(), "{}", text(&output));
}

/// dciodvfy's errors and warnings about `path`.
fn dciodvfy_findings(path: &Path) -> Vec<String> {
    let output = run(Command::new(repo_root().join(".venv/bin/dciodvfy")).arg(path));
    text(&output)
        .lines()
        .filter(|l| l.starts_with("Error") || l.starts_with("Warning"))
        .map(str::to_string)
        .collect()
}

fn analyze_patient(patient: &str) {
    let work = tempfile::tempdir().unwrap();
    let dir = shared_data().join("lesjak-longitudinal").join(patient);
    import(
        &dir.join("study1_FLAIR.nii.gz"),
        &work.path().join("prior"),
        "20100101",
    );
    import(
        &dir.join("study2_FLAIR.nii.gz"),
        &work.path().join("current"),
        "20110101",
    );
    let out = work.path().join("out");
    let config = work.path().join("msnode.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\ndir = {:?}\nexecution_provider = \"cpu\"\n",
            shipped_model_dir()
        ),
    )
    .unwrap();
    let output = run(msnode()
        .arg("--config")
        .arg(&config)
        .arg("analyze")
        .arg("--current")
        .arg(work.path().join("current"))
        .arg("--prior")
        .arg(work.path().join("prior"))
        .arg("--out")
        .arg(&out));
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    println!("{patient}:\n{report}");
    assert!(
        report.contains("on CPU"),
        "the provider is not reported: {report}"
    );

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["execution_provider"], "CPU");
    // A weak pairing is reported, not hidden (registration accuracy itself is tested in tests/register.rs).
    let correlation = summary["registration"]["quality"]["brain_correlation"]
        .as_f64()
        .unwrap();
    assert_eq!(
        summary["registration"]["weak"].as_bool().unwrap(),
        correlation < msnode::analyze::WEAK_PAIRING_CORRELATION
    );
    let slices = std::fs::read_dir(work.path().join("current"))
        .unwrap()
        .count();
    let overlay: Vec<PathBuf> = std::fs::read_dir(out.join("overlay"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(overlay.len(), slices, "one overlay image per current slice");
    let previews = std::fs::read_dir(out.join("preview")).unwrap().count();
    assert!(previews >= 1);
    let imported = std::fs::read_dir(work.path().join("current"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for object in [
        out.join("seg.dcm"),
        out.join("sr.dcm"),
        overlay[0].clone(),
        imported,
    ] {
        assert!(object.is_file(), "{} is missing", object.display());
        // Neither errors nor warnings (Study ID, Laterality and the PN form once were).
        let findings = dciodvfy_findings(&object);
        assert!(findings.is_empty(), "{}: {findings:#?}", object.display());
    }
    let lesions = summary["lesions"].as_array().unwrap();
    assert_eq!(
        lesions.len() as u64,
        summary["totals"]["count"].as_u64().unwrap()
    );

    let score = run(Command::new(python())
        .arg(repo_root().join("tests/tools/analyze_score.py"))
        .arg(&dir)
        .arg(out.join("lesions.nii.gz")));
    assert!(score.status.success(), "{}", text(&score));
    let scores: serde_json::Value = serde_json::from_slice(&score.stdout).unwrap();
    println!(
        "{patient}: lesion-wise F1 {:.3} (sensitivity {:.3}, PPV {:.3}, Dice {:.3}); {} true, {} predicted lesions",
        scores["f1"].as_f64().unwrap_or(0.0),
        scores["sensitivity"].as_f64().unwrap_or(0.0),
        scores["ppv"].as_f64().unwrap_or(0.0),
        scores["dice"].as_f64().unwrap_or(0.0),
        scores["n_true_lesions"],
        scores["n_predicted_lesions"]
    );
    assert!(scores["n_true_lesions"].as_u64().unwrap() > 0);
}

#[test]
fn analyze_lesjak_patient01() {
    analyze_patient("patient01");
}

#[test]
fn analyze_lesjak_patient03() {
    analyze_patient("patient03");
}
