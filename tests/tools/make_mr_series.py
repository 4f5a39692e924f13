"""Write a synthetic classic MR Image Storage series (a smooth head-like phantom plus noise).

For ingest tests and benchmarks: realistic sizes (256 x 256 x 16 bit is about 130 KB a slice,
512 x 512 about 520 KB), valid MR Image IOD headers, no patient data.

Usage: make_mr_series.py OUTDIR --slices N --size 256 [--seed S] [--patient-id ID]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def phantom_slice(size: int, z: float, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    radius = np.sqrt(1 - min(z * z, 0.95))
    head = ((x / (0.8 * radius)) ** 2 + (y / (0.95 * radius)) ** 2) < 1
    brain = ((x / (0.7 * radius)) ** 2 + (y / (0.85 * radius)) ** 2) < 1
    image = 300.0 * head + 500.0 * brain + rng.normal(0, 20, (size, size))
    return np.clip(image, 0, 4095).astype(np.uint16)


def write_series(out: Path, slices: int, size: int, seed: int, patient_id: str) -> None:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    spacing = 240.0 / size
    for i in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"slice{i:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = "PHANTOM^SYNTHETIC"
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = "SYN0001"
        ds.ReferringPhysicianName = ""
        ds.Modality = "MR"
        ds.SeriesNumber = 1
        ds.SeriesDescription = "AX FLAIR synthetic"
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = "IR"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = 120
        ds.RepetitionTime = 9000
        ds.InversionTime = 2500
        ds.EchoTrainLength = 16
        ds.SliceThickness = 3
        ds.ImagePositionPatient = [-120.0, -120.0, -60.0 + 3.0 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PositionReferenceIndicator = ""
        ds.PixelSpacing = [spacing, spacing]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = phantom_slice(size, (i - slices / 2) / max(slices, 1), rng).tobytes()
        ds.save_as(out / f"slice{i:04d}.dcm", enforce_file_format=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--patient-id", default="SYN-0001")
    args = parser.parse_args()
    write_series(args.out, args.slices, args.size, args.seed, args.patient_id)


if __name__ == "__main__":
    main()
