//! The infer stage against real ONNX Runtime (the library from the onnxruntime==1.31.1 wheel in
//! .venv) and the shipped model the training pipeline exported into models/realbg (nnunet/ beside it for the
//! parity tests), and its int8 quantisation models/realbg-int8.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use msnode::analyze::{AnalysisSettings, Analyzer};
use msnode::config::ExecutionProvider;
use msnode::infer::{InferError, Model, Predictor, Provider, RuntimeSettings};
use msnode::register::RegisterOptions;
use ndarray::Array4;

use common::*;

fn settings(provider: ExecutionProvider) -> RuntimeSettings {
    RuntimeSettings {
        library: Some(onnxruntime_library()),
        provider,
        intra_threads: 2,
    }
}

/// A copy of the shipped model whose card is edited by `edit`.
fn edited_model(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(
        shipped_model_dir().join("model.onnx"),
        out.join("model.onnx"),
    )
    .unwrap();
    let mut card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shipped_model_dir().join("model_card.json")).unwrap(),
    )
    .unwrap();
    edit(&mut card);
    std::fs::write(
        out.join("model_card.json"),
        serde_json::to_string_pretty(&card).unwrap(),
    )
    .unwrap();
    out
}

fn error_text<T>(result: Result<T, InferError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn models_with_a_missing_or_inconsistent_card_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(
        error_text(Model::open(&empty)).contains("cannot read"),
        "missing card accepted"
    );

    let tampered = edited_model(&dir.path().join("a"), |card| {
        card["onnx_sha256"] = serde_json::json!("00".repeat(32));
    });
    let why = error_text(Model::open(&tampered));
    let real = msnode::infer::card::sha256_hex(&shipped_model_dir().join("model.onnx")).unwrap();
    assert!(
        why.contains(&format!(
            "sha256 of model.onnx is {real}, the card says 0000"
        )),
        "{why}"
    );

    let two_channels = edited_model(&dir.path().join("b"), |card| {
        card["input_channels"] = serde_json::json!(["prior", "current"]);
    });
    let model = Model::open(&two_channels).unwrap();
    let why = error_text(Predictor::new(model, &settings(ExecutionProvider::Cpu)));
    assert!(
        why.contains("the input has 3 channels, the card says 2"),
        "{why}"
    );

    let renamed = edited_model(&dir.path().join("c"), |card| {
        card["input_name"] = serde_json::json!("image")
    });
    let why = error_text(Predictor::new(
        Model::open(&renamed).unwrap(),
        &settings(ExecutionProvider::Cpu),
    ));
    assert!(why.contains("no input named \"image\""), "{why}");
}

#[test]
fn auto_falls_back_to_cpu_and_cuda_fails_clearly_without_a_gpu() {
    let model = Model::open(&shipped_model_dir()).unwrap();
    let mut predictor = Predictor::new(model.clone(), &settings(ExecutionProvider::Auto)).unwrap();
    assert_eq!(predictor.provider, Provider::Cpu, "this machine has no GPU");
    let input = Array4::<f32>::from_shape_fn((3, 20, 40, 44), |(c, z, y, x)| {
        ((c + z + y + x) % 7) as f32 - 3.0
    });
    let probabilities = predictor.predict(input.view(), false, 2).unwrap();
    assert_eq!(probabilities.dim(), (2, 20, 40, 44));
    // Softmax: the two channels sum to one everywhere.
    let sums = probabilities.sum_axis(ndarray::Axis(0));
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4));

    let why = error_text(Predictor::new(model, &settings(ExecutionProvider::Cuda)));
    assert!(
        why.contains("CUDA execution provider did not register"),
        "{why}"
    );
}

fn probability(path: &Path) -> ndarray::Array3<f32> {
    msnode::volume::read_nifti(path)
        .and_then(|n| n.volume(0))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .data
}

