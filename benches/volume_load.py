"""Volume load benchmark: the same 512 x 512 x 176 classic MR series (16 bit, one file a slice) read
into a volume and written as uncompressed NIfTI by `msnode export-nifti` and by dcm2niix, in one run.

Prints wall time and peak resident memory (of the process itself, from wait4) for both, and the
ratios msnode / dcm2niix; each figure is the best of --repeat runs.

Usage: cargo build --release && .venv/bin/python benches/volume_load.py [--msnode target/release/msnode]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tests" / "tools" / "make_mr_series.py"


def measure(command: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one run of `command`."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{command[0]} failed ({process.returncode}): {process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--msnode", default=str(ROOT / "target" / "release" / "msnode"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slices", type=int, default=176)
    args = parser.parse_args()
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None or not Path(args.msnode).is_file():
        sys.exit("needs dcm2niix (apt) and a release build of msnode (cargo build --release)")

    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "series"
        subprocess.run(
            [sys.executable, str(GENERATOR), str(series), "--slices", str(args.slices), "--size", "512"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        out = Path(tmp) / "out"
        out.mkdir()
        runs = {
            "msnode": [args.msnode, "export-nifti", str(series), str(out / "msnode.nii")],
            "dcm2niix": [dcm2niix, "-z", "n", "-f", "dcm2niix", "-o", str(out), str(series)],
        }
        # Warm the page cache so that both read the files from memory.
        for path in series.iterdir():
            path.read_bytes()
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):
            for name, command in runs.items():
                for stale in out.iterdir():
                    stale.unlink()
                seconds, mib = measure(command)
                previous = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(previous[0], seconds), min(previous[1], mib))

    print(f"{args.slices} slices of 512 x 512 x 16 bit, best of {args.repeat}, {os.cpu_count()} CPU(s)")
    for name, (seconds, mib) in best.items():
        print(f"{name:>9}: {seconds:6.3f} s  peak {mib:7.1f} MiB")
    (ms, mm), (ds, dm) = best["msnode"], best["dcm2niix"]
    print(f"    ratio: time {ms / ds:.2f}x  memory {mm / dm:.2f}x  (msnode / dcm2niix)")


if __name__ == "__main__":
    main()
