"""Where things live: the repository, the shared real data next to it, and the git-ignored work directory."""

from __future__ import annotations

import os
from pathlib import Path

TRAINING_DIR = Path(__file__).resolve().parents[2]
REPO_ROOT = TRAINING_DIR.parent


def shared_data_dir() -> Path:
    """Real data shipped beside the repository (CI clones the repo next to shared/)."""
    return Path(os.environ.get("MSNODE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def lesjak_longitudinal_dir() -> Path:
    return shared_data_dir() / "lesjak-longitudinal"


def lesjak_cross_sectional_dir() -> Path:
    return shared_data_dir() / "lesjak-cross-sectional"


def work_dir() -> Path:
    """Generated data, nnU-Net folders and checkpoints; git-ignored (training/work/)."""
    return Path(os.environ.get("MSNODE_WORK", TRAINING_DIR / "work"))


def models_dir() -> Path:
    return REPO_ROOT / "models"


def set_nnunet_environment(root: Path) -> dict[str, Path]:
    """Point nnU-Net's three folders at `root` and keep it on CPU-friendly settings.

    nnU-Net reads these variables lazily, so setting them at run time is enough.
    """
    folders = {
        "nnUNet_raw": root / "nnUNet_raw",
        "nnUNet_preprocessed": root / "nnUNet_preprocessed",
        "nnUNet_results": root / "nnUNet_results",
    }
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
    # torch.compile does not help on CPU; one augmentation worker keeps two cores busy without oversubscribing.
    os.environ.setdefault("nnUNet_compile", "False")
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    return folders