/// `msnode infer` with `model_dir` on a real Lesjak pair against nnU-Net v2's own `nnUNetPredictor`
/// (its cropping, z-scoring, sliding window and Gaussian weighting) on the channels msnode fed the
/// network, with the fp32 checkpoint in `reference_dir`/nnunet. Returns (Dice at the card's
/// threshold, lesion volume ratio msnode / nnU-Net, max |p - p_nnunet|).
fn parity_with_nnunet(model_dir: &Path, reference_dir: &Path) -> (f64, f64, f32) {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("msnode.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\n[model]\ndir = {:?}\nexecution_provider = \"cpu\"\nintra_threads = 2\n",
            work.path().join("data"),
            model_dir
        ),
    )
    .unwrap();
    let pair = repo_root().join("tests/data/lesjak-longitudinal/patient01");
    let inputs = work.path().join("inputs");
    let output = run(Command::new(env!("CARGO_BIN_EXE_msnode"))
        .env("ORT_DYLIB_PATH", onnxruntime_library())
        .env("RUST_LOG", "warn")
        .arg("--config")
        .arg(&config)
        .arg("infer")
        .arg("--current")
        .arg(pair.join("study2_FLAIR.nii.gz"))
        .arg("--prior")
        .arg(pair.join("study1_FLAIR.nii.gz"))
        .arg("--out")
        .arg(work.path().join("probability.nii.gz"))
        .arg("--inputs-out")
        .arg(&inputs));
    assert!(output.status.success(), "{}", text(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["execution_provider"], "CPU", "{summary}");
    let peer = work.path().join("nnunet.nii.gz");
    let output = run(Command::new(python())
        .env("OMP_NUM_THREADS", "2")
        .arg(repo_root().join("tests/tools/nnunet_predict.py"))
        .arg("--model-dir")
        .arg(reference_dir)
        .arg("--inputs")
        .arg(&inputs)
        .arg("--out")
        .arg(&peer));
    assert!(output.status.success(), "{}", text(&output));

    let ours = probability(&inputs.join("probability_model_grid.nii.gz"));
    let theirs = probability(&peer);
    assert_eq!(ours.dim(), theirs.dim());
    let threshold = Model::open(model_dir).unwrap().card.default_threshold;
    let (mut both, mut ours_on, mut theirs_on) = (0usize, 0usize, 0usize);
    let mut max_difference = 0f32;
    for (&a, &b) in ours.iter().zip(theirs.iter()) {
        let (a_on, b_on) = (a >= threshold, b >= threshold);
        both += usize::from(a_on && b_on);
        ours_on += usize::from(a_on);
        theirs_on += usize::from(b_on);
        max_difference = max_difference.max((a - b).abs());
    }
    let dice = 2.0 * both as f64 / (ours_on + theirs_on) as f64;
    let volume_ratio = ours_on as f64 / theirs_on as f64;
    eprintln!(
        "parity of {}: Dice {dice:.4}, lesion volume {ours_on} vs {theirs_on} voxels, max |p - p_nnunet| {max_difference:.4}",
        model_dir.display()
    );
    // A model that marks nothing would make the comparison empty.
    assert!(theirs_on > 100, "nnU-Net marks only {theirs_on} voxels");
    (dice, volume_ratio, max_difference)
}

/// Parity with nnU-Net itself for the shipped model: the same fp32 weights, so the probabilities
/// agree everywhere, not only the masks.
#[test]
fn msnode_infer_matches_nnunets_own_predictor_on_a_real_pair() {
    let (dice, volume_ratio, max_difference) =
        parity_with_nnunet(&shipped_model_dir(), &shipped_model_dir());
    assert!(dice >= 0.99, "Dice {dice}");
    assert!(
        (volume_ratio - 1.0).abs() <= 0.01,
        "volume ratio {volume_ratio}"
    );
    assert!(
        max_difference < 0.05,
        "probabilities differ by {max_difference}"
    );
}

/// The int8 model (`models/realbg-int8`, `msnode-quantize`) against nnU-Net on the fp32 checkpoint
/// it was quantised from: the masks must agree as the fp32 model's do (Dice >= 0.99, volume within
/// 1 %); single voxels near the threshold may move (int8 steps), so no bound on the largest
/// probability difference.
#[test]
fn the_int8_model_keeps_parity_with_nnunet_on_its_fp32_source() {
    let int8 = repo_root().join("models/realbg-int8");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(int8.join("model_card.json")).unwrap())
            .unwrap();
    let source = card["quantization"]["source_model"].as_str().unwrap();
    let (dice, volume_ratio, _) =
        parity_with_nnunet(&int8, &repo_root().join("models").join(source));
    assert!(dice >= 0.99, "Dice {dice}");
    assert!(
        (volume_ratio - 1.0).abs() <= 0.01,
        "volume ratio {volume_ratio}"
    );
}

#[test]
fn an_analyzer_verifies_its_model_again_only_when_the_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = edited_model(dir.path(), |_| {});
    let mut analyzer = Analyzer::open(AnalysisSettings {
        model_dir: model_dir.clone(),
        runtime: settings(ExecutionProvider::Cpu),
        mirror: false,
        threshold: None,
        min_lesion_volume_mm3: None,
        registration: RegisterOptions::default(),
    })
    .unwrap();
    assert_eq!(analyzer.provider(), Provider::Cpu);
    assert!(!analyzer.refresh().unwrap(), "nothing changed");

    // The card written again (same content, new time): verified and loaded again.
    let card = model_dir.join("model_card.json");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&card, std::fs::read(&card).unwrap()).unwrap();
    assert!(analyzer.refresh().unwrap());
    assert!(!analyzer.refresh().unwrap());

    // An ONNX file changed under the node is refused, naming why.
    let onnx = model_dir.join("model.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    bytes.push(0);
    std::fs::write(&onnx, bytes).unwrap();
    let error = match analyzer.refresh() {
        Ok(reloaded) => panic!("a changed model was accepted (reloaded: {reloaded})"),
        Err(e) => msnode::logging::chain(&e),
    };
    assert!(
        error.contains("cannot open the model") && error.contains("sha256 of model.onnx is"),
        "{error}"
    );
}
