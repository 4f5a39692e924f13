"""Analysis scaling: `msnode analyze` against the input volume size and the thread count, each stage
timed (from `summary.json`) with the peak resident memory of the process, and nnU-Net v2's own
`nnUNetPredictor` on the same network input as the peer for the inference stage (models with an
nnU-Net checkpoint in `<model>/nnunet/` only).

Sizes are made from the real Lesjak pair in tests/data (patient01, 0.72 x 0.72 x 3 mm, CC-BY): as
acquired, and both visits resampled (B-spline) to finer grids, which is what a site with a
different protocol sends: in-plane x1.5 and, on top of that, half the slice spacing. The model grid
(the card's spacing) covers the same head each time, so the network's work stays about the same
while loading, registration and the outputs grow with the input.

Usage: .venv/bin/python benches/scaling.py [--msnode target/release/msnode] [--models models/realbg models/realbg]
       [--threads 1 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import SimpleITK as sitk

# The peak-memory runner benches/infer.py uses (this folder is on sys.path when the script runs).
from infer import peak_rss_mib as run_measured

ROOT = Path(__file__).resolve().parent.parent
PAIR = ROOT / "tests" / "data" / "lesjak-longitudinal" / "patient01"
PEER = ROOT / "tests" / "tools" / "nnunet_predict.py"
STAGES = ("load", "register", "preprocess", "infer", "lesions", "outputs", "total")
# (name, in-plane factor, slice factor): finer grids by these factors.
SIZES = (("as acquired", 1.0, 1.0), ("in-plane x1.5", 1.5, 1.0), ("x1.5, slices x2", 1.5, 2.0))


def finer(source: Path, target: Path, in_plane: float, slices: float) -> int:
    """Resample a NIfTI onto a grid finer by these factors (same field of view); its voxel count."""
    image = sitk.ReadImage(str(source), sitk.sitkFloat32)
    spacing = image.GetSpacing()
    size = image.GetSize()
    factors = (in_plane, in_plane, slices)
    new_spacing = [s / f for s, f in zip(spacing, factors)]
    new_size = [int(round(n * f)) for n, f in zip(size, factors)]
    # Voxel centres keep the field of view: the first centre moves by half the old minus half the new spacing.
    direction = image.GetDirection()
    shift = [(o - n) / 2 for o, n in zip(spacing, new_spacing)]
    origin = [image.GetOrigin()[r] - sum(direction[3 * r + c] * shift[c] for c in range(3)) for r in range(3)]
    resampled = sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkBSpline, origin, new_spacing, direction,
                              0.0, sitk.sitkFloat32)
    resampled = sitk.Cast(sitk.Clamp(resampled, lowerBound=0.0, upperBound=65535.0), sitk.sitkUInt16)
    sitk.WriteImage(resampled, str(target))
    return new_size[0] * new_size[1] * new_size[2]


def config_for(work: Path, model: Path, threads: int) -> Path:
    path = work / f"msnode-{model.name}-{threads}.toml"
    path.write_text(f'[node]\ndata_dir = "{work / "data"}"\n[model]\ndir = "{model.resolve()}"\n'
                    f'execution_provider = "cpu"\nintra_threads = {threads}\n')
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--msnode", type=Path, default=ROOT / "target" / "release" / "msnode")
    parser.add_argument("--models", type=Path, nargs="+", default=[ROOT / "models" / "realbg"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not args.msnode.is_file():
        print(f"{args.msnode} is missing: cargo build --release", file=sys.stderr)
        return 1
    libraries = glob.glob(str(ROOT / ".venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1"))
    if not libraries:
        print("the onnxruntime 1.31.1 wheel is missing from .venv: make setup", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = []
        for name, in_plane, slices in SIZES:
            folder = work / name.replace(" ", "_").replace(",", "")
            folder.mkdir()
            voxels = [finer(PAIR / f"study{k}_FLAIR.nii.gz", folder / f"study{k}.nii.gz", in_plane, slices)
                      for k in (1, 2)]
            pairs.append((name, folder, voxels[1]))
        print(f"pair {PAIR.name} (Lesjak, CC-BY); median of {args.repeat}; stages in s, peak RSS of the process")
        header = (f"{'model':<8} {'input':<16} {'voxels':>8} {'thr':>3} " + " ".join(f"{s:>8}" for s in STAGES)
                  + f" {'MiB':>6} {'nnU-Net infer s':>15} {'nnU-Net/msnode':>14}")
        print(header)
        for model in args.models:
            has_peer = (model / "nnunet").is_dir()
            for name, folder, voxels in pairs:
                for threads in args.threads:
                    env = dict(os.environ, ORT_DYLIB_PATH=libraries[0], RUST_LOG="warn",
                               OMP_NUM_THREADS=str(threads))
                    config = config_for(work, model, threads)
                    timings: dict[str, list[float]] = {s: [] for s in STAGES}
                    peaks = []
                    for n in range(args.repeat):
                        out = work / f"out-{model.name}-{threads}-{n}"
                        _, rss = run_measured(
                            [str(args.msnode), "--config", str(config), "analyze", "--current",
                             str(folder / "study2.nii.gz"), "--prior", str(folder / "study1.nii.gz"),
                             "--out", str(out)], env)
                        summary = json.loads((out / "summary.json").read_text())
                        for stage in STAGES:
                            timings[stage].append(summary["timings"][stage])
                        peaks.append(rss)
                    peer, ratio = "-", "-"
                    if has_peer:
                        inputs = work / f"inputs-{model.name}-{threads}"
                        stdout, _ = run_measured(
                            [str(args.msnode), "--config", str(config), "infer", "--current",
                             str(folder / "study2.nii.gz"), "--prior", str(folder / "study1.nii.gz"),
                             "--out", str(work / "p.nii.gz"), "--inputs-out", str(inputs)], env)
                        ours = json.loads(stdout)["timings"]["infer"]
                        # nnU-Net prints its banner first: the JSON is the last line.
                        theirs = statistics.median(
                            json.loads(run_measured([sys.executable, str(PEER), "--model-dir", str(model),
                                                     "--inputs", str(inputs), "--out", str(work / "peer.nii.gz"),
                                                     "--threads", str(threads)], env)[0].strip().splitlines()[-1])["predict_seconds"]
                            for _ in range(args.repeat))
                        peer, ratio = f"{theirs:.2f}", f"{theirs / ours:.2f}x"
                    medians = " ".join(f"{statistics.median(timings[s]):>8.2f}" for s in STAGES)
                    print(f"{model.name:<8} {name:<16} {voxels / 1e6:>7.1f}M {threads:>3} {medians} "
                          f"{statistics.median(peaks):>6.0f} {peer:>15} {ratio:>14}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
