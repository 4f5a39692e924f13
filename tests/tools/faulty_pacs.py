"""A pynetdicom storage SCP standing for a PACS that misbehaves, one association at a time.

Usage:
  faulty_pacs.py PORT AE_TITLE RECEIPTS BEHAVIOUR...
      Each association the SCP accepts takes the next BEHAVIOUR; the last one repeats:
        refuse:STATUS    answer every C-STORE with STATUS (hex, e.g. A700) and keep nothing;
        abort-after:N    keep and answer N instances, then send an A-ABORT instead of answering
                         the next one (which is not kept);
        stall:SECONDS    keep the first instance but answer it only after SECONDS (a peer slower
                         than the sender's timeout), then keep and answer the rest at once;
        slow:SECONDS     keep every instance and answer each after SECONDS;
        accept           keep and answer every instance at once.
      Every C-STORE is appended to RECEIPTS as one JSON line, flushed before it is answered:
        {"association": K, "behaviour": "...", "sop_class_uid": "...",
         "sop_instance_uid": "...", "kept": bool, "status": int or null}
      "kept" means the PACS holds the instance after this request, whether or not its answer
      reached the sender. Prints "listening" on stdout once the port is open.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from pynetdicom import AE, AllStoragePresentationContexts, evt


class FaultyPacs:
    def __init__(self, receipts: Path, plan: list[str]) -> None:
        self.plan = plan
        self.receipts: TextIO = open(receipts, "a", encoding="ascii")
        self.lock = threading.Lock()
        # Per association (by id): its number, its behaviour and how many C-STOREs it has seen.
        self.associations: dict[int, dict[str, Any]] = {}

    def on_established(self, event: evt.Event) -> None:
        with self.lock:
            number = len(self.associations) + 1
            behaviour = self.plan[min(number, len(self.plan)) - 1]
            self.associations[id(event.assoc)] = {"number": number, "behaviour": behaviour, "seen": 0}

    def record(self, state: dict[str, Any], event: evt.Event, kept: bool, status: int | None) -> None:
        with self.lock:
            self.receipts.write(json.dumps({
                "association": state["number"],
                "behaviour": state["behaviour"],
                "sop_class_uid": str(event.request.AffectedSOPClassUID),
                "sop_instance_uid": str(event.request.AffectedSOPInstanceUID),
                "kept": kept,
                "status": status,
            }) + "\n")
            self.receipts.flush()

    def on_store(self, event: evt.Event) -> int:
        with self.lock:
            state = self.associations[id(event.assoc)]
            state["seen"] += 1
            seen = state["seen"]
        kind, _, value = state["behaviour"].partition(":")
        if kind == "refuse":
            status = int(value, 16)
            self.record(state, event, kept=False, status=status)
            return status
        if kind == "abort-after" and seen > int(value):
            self.record(state, event, kept=False, status=None)
            event.assoc.abort()
            return 0xA700
        self.record(state, event, kept=True, status=0)
        if kind == "slow" or (kind == "stall" and seen == 1):
            time.sleep(float(value))
        return 0x0000


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    port, ae_title, receipts, plan = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
    pacs = FaultyPacs(receipts, plan)
    ae = AE(ae_title=ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.maximum_associations = 4
    handlers = [(evt.EVT_ESTABLISHED, pacs.on_established), (evt.EVT_C_STORE, pacs.on_store)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    print("listening", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
