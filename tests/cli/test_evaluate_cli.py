"""``medseg evaluate``: table, files, exit codes and --labels parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import medseg.cli
from medseg.cli.evaluate import parse_labels
from medseg.data.io import write_image
from medseg.errors import MedsegError

medseg.cli._register()
AFFINE = np.diag([0.7, 0.7, 3.0, 1.0])


def label_map(shift: int = 0) -> np.ndarray:
    out = np.zeros((24, 20, 8), np.uint8)
    out[5 + shift:15 + shift, 4:14, 2:6] = 1
    out[16:20, 15:18, 3:5] = 2
    return out


def run(*args: str):
    return CliRunner().invoke(medseg.cli.app, ["evaluate", *args], env={"COLUMNS": "200"})


def test_two_files_print_a_table_and_write_the_results(tmp_path):
    gt = write_image(label_map(), tmp_path / "scan.nii.gz", AFFINE)
    pred = write_image(label_map(1), tmp_path / "scan_seg.nii.gz", AFFINE)
    result = run(str(pred), str(gt), "--labels", "1=liver,2=tumour", "--tolerance", "2")
    assert result.exit_code == 0, result.output
    assert "liver" in result.output and "tumour" in result.output and "NSD at 2 mm" in result.output
    summary = json.loads((tmp_path / "scan_evaluation" / "summary.json").read_text())  # default -o
    dice = summary["metrics"]["dice"]["liver"]["mean"]
    assert dice == pytest.approx(2 * 9 / 20)
    assert f"{dice:.3f}" in result.output
    assert (tmp_path / "scan_evaluation" / "metrics.csv").read_text().count("\n") == 3


def test_folder_with_a_bad_case_exits_non_zero_and_names_it(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for k in range(2):
        write_image(label_map(), gt / f"c{k}.nii.gz", AFFINE)
        write_image(label_map(k), pred / f"c{k}_seg.nii.gz", AFFINE)
    write_image(label_map(), gt / "broken.nii.gz", AFFINE)
    (pred / "broken_seg.nii.gz").write_bytes(b"not a nifti file")
    result = run(str(pred), str(gt), "-o", str(tmp_path / "ev"))
    assert result.exit_code == 1, result.output
    assert "broken_seg.nii.gz" in result.output and "1 of 3 cases failed" in result.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["n_errors"] == 1


def test_user_errors_are_one_line_exit_2(tmp_path, capsys):
    gt = write_image(label_map(), tmp_path / "a.nii.gz", AFFINE)
    with pytest.raises(SystemExit) as exit_info:
        medseg.cli.main(["evaluate", str(tmp_path / "missing.nii.gz"), str(gt)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: PRED") and "missing.nii.gz" in err and err.count("\n") == 1


def test_parse_labels(tmp_path):
    assert parse_labels(None) is None
    assert parse_labels(["0=bg,1=liver", "2=tumour"]) == {1: "liver", 2: "tumour"}
    msd = tmp_path / "dataset.json"
    msd.write_text(json.dumps({"labels": {"0": "background", "1": "spleen"}}))
    assert parse_labels([str(msd)]) == {1: "spleen"}
    nnunet = tmp_path / "nnunet.json"
    nnunet.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumor": 2}}))
    assert parse_labels([str(nnunet)]) == {1: "liver", 2: "tumor"}
    for bad in (["liver"], ["x=liver"], ["0=background"]):
        with pytest.raises(MedsegError, match="--labels"):
            parse_labels(bad)
