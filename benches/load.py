"""Load test: many concurrent associations sending for minutes, then a check that every
acknowledged instance is on disk and indexed, with the server's memory and errors.

Half the senders are DCMTK storescu processes, each re-sending its own 256 x 256 series in a loop
(re-sent instances replace their earlier copy); the other half are pynetdicom processes, each
holding one association and sending instances with a new SOP Instance UID every time. The node runs
from the release binary with `max_associations` above the sender count.

Prints: instances acknowledged, instances/s, the server's peak and final RSS (sampled each second
and VmHWM), instances indexed, acknowledged-but-missing (must be 0), failed responses, and the
WARN/ERROR lines of the server's log.

Usage: .venv/bin/python benches/load.py [--msnode target/release/msnode] [--seconds 180]
       [--associations 50]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tests" / "tools" / "make_mr_series.py"
AE = "MSNODE"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def storescu_loop(port: int, files: list[Path], deadline: float) -> tuple[int, int]:
    """Re-send `files` until the deadline; returns (rounds that succeeded, rounds that failed)."""
    ok = failed = 0
    env = dict(os.environ, TCP_NODELAY="1")
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["storescu", "-aet", "STORESCU", "-aec", AE, "127.0.0.1", str(port), *map(str, files)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if result.returncode == 0:
            ok += 1
        else:
            failed += 1
    return ok, failed


def pynetdicom_loop(args: tuple[int, str, float, int]) -> tuple[list[str], int]:
    """One association; a new SOP Instance UID for each C-STORE until the deadline. Returns the
    UIDs answered Success and the count of other answers."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid
    from pynetdicom import AE as Entity

    port, template, deadline, worker = args
    ds = dcmread(template)
    ds.SeriesInstanceUID = generate_uid()
    entity = Entity(ae_title="PYNETDICOM")
    entity.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = entity.associate("127.0.0.1", port, ae_title=AE)
    acknowledged: list[str] = []
    failed = 0
    if not assoc.is_established:
        return acknowledged, 1
    number = 0
    while time.monotonic() < deadline and assoc.is_established:
        number += 1
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        status = assoc.send_c_store(ds)
        if status and status.get("Status") == 0:
            acknowledged.append(str(ds.SOPInstanceUID))
        else:
            failed += 1
    if assoc.is_established:
        assoc.release()
    return acknowledged, failed


def write_config(path: Path, port: int, data: Path, associations: int) -> None:
    path.write_text(f"""
[node]
ae_title = "{AE}"
bind = "127.0.0.1"
port = {port}
data_dir = "{data}"

[network]
max_associations = {associations + 8}

[admin]
bind = "127.0.0.1:{free_port()}"

[[peers]]
ae_title = "STORESCU"
host = "127.0.0.1"
port = 1
store_to_us = true

[[peers]]
ae_title = "PYNETDICOM"
host = "127.0.0.1"
port = 1
store_to_us = true

[analysis]
# Only ingest is under test: no series becomes a job while the senders run.
stable_series_timeout_s = 86400
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--msnode", default=str(ROOT / "target" / "release" / "msnode"))
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--associations", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="msnode-load-") as tmp:
        work = Path(tmp)
        data = work / "data"
        port = free_port()
        config = work / "msnode.toml"
        write_config(config, port, data, args.associations)
        storescu_senders = args.associations // 2
        pynetdicom_senders = args.associations - storescu_senders
        series = []
        for n in range(storescu_senders):
            folder = work / f"series-{n}"
            subprocess.run([sys.executable, str(GENERATOR), str(folder), "--slices", "20",
                            "--size", "256", "--seed", str(n)], check=True)
            series.append(sorted(folder.iterdir()))
        template = series[0][0]

        log = open(work / "serve.log", "w")
        server = subprocess.Popen([args.msnode, "--config", str(config), "serve"], stderr=log, stdout=log)
        deadline_start = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline_start or server.poll() is not None:
                    raise SystemExit("msnode did not start")
                time.sleep(0.1)
        base_rss = rss_kib(server.pid, "VmRSS")
        started = time.monotonic()
        deadline = started + args.seconds
        peak_sampled = 0
        with multiprocessing.Pool(pynetdicom_senders) as pool:
            pending = pool.map_async(pynetdicom_loop, [(port, str(template), deadline, i)
                                                      for i in range(pynetdicom_senders)])
            import concurrent.futures as futures
            with futures.ThreadPoolExecutor(storescu_senders) as threads:
                rounds = [threads.submit(storescu_loop, port, files, deadline) for files in series]
                while not all(r.done() for r in rounds) or not pending.ready():
                    peak_sampled = max(peak_sampled, rss_kib(server.pid, "VmRSS"))
                    time.sleep(1)
                storescu_results = [r.result() for r in rounds]
            pynetdicom_results = pending.get()
        elapsed = time.monotonic() - started
        peak = rss_kib(server.pid, "VmHWM")
        final = rss_kib(server.pid, "VmRSS")

        acknowledged = [uid for uids, _ in pynetdicom_results for uid in uids]
        pynetdicom_failed = sum(f for _, f in pynetdicom_results)
        storescu_ok = sum(ok for ok, _ in storescu_results)
        storescu_failed = sum(f for _, f in storescu_results)
        sent_by_storescu = storescu_ok * 20
        db = sqlite3.connect(data / "msnode.sqlite")
        rows = dict(db.execute("SELECT sop_instance_uid, file_path FROM instances"))
        db.close()
        missing = [uid for uid in acknowledged if uid not in rows or not (data / rows[uid]).is_file()]
        storescu_uids = []
        for files in series:
            from pydicom import dcmread
            storescu_uids.extend(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)
        missing_storescu = [u for u in storescu_uids if u not in rows or not (data / rows[u]).is_file()]
        server.terminate()
        server.wait(timeout=60)
        log.close()
        problems = [line for line in (work / "serve.log").read_text().splitlines()
                    if " WARN " in line or " ERROR " in line]

        total = len(acknowledged) + sent_by_storescu
        print(f"load: {args.associations} associations ({storescu_senders} storescu loops, "
              f"{pynetdicom_senders} pynetdicom), {elapsed:.0f} s")
        print(f"  acknowledged: {total} instances ({total / elapsed:.0f} inst/s): "
              f"{len(acknowledged)} new by pynetdicom, {sent_by_storescu} by storescu "
              f"({storescu_ok} rounds of 20, re-sent)")
        print(f"  failed: pynetdicom {pynetdicom_failed} responses, storescu {storescu_failed} rounds")
        print(f"  indexed: {len(rows)} instances; acknowledged but missing: {len(missing)} "
              f"(pynetdicom), {len(missing_storescu)} (storescu series)")
        print(f"  server RSS: {base_rss // 1024} MiB at start, peak {peak // 1024} MiB "
              f"(sampled {peak_sampled // 1024} MiB), {final // 1024} MiB at the end")
        print(f"  WARN/ERROR log lines: {len(problems)}")
        for line in problems[:10]:
            print("    " + line[:200])
        ok = not missing and not missing_storescu and pynetdicom_failed == 0 and storescu_failed == 0
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
