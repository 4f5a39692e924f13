"""Ingest benchmark: the same files, sent by DCMTK storescu (TCP_NODELAY=1), to msnode (durable: fsync +
rename + SQLite commit before each Success) and to DCMTK storescp (which never fsyncs), in one run.

Prints instances/s for both receivers and their ratio, for two data sets:
  500 MR slices of 256 x 256 x 16 bit (about 130 KB each) and 200 of 512 x 512 (about 520 KB),
sent over one association and over 4 concurrent ones (storescp then runs with --fork).

It also measures the durable floor on the same disk: the same files written by this script with
nothing else going on, each one fsynced, renamed into a directory that is fsynced, and one SQLite
row committed (WAL, synchronous=FULL). One association waits for one instance at a time, so no
receiver that is durable per instance can beat that rate there.

Usage: .venv/bin/python benches/ingest.py [--msnode target/release/msnode] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tests" / "tools" / "make_mr_series.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("receiver did not start")


def send(port: int, called: str, files: list[Path], associations: int) -> float:
    """Send `files` split over `associations` concurrent storescu processes; returns seconds."""
    env = dict(os.environ, TCP_NODELAY="1")
    shares = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    senders = [subprocess.Popen(
        ["storescu", "-aet", "STORESCU", "-aec", called, "127.0.0.1", str(port), *map(str, share)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) for share in shares]
    codes = [sender.wait() for sender in senders]
    elapsed = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"storescu failed: exit codes {codes}")
    return elapsed


def durable_floor(files: list[Path], work: Path) -> float:
    """Seconds for the fsync work alone: per file write + fsync, rename + directory fsync, and a
    one-row SQLite commit (WAL, synchronous=FULL), one file after the other."""
    floor = work / "floor"
    shutil.rmtree(floor, ignore_errors=True)
    incoming, placed = floor / "incoming", floor / "placed"
    incoming.mkdir(parents=True)
    placed.mkdir()
    payloads = [f.read_bytes() for f in files]
    db = sqlite3.connect(floor / "index.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE instances (path TEXT PRIMARY KEY, size INTEGER)")
    placed_fd = os.open(placed, os.O_RDONLY)
    started = time.perf_counter()
    for n, payload in enumerate(payloads):
        part = incoming / f"{n}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, payload)
        os.fsync(fd)
        os.close(fd)
        os.rename(part, placed / f"{n}.dcm")
        os.fsync(placed_fd)
        db.execute("INSERT INTO instances VALUES (?, ?)", (f"{n}.dcm", len(payload)))
    elapsed = time.perf_counter() - started
    os.close(placed_fd)
    db.close()
    return elapsed


def run_msnode(binary: Path, files: list[Path], work: Path, associations: int) -> float:
    port = free_port()
    data = work / "msnode-data"
    shutil.rmtree(data, ignore_errors=True)
    config = work / "msnode.toml"
    config.write_text(
        f'[node]\nae_title = "MSNODE"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "{data}"\n'
        f'[admin]\nbind = "127.0.0.1:{free_port()}"\n'
        '[logging]\nlevel = "warn"\n'
        '[[peers]]\nae_title = "STORESCU"\nhost = "127.0.0.1"\nport = 1\nstore_to_us = true\n'
    )
    process = subprocess.Popen([str(binary), "--config", str(config), "serve"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, process)
        elapsed = send(port, "MSNODE", files, associations)
        count = subprocess.run([str(binary), "--config", str(config), "status", "--json"],
                               check=True, capture_output=True, text=True).stdout
        if f'"instances": {len(files)}' not in count:
            raise RuntimeError(f"msnode did not index every instance: {count}")
        return elapsed
    finally:
        process.terminate()
        process.wait()


def run_storescp(files: list[Path], work: Path, associations: int) -> float:
    port = free_port()
    out = work / "storescp-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = dict(os.environ, TCP_NODELAY="1")
    # Without --fork storescp serves one association at a time.
    fork = ["--fork"] if associations > 1 else []
    process = subprocess.Popen(["storescp", *fork, "-aet", "STORESCP", "-od", str(out), str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, process)
        elapsed = send(port, "STORESCP", files, associations)
        if len(list(out.iterdir())) != len(files):
            raise RuntimeError("storescp did not write every instance")
        return elapsed
    finally:
        process.terminate()
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--msnode", type=Path, default=ROOT / "target" / "release" / "msnode")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.msnode.is_file():
        print(f"{args.msnode} is missing: cargo build --release", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        work = Path(tmp)
        sets = {"500 x 130 KB": (500, 256), "200 x 520 KB": (200, 512)}
        print(f"{'data set':<14} {'assoc':>5} {'msnode inst/s':>14} {'storescp inst/s':>16} {'ratio':>7}"
              f" {'durable floor':>14} {'msnode/floor':>13}")
        for name, (count, size) in sets.items():
            series = work / f"series-{size}"
            subprocess.run([sys.executable, str(GENERATOR), str(series), "--slices", str(count),
                            "--size", str(size)], check=True)
            files = sorted(series.iterdir())
            mean_kb = statistics.mean(f.stat().st_size for f in files) / 1000
            for associations in (1, 4):
                msnode_times, storescp_times, floor_times = [], [], []
                # Interleaved so that all three see the same machine state.
                for _ in range(args.repeat):
                    msnode_times.append(run_msnode(args.msnode, files, work, associations))
                    storescp_times.append(run_storescp(files, work, associations))
                    floor_times.append(durable_floor(files, work))
                msnode_rate = count / statistics.median(msnode_times)
                storescp_rate = count / statistics.median(storescp_times)
                floor_rate = count / statistics.median(floor_times)
                print(f"{name:<14} {associations:>5} {msnode_rate:>14.0f} {storescp_rate:>16.0f}"
                      f" {msnode_rate / storescp_rate:>6.2f}x {floor_rate:>14.0f} {msnode_rate / floor_rate:>12.2f}x"
                      f"   (median of {args.repeat}; files {mean_kb:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
