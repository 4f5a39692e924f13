"""A pynetdicom peer for msnode's tests: store files as they are on disk, or hold an association open.

Usage:
  dicom_peer.py store HOST PORT CALLING CALLED [--success-log FILE] FILE...
      One association; each file is sent as-is (its data set bytes, in its own transfer syntax).
      Prints a JSON list of {"file", "status"}; status is null when no response came.
      With --success-log, the SOP Instance UID of each instance answered with Success is appended
      to FILE and flushed before the next one is sent.
  dicom_peer.py hold HOST PORT CALLING CALLED SECONDS
      Associate, send nothing for SECONDS, then print {"established_after": bool}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def file_identity(path: Path) -> tuple[str, str, str]:
    meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
    return (
        str(meta.MediaStorageSOPClassUID),
        str(meta.MediaStorageSOPInstanceUID),
        str(meta.TransferSyntaxUID),
    )


def store(args: argparse.Namespace) -> int:
    # Send the data set bytes exactly as they are in the file, never decoded and re-encoded.
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=args.calling)
    ae.network_timeout = 30
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    files = [Path(f) for f in args.files]
    contexts: dict[str, set[str]] = {}
    for path in files:
        sop_class, _, ts = file_identity(path)
        contexts.setdefault(sop_class, set()).add(ts)
    for sop_class, syntaxes in contexts.items():
        for ts in sorted(syntaxes):
            ae.add_requested_context(sop_class, ts)
    assoc = ae.associate(args.host, args.port, ae_title=args.called)
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}))
        return 2
    log = open(args.success_log, "a", encoding="ascii") if args.success_log else None
    results = []
    for path in files:
        # A path is sent as-is: pynetdicom streams the data set bytes without decoding them.
        status = assoc.send_c_store(path)
        code = int(status.Status) if status and "Status" in status else None
        results.append({"file": str(path), "status": code,
                        "comment": str(status.get("ErrorComment", "")) if status else ""})
        if log and code == 0:
            log.write(file_identity(path)[1] + "\n")
            log.flush()
        if not assoc.is_established:
            break
    if assoc.is_established:
        assoc.release()
    if log:
        log.close()
    print(json.dumps(results))
    return 0


def hold(args: argparse.Namespace) -> int:
    ae = AE(ae_title=args.calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate(args.host, args.port, ae_title=args.called)
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}))
        return 2
    time.sleep(args.seconds)
    established = assoc.is_established
    if established:
        assoc.release()
    print(json.dumps({"established_after": established}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("store", "hold"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("calling")
        p.add_argument("called")
        if name == "store":
            p.add_argument("--success-log")
            p.add_argument("files", nargs="+")
        else:
            p.add_argument("seconds", type=float)
    args = parser.parse_args()
    return store(args) if args.command == "store" else hold(args)


if __name__ == "__main__":
    sys.exit(main())
