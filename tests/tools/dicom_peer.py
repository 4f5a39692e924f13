"""A pynetdicom peer for msnode's tests: store files as they are on disk, or hold an association open.

Usage:
  dicom_peer.py store HOST PORT CALLING CALLED [--success-log FILE] [--pause SECONDS] FILE...
      One association; each file is sent as-is (its data set bytes, in its own transfer syntax),
      the first one SECONDS after the association is established (--pause, default 0).
      Prints a JSON list of {"file", "status"}; status is null when no response came.
      With --success-log, the SOP Instance UID of each instance answered with Success is appended
      to FILE and flushed before the next one is sent.
  dicom_peer.py hold HOST PORT CALLING CALLED SECONDS
      Associate, send nothing for SECONDS, then print {"established_after": bool}.
  dicom_peer.py raw HOST PORT CALLING CALLED SCENARIO
      Associate for MR Image Storage, then break the protocol with hand-made P-DATA-TF PDUs:
        endless-command   command fragments that never end (16 MiB in 16 KiB pieces);
        interleaved-store a C-STORE request, 9 MiB of its data set (more than is held in memory),
                          then a second C-STORE request before the data set ended;
        nested-command    a complete command set holding 3000 nested sequences;
        held-store        a C-STORE request and 127 x 64 KiB of its data set (just under what is
                          held in memory), then nothing for 8 s, then an A-ABORT.
      Prints {"aborted_by_peer": bool, "sent_bytes": int}.
  dicom_peer.py propose HOST PORT CALLING CALLED [--abort] SOP_CLASS...
      Propose one context per SOP class (Explicit VR Little Endian). When accepted, send an
      A-ABORT (--abort) or release. Prints {"established": bool, "rejected": bool,
      "result": int, "source": int, "reason": int} (the last three from an A-ASSOCIATE-RJ).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, _config
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]


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
    time.sleep(args.pause)
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


def pdata(context_id: int, payload: bytes, command: bool, last: bool) -> bytes:
    """One P-DATA-TF PDU holding one presentation data value."""
    header = (1 if command else 0) | (2 if last else 0)
    item = struct.pack(">IBB", len(payload) + 2, context_id, header) + payload
    return struct.pack(">BBI", 0x04, 0, len(item)) + item


def store_request(message_id: int, sop_instance_uid: str) -> bytes:
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    command = Dataset()
    command.AffectedSOPClassUID = MRImageStorage
    command.CommandField = 0x0001
    command.MessageID = message_id
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = sop_instance_uid
    encoded = encode(command, True, True)
    assert encoded is not None
    return encoded


def raw(args: argparse.Namespace) -> int:
    ae = AE(ae_title=args.calling)
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(args.host, args.port, ae_title=args.called)
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}))
        return 2
    context_id = assoc.accepted_contexts[0].context_id
    sock = assoc.dul.socket
    assert sock is not None
    sent = 0
    pdus: list[bytes] = []
    if args.scenario == "endless-command":
        pdus = [pdata(context_id, b"\0" * 16384, True, False) for _ in range(1024)]
    elif args.scenario == "held-store":
        pdus.append(pdata(context_id, store_request(1, "1.2.3.4.5.6.1"), True, True))
        pdus.extend(pdata(context_id, b"\x55" * 65536, False, False) for _ in range(127))
    elif args.scenario == "nested-command":
        level = struct.pack("<HHI", 0x0000, 0x9999, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        pdus = [pdata(context_id, store_request(1, "1.2.3.4.5.6.1") + level * 3000, True, True)]
    else:
        pdus.append(pdata(context_id, store_request(1, "1.2.3.4.5.6.1"), True, True))
        pdus.extend(pdata(context_id, b"\x55" * 65536, False, False) for _ in range(144))
        pdus.append(pdata(context_id, store_request(2, "1.2.3.4.5.6.2"), True, True))
    for pdu in pdus:
        if assoc.is_aborted or not assoc.is_established:
            break
        try:
            sock.send(pdu)
        except OSError:
            break
        sent += len(pdu)
    if args.scenario == "held-store":
        time.sleep(8)
        held = assoc.is_established
        assoc.abort()
        print(json.dumps({"aborted_by_peer": not held, "sent_bytes": sent}))
        return 0
    deadline = time.monotonic() + 30
    while assoc.is_established and not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps({"aborted_by_peer": bool(assoc.is_aborted), "sent_bytes": sent}))
    return 0


def propose(args: argparse.Namespace) -> int:
    from pynetdicom import evt

    answer: dict[str, int] = {}

    def on_acse(event: evt.Event) -> None:
        primitive = event.primitive
        if type(primitive).__name__ == "A_ASSOCIATE" and primitive.result not in (None, 0x00):
            answer.update(result=primitive.result, source=primitive.result_source,
                          reason=primitive.diagnostic)

    ae = AE(ae_title=args.calling)
    for sop_class in args.sop_classes:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate(args.host, args.port, ae_title=args.called,
                         evt_handlers=[(evt.EVT_ACSE_RECV, on_acse)])
    established = assoc.is_established
    if established:
        if args.abort:
            assoc.abort()
        else:
            assoc.release()
    print(json.dumps({"established": established, "rejected": bool(assoc.is_rejected), **answer}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("store", "hold", "raw", "propose"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("calling")
        p.add_argument("called")
        if name == "store":
            p.add_argument("--success-log")
            p.add_argument("--pause", type=float, default=0.0)
            p.add_argument("files", nargs="+")
        elif name == "hold":
            p.add_argument("seconds", type=float)
        elif name == "propose":
            p.add_argument("--abort", action="store_true")
            p.add_argument("sop_classes", nargs="+")
        else:
            p.add_argument("scenario", choices=["endless-command", "interleaved-store", "nested-command", "held-store"])
    args = parser.parse_args()
    return {"store": store, "hold": hold, "raw": raw, "propose": propose}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
