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

/// The single-visit model's held-out case: the cross-sectional patient with a consensus mask that
/// no training or tuning of that model saw.
const SINGLE_VISIT_TEST_PATIENT: &str = "patient26";

#[test]
fn a_first_visit_without_a_prior_gets_its_lesion_load() {
    let work = tempfile::tempdir().unwrap();
    let dir = shared_data()
        .join("lesjak-cross-sectional")
        .join(SINGLE_VISIT_TEST_PATIENT);
    let current = work.path().join("current");
    import(&dir.join("FLAIR_mni.nii.gz"), &current, "20120101");
    let config = work.path().join("msnode.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\ndir = {:?}\nsingle_visit_dir = {:?}\nexecution_provider = \"cpu\"\n",
            shipped_model_dir(),
            single_visit_model_dir()
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    let output = run(msnode()
        .arg("--config")
        .arg(&config)
        .args(["analyze", "--current"])
        .arg(&current)
        .arg("--out")
        .arg(&out));
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    println!("{SINGLE_VISIT_TEST_PATIENT}:\n{report}");
    assert!(report.contains("no prior: lesion load"), "{report}");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["kind"], "lesion_load");
    assert_eq!(summary["model"], "msnode-single-visit");
    assert_eq!(summary["registration"], serde_json::Value::Null);
    assert!(
        summary["timings"]["register"].as_f64().unwrap() < 1e-3,
        "no registration"
    );
    let lesions = summary["lesions"].as_array().unwrap();
    assert!(
        !lesions.is_empty(),
        "a patient with MS lesions: {summary:#}"
    );
    assert!(lesions.iter().all(|l| l["change"].is_null()));
    assert_eq!(
        summary["totals"]["count"].as_u64().unwrap(),
        lesions.len() as u64
    );
    assert_eq!(summary["totals"]["new"], 0);
    let total: f64 = lesions
        .iter()
        .map(|l| l["volume_mm3"].as_f64().unwrap())
        .sum();
    let reported = summary["totals"]["total_volume_mm3"].as_f64().unwrap();
    assert!((total - reported).abs() < 1e-6 * reported.max(1.0));

    let overlay = std::fs::read_dir(out.join("overlay")).unwrap().count();
    assert_eq!(overlay, std::fs::read_dir(&current).unwrap().count());
    let first_overlay = std::fs::read_dir(out.join("overlay"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for object in [out.join("seg.dcm"), out.join("sr.dcm"), first_overlay] {
        let findings = dciodvfy_findings(&object);
        assert!(findings.is_empty(), "{}: {findings:#?}", object.display());
    }
    // One segment, "Lesion"; the report gives the lesion load, not change.
    let script = format!(
        "import pydicom\nseg = pydicom.dcmread({seg:?})\nsr = pydicom.dcmread({sr:?})\n\
         print([s.SegmentLabel for s in seg.SegmentSequence], seg.SeriesDescription)\n\
         sr.walk(lambda ds, e: print(e.value) if e.keyword == 'TextValue' else None)",
        seg = out.join("seg.dcm").display().to_string(),
        sr = out.join("sr.dcm").display().to_string()
    );
    let dumped = run(Command::new(python()).args(["-c", &script]));
    let dumped = text(&dumped);
    assert!(
        dumped.starts_with("['Lesion'] msnode MS lesion load (automated)"),
        "{dumped}"
    );
    assert!(
        dumped.contains(&format!(
            "Lesion load (no prior study to compare with): {} lesion(s)",
            lesions.len()
        )),
        "{dumped}"
    );

    // Without a single-visit model, no --prior is an error that says what to configure.
    let off = work.path().join("off.toml");
    std::fs::write(&off, "[model]\nsingle_visit_dir = \"\"\n").unwrap();
    let refused = run(msnode()
        .arg("--config")
        .arg(&off)
        .args(["analyze", "--current"])
        .arg(&current)
        .arg("--out")
        .arg(work.path().join("refused")));
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("no --prior, and no single-visit model is configured"),
        "{}",
        text(&refused)
    );

    let score = run(Command::new(python())
        .arg(repo_root().join("tests/tools/lesion_load_score.py"))
        .arg(dir.join("lesions_mni.nii.gz"))
        .arg(out.join("lesions.nii.gz")));
    assert!(score.status.success(), "{}", text(&score));
    let scores: serde_json::Value = serde_json::from_slice(&score.stdout).unwrap();
    println!("{SINGLE_VISIT_TEST_PATIENT} (held out): {scores}");
    assert!(scores["n_true_lesions"].as_u64().unwrap() > 0);
    assert!(
        scores["true_lesions_detected"].as_u64().unwrap() > 0,
        "the single-visit model finds none of the real lesions: {scores}"
    );
}
