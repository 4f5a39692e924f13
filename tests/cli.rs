//! The command line a site admin uses: `config check`, `status` and `--version`.

mod common;

use std::process::Command;

use common::*;

#[test]
fn config_check_accepts_the_example_and_names_every_problem_of_a_bad_file() {
    let example = repo_root().join("config/msnode.example.toml");
    let ok = run(Command::new(env!("CARGO_BIN_EXE_msnode"))
        .args(["config", "check"])
        .arg(&example));
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains(": OK"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[node]\nae_title = \"A_TITLE_LONGER_THAN_16\"\nport = \"eleven\"\n[network]\nmax_pdu = 12\n[analysis]\nprobability_threshold = 1.5\nunknown = 1\n",
    )
    .unwrap();
    let output = run(Command::new(env!("CARGO_BIN_EXE_msnode"))
        .args(["config", "check"])
        .arg(&bad));
    assert!(!output.status.success());
    let report = text(&output);
    assert!(report.contains("5 problem(s)"), "{report}");
    for line in [
        "node.ae_title: \"A_TITLE_LONGER_THAN_16\" is longer than 16 characters",
        "node.port: invalid type: string \"eleven\", expected u16",
        "network.max_pdu: must be between 4096 and 16777216 bytes, found 12",
        "analysis.probability_threshold: must lie strictly between 0 and 1, found 1.5",
        "analysis.unknown: unknown key",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
}

#[test]
fn status_reports_counts_and_associations_as_json() {
    let node = Node::start("");
    let store = node.storescu("STORESCU", &ge_series(4)[..5]);
    assert!(store.status.success(), "{}", text(&store));
    node.ended_associations(2);
    let output = run(node.cli().args(["status", "--json"]));
    assert!(output.status.success(), "{}", text(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["instances"], 5);
    assert_eq!(status["series"], 1);
    assert_eq!(status["patients"], 1);
    assert_eq!(status["recent_associations"][0]["calling_ae"], "STORESCU");
    assert_eq!(status["recent_associations"][0]["instances_stored"], 5);
}

#[test]
fn logs_carry_no_patient_names() {
    let node = Node::start("");
    let files = ge_series(4);
    let store = node.storescu("STORESCU", &files[..3]);
    assert!(store.status.success());
    let name = patient_name(&files[0]);
    let log = node.log();
    assert!(log.contains("association ended"), "{log}");
    assert!(!log.contains(&name), "the patient name reached the log");
}

/// A stored series named by its Series Instance UID is found through the index, whatever folder
/// the store keeps it in; an unknown UID is refused naming the index it was looked up in.
#[test]
fn a_stored_series_is_found_by_its_uid_through_the_index() {
    let node = Node::start("");
    let files = ge_series(4);
    let store = node.storescu("STORESCU", &files);
    assert!(store.status.success(), "{}", text(&store));
    node.ended_associations(1);
    let series_uid = series_instance_uid(&files[0]);
    let out = tempfile::tempdir().unwrap();
    let exported = out.path().join("series.nii.gz");
    let output = run(node
        .cli()
        .arg("export-nifti")
        .arg(&series_uid)
        .arg(&exported)
        .args(["--volume", "0"]));
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(report.contains(" x 15 voxels"), "{report}");
    assert!(
        report.contains(&format!("from {} file(s)", files.len())),
        "{report}"
    );
    assert!(exported.is_file());

    let output = run(node
        .cli()
        .args(["export-nifti", "1.2.3.999"])
        .arg(&exported));
    assert!(!output.status.success());
    assert!(
        text(&output).contains("1.2.3.999 is neither a file, a folder nor a series in the index"),
        "{}",
        text(&output)
    );
}

#[test]
fn version_names_the_commit_the_runtime_and_the_default_model() {
    let output = run(Command::new(env!("CARGO_BIN_EXE_msnode")).arg("--version"));
    assert!(output.status.success());
    let version = text(&output);
    let card_of = |dir: &str| -> serde_json::Value {
        let path = repo_root().join(dir).join("model_card.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (card, single_visit) = (card_of("models/realbg"), card_of("models/single-visit"));
    let commit = run(Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root()));
    for part in [
        format!("msnode {}", env!("CARGO_PKG_VERSION")),
        format!("commit: {}", String::from_utf8_lossy(&commit.stdout).trim()),
        "ONNX Runtime: built for the 1.31 API".to_string(),
        format!(
            "default model: {} {}",
            card["name"].as_str().unwrap(),
            card["version"].as_str().unwrap()
        ),
        format!(
            "single-visit model: {} {}",
            single_visit["name"].as_str().unwrap(),
            single_visit["version"].as_str().unwrap()
        ),
    ] {
        assert!(version.contains(&part), "{part:?} in {version}");
    }
}
