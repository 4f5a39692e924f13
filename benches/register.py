"""Registration benchmark: msnode's rigid registration against SimpleITK's on the same real
longitudinal pairs (Lesjak et al. 2016, CC-BY: ../shared/data/lesjak-longitudinal), in one run.

SimpleITK: ImageRegistrationMethod, Mattes mutual information (50 bins, 20 % random samples with a
fixed seed), 3-level pyramid (shrink 4, 2, 1; smoothing 2, 1, 0 mm), Euler3D rigid transform
initialised on the image centres, regular-step gradient descent with scales from physical shift,
linear interpolation. msnode: `msnode register` (release build; NCC, levels of 6, 3, 1.5 mm and the
images' own in-plane voxels, rigid), as a user runs it, reading both NIfTI files and writing the
aligned prior and its transform; the speed ratio and the accuracy comparison are rigid against
rigid. Also shown, outside the totals: `msnode register --affine`, and the reference mapping itself
(affine: the dataset's transforms scale by up to 1 % between visits, which rigid cannot follow).

Accuracy for both: mean displacement (mm) from the dataset's own prior-to-current mapping over the
expert brain mask, and the correlation of the aligned prior with the current scan inside that
mask. Time: wall seconds, best of --repeat (SimpleITK: reading and registration; msnode: the
whole command including resampling and writing the aligned image).

Usage: cargo build --release && .venv/bin/python benches/register.py [--msnode target/release/msnode]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "lesjak-longitudinal"


def sitk_register(fixed_path: Path, moving_path: Path) -> sitk.Transform:
    fixed = sitk.ReadImage(str(fixed_path), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(moving_path), sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed=1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=200, gradientMagnitudeTolerance=1e-8
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def msnode_register(
    binary: str, fixed_path: Path, moving_path: Path, out: Path, affine: bool = False
) -> sitk.Transform:
    command = [binary, "register", "--fixed", str(fixed_path), "--moving", str(moving_path), "--out", str(out)]
    if affine:
        command.append("--affine")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"msnode register failed: {result.stderr}")
    return sitk.ReadTransform(str(out.with_name("aligned.tfm")))


def timed(run, repeat: int):
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - started)
    return best, value


def reference_mapping(patient: Path) -> sitk.Transform:
    """The dataset's own prior-to-current mapping: current -> common space -> prior."""
    to_prior = sitk.ReadTransform(str(patient / "study1_FLAIR_to_common_space.txt"))
    to_current = sitk.ReadTransform(str(patient / "study2_FLAIR_to_common_space.txt"))
    return sitk.CompositeTransform([to_prior, to_current.GetInverse()])


def evaluate(patient: Path, transform: sitk.Transform) -> tuple[float, float]:
    """Mean displacement from the reference mapping over the expert brain, and the correlation of
    the aligned prior with the current scan inside that brain (on the current grid)."""
    to_prior = sitk.ReadTransform(str(patient / "study1_FLAIR_to_common_space.txt"))
    to_current = sitk.ReadTransform(str(patient / "study2_FLAIR_to_common_space.txt"))
    brain = sitk.ReadImage(str(patient / "brainmask_common.nii.gz"))
    indices = np.argwhere(sitk.GetArrayFromImage(brain) > 0)[::7]
    errors = []
    for k, j, i in indices:
        c = brain.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))
        p = to_current.TransformPoint(c)
        ours = np.array(transform.TransformPoint(p))
        errors.append(np.linalg.norm(ours - np.array(to_prior.TransformPoint(c))))
    current = sitk.ReadImage(str(patient / "study2_FLAIR.nii.gz"), sitk.sitkFloat32)
    prior = sitk.ReadImage(str(patient / "study1_FLAIR.nii.gz"), sitk.sitkFloat32)
    mask = sitk.Resample(brain, current, to_current.GetInverse(), sitk.sitkNearestNeighbor, 0)
    aligned = sitk.Resample(prior, current, transform, sitk.sitkLinear, 0.0)
    inside = sitk.GetArrayFromImage(mask) > 0
    a = sitk.GetArrayFromImage(current)[inside]
    b = sitk.GetArrayFromImage(aligned)[inside]
    return float(np.mean(errors)), float(np.corrcoef(a, b)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--msnode", default=str(ROOT / "target" / "release" / "msnode"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not Path(args.msnode).is_file():
        sys.exit("needs a release build of msnode (cargo build --release)")
    print(f"SimpleITK {sitk.Version_VersionString()}, threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")
    header = f"{'pair':<10} {'tool':<10} {'seconds':>8} {'error mm':>9} {'brain r':>8}"
    print(header)
    totals = {"msnode": [0.0, 0.0], "SimpleITK": [0.0, 0.0]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["patient01", "patient03"]:
            patient = DATA / name
            fixed, moving = patient / "study2_FLAIR.nii.gz", patient / "study1_FLAIR.nii.gz"
            out = Path(tmp) / "aligned.nii.gz"
            runs = {
                "msnode": lambda: msnode_register(args.msnode, fixed, moving, out),
                "msnode-aff": lambda: msnode_register(args.msnode, fixed, moving, out, affine=True),
                "SimpleITK": lambda: sitk_register(fixed, moving),
            }
            for tool, run in runs.items():
                seconds, transform = timed(run, args.repeat)
                error, r = evaluate(patient, transform)
                if tool in totals:
                    totals[tool][0] += seconds
                    totals[tool][1] += error
                print(f"{name:<10} {tool:<10} {seconds:>8.2f} {error:>9.3f} {r:>8.4f}")
            error, r = evaluate(patient, reference_mapping(patient))
            print(f"{name:<10} {'reference':<10} {'':>8} {error:>9.3f} {r:>8.4f}")
    ours, theirs = totals["msnode"], totals["SimpleITK"]
    print(
        f"total: msnode {ours[0]:.2f} s, SimpleITK {theirs[0]:.2f} s: {theirs[0] / ours[0]:.1f}x faster; "
        f"mean error msnode {ours[1] / 2:.3f} mm, SimpleITK {theirs[1] / 2:.3f} mm"
    )


if __name__ == "__main__":
    main()
