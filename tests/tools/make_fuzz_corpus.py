"""Write the seed corpus of msnode's fuzz targets (`fuzz/corpus/<target>/`), from real files.

Usage: make_fuzz_corpus.py SHARED_DATA_DIR OUT_DIR

Seeds:
  command_set       DIMSE command sets msnode receives and sends (C-ECHO/STORE/FIND/MOVE/GET).
  query_identifier  study and series level identifiers (first byte: 0 implicit, 1 explicit VR).
  association_pdu   an A-ASSOCIATE-RQ, a P-DATA-TF carrying a command, A-RELEASE-RQ, A-ABORT.
  stored_instance   a real GE MR slice (dcm_qa_nih) as a C-STORE data set, with the SOP Instance
                    UID the target expects; first byte 0 explicit, 1 implicit, 2 deflated.
  series_volume     three slices of that GE series, and one Siemens mosaic, as whole files.
The output is deterministic: the same input files give the same seeds.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dsutils import encode

SEED_INSTANCE_UID = "2.25.268623980968786058706813692519717064409"  # msnode::fuzzing::SEED_INSTANCE_UID
FILE_SEPARATOR = b"\nMSNODE-FUZZ-NEXT-FILE\n"  # msnode::fuzzing::FILE_SEPARATOR
MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"


def command(**fields: object) -> bytes:
    ds = Dataset()
    for key, value in fields.items():
        setattr(ds, key, value)
    encoded = encode(ds, True, True)
    assert encoded is not None
    return encoded


def commands() -> dict[str, bytes]:
    return {
        "echo": command(AffectedSOPClassUID="1.2.840.10008.1.1", CommandField=0x0030,
                        MessageID=1, CommandDataSetType=0x0101),
        "store": command(AffectedSOPClassUID=MR, CommandField=0x0001, MessageID=2, Priority=0,
                         CommandDataSetType=0x0000, AffectedSOPInstanceUID=SEED_INSTANCE_UID,
                         MoveOriginatorApplicationEntityTitle="PACS",
                         MoveOriginatorMessageID=7),
        "store-response": command(AffectedSOPClassUID=MR, CommandField=0x8001,
                                  MessageIDBeingRespondedTo=2, CommandDataSetType=0x0101,
                                  Status=0xA700, ErrorComment="out of resources",
                                  AffectedSOPInstanceUID=SEED_INSTANCE_UID),
        "find": command(AffectedSOPClassUID=STUDY_FIND, CommandField=0x0020, MessageID=3,
                        Priority=0, CommandDataSetType=0x0000),
        "move": command(AffectedSOPClassUID=STUDY_MOVE, CommandField=0x0021, MessageID=4,
                        Priority=0, CommandDataSetType=0x0000, MoveDestination="MSNODE"),
        "get-response": command(AffectedSOPClassUID=STUDY_GET, CommandField=0x8010,
                                MessageIDBeingRespondedTo=5, CommandDataSetType=0x0101,
                                Status=0xFF00, NumberOfRemainingSuboperations=3,
                                NumberOfCompletedSuboperations=1,
                                NumberOfFailedSuboperations=0,
                                NumberOfWarningSuboperations=0),
    }


def identifier(level: str, implicit: bool) -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.PatientID = "FUZZ-1"
    ds.StudyInstanceUID = "1.2.3.4" if level == "SERIES" else ""
    ds.StudyDate = "-20100623"
    ds.ModalitiesInStudy = "MR"
    if level == "SERIES":
        ds.SeriesInstanceUID = ""
        ds.SeriesDescription = "*FLAIR*"
        ds.Modality = "MR"
    encoded = encode(ds, implicit, True)
    assert encoded is not None
    return bytes([0 if implicit else 1]) + encoded


def item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def association_request() -> bytes:
    context = item(0x30, MR.encode()) + item(0x40, b"1.2.840.10008.1.2.1") + item(0x40, b"1.2.840.10008.1.2")
    user = item(0x51, struct.pack(">I", 16384)) + item(0x52, b"2.25.266657200200615317207891857678802307883")
    body = (struct.pack(">HH", 1, 0) + b"MSNODE".ljust(16) + b"STORESCU".ljust(16) + bytes(32)
            + item(0x10, b"1.2.840.10008.3.1.1.1")
            + item(0x20, struct.pack(">BBBB", 1, 0, 0, 0) + context)
            + item(0x50, user))
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def pdata(context_id: int, payload: bytes, command_fragment: bool, last: bool) -> bytes:
    header = (1 if command_fragment else 0) | (2 if last else 0)
    value = struct.pack(">IBB", len(payload) + 2, context_id, header) + payload
    return struct.pack(">BBI", 0x04, 0, len(value)) + value


def data_set_bytes(path: Path, implicit: bool) -> bytes:
    ds = dcmread(path)
    ds.SOPInstanceUID = SEED_INSTANCE_UID
    ds.SOPClassUID = MR
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = implicit
    buffer.is_little_endian = True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def main() -> int:
    shared, out = Path(sys.argv[1]), Path(sys.argv[2])
    qa = shared / "dicom/dcm_qa_nih/In"
    ge = sorted((qa / "20180918GE/mr_0005").glob("*.dcm"))[:3]
    siemens = sorted((qa / "20180918Si/mr_0003").glob("*.dcm"))[0]
    seeds: dict[str, dict[str, bytes]] = {
        "command_set": commands(),
        "query_identifier": {
            "study-implicit": identifier("STUDY", True),
            "series-explicit": identifier("SERIES", False),
        },
        "association_pdu": {
            "associate-rq": association_request(),
            "p-data-command": pdata(1, commands()["store"], True, True),
            "release-rq": struct.pack(">BBI", 0x05, 0, 4) + bytes(4),
            "abort": struct.pack(">BBI", 0x07, 0, 4) + bytes([0, 0, 2, 0]),
        },
        "stored_instance": {
            "ge-explicit": b"\x00" + data_set_bytes(ge[0], False),
            "ge-implicit": b"\x01" + data_set_bytes(ge[0], True),
            "ge-deflated": b"\x02" + zlib.compress(data_set_bytes(ge[0], False), 9)[2:-4],
        },
        "series_volume": {
            "ge-three-slices": FILE_SEPARATOR.join(p.read_bytes() for p in ge),
            "siemens-mosaic": siemens.read_bytes(),
        },
    }
    for target, files in seeds.items():
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
