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


def test_a_rebuilt_checkpoint_has_the_exported_checkpoints_weights(tmp_path: Path) -> None:
    compact = models_dir() / "compact"
    model_dir = tmp_path / "compact"
    model_dir.mkdir()
    for name in ("model.onnx", "model_card.json"):
        (model_dir / name).write_bytes((compact / name).read_bytes())
    rebuild_checkpoint_main(["--model-dir", str(model_dir), "--size", "compact"])
    original, rebuilt = weights(compact / "nnunet"), weights(model_dir / "nnunet")
    assert rebuilt.keys() == original.keys()
    heads = sorted({k.split(".")[2] for k in original if k.startswith("decoder.seg_layers.")})
    compared = 0
    for key, tensor in original.items():
        if key.startswith("decoder.seg_layers.") and key.split(".")[2] != heads[-1]:
            assert not rebuilt[key].any(), f"{key}: an unused head is not zero"
            continue
        assert torch.equal(rebuilt[key], tensor), key
        compared += 1
    assert compared > 100
    # The rebuilt folder loads as a trained model and computes what the original does.
    a = load_trained_model(compact / "nnunet", compact / "nnunet" / "fold_0" / "checkpoint_final.pth")
    b = load_trained_model(model_dir / "nnunet", model_dir / "nnunet" / "fold_0" / "checkpoint_final.pth")
    x = torch.randn(1, 3, 32, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a.network(x), b.network(x))


def test_the_committed_realbg_checkpoint_is_its_onnx_files_rebuild(tmp_path: Path) -> None:
    realbg = models_dir() / "realbg"
    model_dir = tmp_path / "realbg"
    model_dir.mkdir()
    for name in ("model.onnx", "model_card.json"):
        (model_dir / name).write_bytes((realbg / name).read_bytes())
    rebuild_checkpoint_main(["--model-dir", str(model_dir), "--size", "realbg"])
    committed, rebuilt = weights(realbg / "nnunet"), weights(model_dir / "nnunet")
    assert committed.keys() == rebuilt.keys()
    assert all(torch.equal(committed[k], rebuilt[k]) for k in committed)
    plans = json.loads((realbg / "nnunet" / "plans.json").read_text())
    card = json.loads((realbg / "model_card.json").read_text())
    assert plans["configurations"]["3d_fullres"]["patch_size"] == card["patch_size"]
