"""Ingest benchmark: the same files, sent by DCMTK storescu (TCP_NODELAY=1), to msnode (durable: fsync +
rename + directory fsync + SQLite commit before each Success), to Orthanc (Debian's package,
`SyncStorageArea` true: the PACS-side tool a site would pick instead) and to DCMTK storescp (which
never fsyncs and keeps no index), in one run, interleaved so that all see the same machine state.

Data sets: MR slices of about 28 KB (116 x 116), 216 KB (328 x 328) and 2 MB (1024 x 1024), 16 bit,
each sent over 1, 4 and 16 concurrent associations (files dealt round-robin to the senders).
Prints instances/s for every receiver, msnode's ratio to Orthanc and to storescp, and msnode's ratio to
the durable floor: the same files written by this script with nothing else going on, each one
fsynced before it has its name (written unnamed with O_TMPFILE in its folder, then linked, as msnode
does), the folder fsynced, and one SQLite row committed (WAL, synchronous=FULL), one after the other.
The same with the file written elsewhere and renamed into place (the usual way; the rename is meant to
cost ext4 one more journal commit, which this disk shows only at times) is printed as `rename floor`.
One association waits for each answer, so a receiver that makes every instance durable on its own
cannot beat the floor there; with several associations, work shared between instances (one commit,
one directory fsync for many) can.

Usage: .venv/bin/python benches/ingest.py [--msnode target/release/msnode] [--repeat 2] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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


def link_unnamed(fd: int, target: Path) -> None:
    """linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N: gives an O_TMPFILE file its name (os.link cannot)."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, at_symlink_follow = -100, 0x400
    if libc.linkat(at_fdcwd, f"/proc/self/fd/{fd}".encode(), at_fdcwd, str(target).encode(), at_symlink_follow):
        raise OSError(ctypes.get_errno(), "linkat", str(target))


def durable_floor(files: list[Path], work: Path, by_rename: bool) -> float:
    """Seconds for the sync work alone, one file after the other: each file's bytes written and
    fsynced before it has its name, the name made durable by a directory fsync, one SQLite row
    committed (WAL, synchronous=FULL). `by_rename`: written in a scratch folder and renamed into
    place; else written unnamed (O_TMPFILE) in its folder and linked, as msnode does (meant to
    save ext4 a journal commit)."""
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
        target = placed / f"{n}.dcm"
        if by_rename:
            part = incoming / f"{n}.part"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.write(fd, payload)
            os.fsync(fd)
            os.close(fd)
            os.rename(part, target)
        else:
            fd = os.open(placed, os.O_TMPFILE | os.O_WRONLY, 0o644)
            os.write(fd, payload)
            os.fsync(fd)
            link_unnamed(fd, target)
            os.close(fd)
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


def orthanc_count(http_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=10) as answer:
        return int(json.load(answer)["CountInstances"])


def run_orthanc(files: list[Path], work: Path, associations: int) -> float:
    """Orthanc with a fresh storage and index, storing durably (SyncStorageArea), as many DICOM
    threads as there are associations (its default is 4), no plugins."""
    port, http_port = free_port(), free_port()
    root = work / "orthanc"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    config = root / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
        "SyncStorageArea": True, "StorageCompression": False, "Plugins": [],
        "DicomThreadsCount": max(4, associations), "OverwriteInstances": True,
    }))
    env = dict(os.environ, TCP_NODELAY="1")
    process = subprocess.Popen(["Orthanc", str(config)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, process)
        wait_listening(http_port, process)
        elapsed = send(port, "ORTHANC", files, associations)
        if orthanc_count(http_port) != len(files):
            raise RuntimeError("Orthanc did not store every instance")
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
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the 216 KB set alone, 1 and 4 associations")
    args = parser.parse_args()
    if not args.msnode.is_file():
        print(f"{args.msnode} is missing: cargo build --release", file=sys.stderr)
        return 1
    for tool in ("storescu", "storescp", "Orthanc"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: make setup", file=sys.stderr)
            return 1
    # (files, matrix): about 28 KB, 216 KB and 2 MB a file.
    sets = {"28 KB": (1000, 116), "216 KB": (500, 328), "2 MB": (100, 1024)}
    fan_out = (1, 4, 16)
    if args.quick:
        sets, fan_out = {"216 KB": sets["216 KB"]}, (1, 4)
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        work = Path(tmp)
        print(f"{'files':<7} {'assoc':>5} {'msnode':>8} {'Orthanc':>8} {'storescp':>9} {'floor':>7} {'rename floor':>13}"
              f" {'/Orthanc':>9} {'/storescp':>10} {'/floor':>7}   (instances/s, median of {args.repeat})")
        for name, (count, size) in sets.items():
            series = work / f"series-{size}"
            subprocess.run([sys.executable, str(GENERATOR), str(series), "--slices", str(count),
                            "--size", str(size)], check=True)
            files = sorted(series.iterdir())
            for associations in fan_out:
                times: dict[str, list[float]] = {
                    "msnode": [], "orthanc": [], "storescp": [], "floor": [], "rename floor": []}
                for _ in range(args.repeat):
                    times["msnode"].append(run_msnode(args.msnode, files, work, associations))
                    times["orthanc"].append(run_orthanc(files, work, associations))
                    times["storescp"].append(run_storescp(files, work, associations))
                    times["floor"].append(durable_floor(files, work, by_rename=False))
                    times["rename floor"].append(durable_floor(files, work, by_rename=True))
                rate = {who: count / statistics.median(t) for who, t in times.items()}
                print(f"{name:<7} {associations:>5} {rate['msnode']:>8.0f} {rate['orthanc']:>8.0f}"
                      f" {rate['storescp']:>9.0f} {rate['floor']:>7.0f} {rate['rename floor']:>13.0f}"
                      f" {rate['msnode'] / rate['orthanc']:>8.2f}x {rate['msnode'] / rate['storescp']:>9.2f}x"
                      f" {rate['msnode'] / rate['floor']:>6.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
