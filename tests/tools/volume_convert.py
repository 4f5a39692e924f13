"""Re-encode DICOM files for the volume tests with real Python encoders (nothing is downloaded).

  volume_convert.py j2k OUTDIR FILE...       JPEG 2000 lossless (pylibjpeg-openjpeg via pydicom)
  volume_convert.py enhanced OUT.dcm FILE... one Legacy Converted Enhanced MR object (highdicom),
                                            per-frame and shared functional groups
"""
import sys
from pathlib import Path

import pydicom
from pydicom.uid import JPEG2000Lossless


def j2k(out_dir, files):
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        ds.save_as(out_dir / Path(f).name)


def enhanced(out, files):
    import highdicom
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    datasets = [pydicom.dcmread(f) for f in files]
    image = LegacyConvertedEnhancedMRImage(
        legacy_datasets=datasets,
        series_instance_uid=highdicom.UID(),
        series_number=99,
        sop_instance_uid=highdicom.UID(),
        instance_number=1,
    )
    image.save_as(out)


if __name__ == "__main__":
    command, target, *inputs = sys.argv[1:]
    {"j2k": j2k, "enhanced": enhanced}[command](Path(target), inputs)
