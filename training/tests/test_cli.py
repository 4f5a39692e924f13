"""The console scripts are installed and work."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def test_generate_then_evaluate(tmp_path: Path) -> None:
    subprocess.run([BIN / "msnode-generate", "--out", tmp_path / "synth", "--cases", "1", "--seed", "4",
                    "--spacing", "3"], check=True, capture_output=True)
    case_dir = tmp_path / "synth" / "synth_ms_4_0000"
    assert (case_dir / "ground_truth.nii.gz").is_file()
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    shutil.copy(case_dir / "ground_truth.nii.gz", tmp_path / "truth" / "c.nii.gz")
    shutil.copy(case_dir / "ground_truth.nii.gz", tmp_path / "pred" / "c.nii.gz")
    out = subprocess.run([BIN / "msnode-evaluate", "--truth", tmp_path / "truth", "--prediction", tmp_path / "pred"],
                         check=True, capture_output=True, text=True).stdout
    summary = json.loads(out)["summary"]
    assert summary["mean_f1"] == 1.0 and summary["mean_dice"] == 1.0


def test_every_entry_point_is_installed_and_answers_help(capsys) -> None:
    from msnode_training import cli

    mains = {"msnode-generate": cli.generate_main, "msnode-make-dataset": cli.make_dataset_main,
             "msnode-train": cli.train_main, "msnode-evaluate": cli.evaluate_main, "msnode-export": cli.export_main,
             "msnode-parity": cli.parity_main, "msnode-pipeline": cli.pipeline_main}
    for name, main in mains.items():
        assert (BIN / name).is_file(), name
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith("usage"), name
