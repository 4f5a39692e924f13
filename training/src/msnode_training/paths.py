"""Where things live: the repository, the shared real data next to it, and the git-ignored work directory."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")

TRAINING_DIR = Path(__file__).resolve().parents[2]
REPO_ROOT = TRAINING_DIR.parent


def shared_data_dir() -> Path:
    """Real data shipped beside the repository (CI clones the repo next to shared/)."""
    return Path(os.environ.get("MSNODE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def data_workers() -> int:
    """Processes for data generation, NIfTI writing and nnU-Net's fingerprint and preprocessing
    (`MSNODE_DATA_WORKERS`, default 1: two CPU cores are already busy with training and augmentation)."""
    workers = int(os.environ.get("MSNODE_DATA_WORKERS", "1"))
    if workers < 1:
        raise ValueError(f"MSNODE_DATA_WORKERS must be at least 1, got {workers}")
    return workers


class WorkerPool:
    """`map` in order, in this process (one worker) or in `data_workers()` spawned processes; errors propagate."""

    def __init__(self, workers: int) -> None:
        self.executor = None
        if workers > 1:
            # Spawned, not forked: a forked child of a process that has touched CUDA or OpenMP can hang.
            self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, function: Callable[..., T], *iterables: Iterable[Any]) -> list[T]:
        if self.executor is None:
            return list(map(function, *iterables))
        return list(self.executor.map(function, *iterables))

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown()


def worker_pool() -> WorkerPool:
    return WorkerPool(data_workers())


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
