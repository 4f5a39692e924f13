"""`msnode-rebuild-checkpoint`: an nnU-Net checkpoint rebuilt from an exported ONNX file holds the weights of the
checkpoint the file was exported from, and the committed models/realbg/nnunet is that rebuild."""

import json
from pathlib import Path

import torch

from msnode_training.cli import rebuild_checkpoint_main
from msnode_training.export import load_trained_model
from msnode_training.paths import models_dir


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                      weights_only=False)["network_weights"]


def rebuilt_copy(model: str, tmp_path: Path) -> Path:
    """models/<model>'s ONNX file and card copied into `tmp_path`, its nnunet/ rebuilt there by the command."""
    model_dir = tmp_path / model
    model_dir.mkdir()
    for name in ("model.onnx", "model_card.json"):
        (model_dir / name).write_bytes((models_dir() / model / name).read_bytes())
    rebuild_checkpoint_main(["--model-dir", str(model_dir), "--size", model])
    return model_dir / "nnunet"


def test_a_rebuilt_checkpoint_has_the_exported_checkpoints_weights(tmp_path: Path) -> None:
    original_dir = models_dir() / "compact" / "nnunet"
    rebuilt_dir = rebuilt_copy("compact", tmp_path)
    original, rebuilt = weights(original_dir), weights(rebuilt_dir)
    assert rebuilt.keys() == original.keys()
    last_head = max(int(k.split(".")[2]) for k in original if k.startswith("decoder.seg_layers."))
    compared = 0
    for key, tensor in original.items():
        if key.startswith("decoder.seg_layers.") and int(key.split(".")[2]) != last_head:
            assert not rebuilt[key].any(), f"{key}: an unused head is not zero"
            continue
        assert torch.equal(rebuilt[key], tensor), key
        compared += 1
    assert compared > 100
    # The rebuilt folder loads as a trained model and computes what the original does.
    a = load_trained_model(original_dir, original_dir / "fold_0" / "checkpoint_final.pth")
    b = load_trained_model(rebuilt_dir, rebuilt_dir / "fold_0" / "checkpoint_final.pth")
    x = torch.randn(1, 3, 32, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a.network(x), b.network(x))


def test_the_committed_realbg_checkpoint_is_its_onnx_files_rebuild(tmp_path: Path) -> None:
    committed_dir = models_dir() / "realbg" / "nnunet"
    committed, rebuilt = weights(committed_dir), weights(rebuilt_copy("realbg", tmp_path))
    assert committed.keys() == rebuilt.keys()
    assert all(torch.equal(committed[k], rebuilt[k]) for k in committed)
    plans = json.loads((committed_dir / "plans.json").read_text())
    card = json.loads((models_dir() / "realbg" / "model_card.json").read_text())
    assert plans["configurations"]["3d_fullres"]["patch_size"] == card["patch_size"]
