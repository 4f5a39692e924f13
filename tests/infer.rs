//! The infer stage against real ONNX Runtime (the library from the onnxruntime==1.31.1 wheel in
//! .venv) and the tiny model the training pipeline exported into models/tiny.

mod common;

use std::path::{Path, PathBuf};

use msnode::config::ExecutionProvider;
use msnode::infer::{InferError, Model, Predictor, Provider, RuntimeSettings};
use ndarray::Array4;

use common::*;

fn onnxruntime_library() -> PathBuf {
    let lib = repo_root()
        .join(".venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
    assert!(
        lib.is_file(),
        "{} is missing: run `make setup`",
        lib.display()
    );
    lib
}

fn settings(provider: ExecutionProvider) -> RuntimeSettings {
    RuntimeSettings {
        library: Some(onnxruntime_library()),
        provider,
        intra_threads: 2,
    }
}

fn tiny_model_dir() -> PathBuf {
    repo_root().join("models/tiny")
}

/// A copy of the tiny model whose card is edited by `edit`.
fn edited_model(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(tiny_model_dir().join("model.onnx"), out.join("model.onnx")).unwrap();
    let mut card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tiny_model_dir().join("model_card.json")).unwrap(),
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
    let real = msnode::infer::card::sha256_hex(&tiny_model_dir().join("model.onnx")).unwrap();
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
    let model = Model::open(&tiny_model_dir()).unwrap();
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
