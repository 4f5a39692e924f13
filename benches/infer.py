"""Inference benchmark: `msnode infer` (ONNX Runtime, CPU) against nnU-Net v2's own `nnUNetPredictor`
(PyTorch, CPU) on the same real Lesjak pair, the same weights (models/<name> and its nnunet/
checkpoint; for a quantised model, the nnunet/ checkpoint of the fp32 model its card names), the same input
channels, the same mirroring and 2 threads each, in one run.

For each mirroring setting it prints the median over --repeat runs of:
  - the network stage: msnode's sliding-window inference (`timings.infer` of its summary) against
    nnU-Net's predict_single_npy_array (crop, z-score, sliding window, back to the input grid);
  - the peak resident memory of each whole process (msnode also loads, registers and resamples
    both visits; the nnU-Net process also imports torch);
and the ratio nnU-Net / msnode for the network stage.

Usage: .venv/bin/python benches/infer.py [--msnode target/release/msnode] [--model models/realbg] [--repeat 3]
       [--mirroring off|on|both]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIR = ROOT / "tests" / "data" / "lesjak-longitudinal" / "patient01"
PEER = ROOT / "tests" / "tools" / "nnunet_predict.py"
THREADS = 2


def peak_rss_mib(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run `command`, returning its stdout and its own peak RSS (MiB) from wait4."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({process.returncode}):\n{err.read()}")
        return out.read(), usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--msnode", type=Path, default=ROOT / "target" / "release" / "msnode")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "realbg")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mirroring", choices=("off", "on", "both"), default="both",
                        help="test-time mirroring settings to run (on: 8 passes per tile, as nnU-Net's default)")
    args = parser.parse_args()
    # A quantised model (msnode-quantize) is compared with nnU-Net on the fp32 checkpoint it came from.
    card = json.loads((args.model / "model_card.json").read_text())
    source = card.get("quantization", {}).get("source_model")
    peer_model = args.model.parent / source if source else args.model
    if not args.msnode.is_file():
        print(f"{args.msnode} is missing: cargo build --release", file=sys.stderr)
        return 1
    libraries = glob.glob(str(ROOT / ".venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1"))
    if not libraries:
        print("the onnxruntime 1.31.1 wheel is missing from .venv: make setup", file=sys.stderr)
        return 1
    env = dict(os.environ, ORT_DYLIB_PATH=libraries[0], RUST_LOG="warn", OMP_NUM_THREADS=str(THREADS))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "msnode.toml"
        config.write_text(f'[node]\ndata_dir = "{work / "data"}"\n[model]\ndir = "{args.model.resolve()}"\n'
                          f'execution_provider = "cpu"\nintra_threads = {THREADS}\n')
        print(f"model {args.model.name} (nnU-Net: {peer_model.name}'s checkpoint); pair {PAIR.name}; {THREADS} threads "
              f"each; median of {args.repeat}")
        print(f"{'mirroring':<10} {'msnode s':>9} {'nnU-Net s':>10} {'nnU-Net/msnode':>15}"
              f" {'msnode MiB':>11} {'nnU-Net MiB':>12}")
        for mirror in {"off": (False,), "on": (True,), "both": (False, True)}[args.mirroring]:
            flag = ["--mirror"] if mirror else []
            ours, theirs, ours_rss, theirs_rss = [], [], [], []
            for n in range(args.repeat):
                inputs = work / f"inputs-{mirror}-{n}"
                stdout, rss = peak_rss_mib(
                    [str(args.msnode), "--config", str(config), "infer", "--current",
                     str(PAIR / "study2_FLAIR.nii.gz"), "--prior", str(PAIR / "study1_FLAIR.nii.gz"),
                     "--out", str(work / "probability.nii.gz"), "--inputs-out", str(inputs), *flag], env)
                ours.append(json.loads(stdout)["timings"]["infer"])
                ours_rss.append(rss)
                stdout, rss = peak_rss_mib(
                    [sys.executable, str(PEER), "--model-dir", str(peer_model), "--inputs", str(inputs),
                     "--out", str(work / "nnunet.nii.gz"), "--threads", str(THREADS), *flag], env)
                theirs.append(json.loads(stdout.strip().splitlines()[-1])["predict_seconds"])
                theirs_rss.append(rss)
            ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
            print(f"{'on' if mirror else 'off':<10} {ours_s:>9.2f} {theirs_s:>10.2f} {theirs_s / ours_s:>14.2f}x"
                  f" {statistics.median(ours_rss):>11.0f} {statistics.median(theirs_rss):>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
