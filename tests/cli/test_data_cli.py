"""``medseg data check | synth | prepare | list`` through the typer app."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import medseg.cli
from medseg.data import io
from medseg.errors import MedsegError

medseg.cli._register()
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(medseg.cli.app, list(args), catch_exceptions=True)


def test_help_for_every_data_verb():
    for verb in ("check", "synth", "prepare", "list"):
        result = _invoke("data", verb, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_synth_then_check_passes(tmp_path):
    result = _invoke("data", "synth", "--kind", "nuclei2d", "--out", str(tmp_path / "n"), "--cases", "2", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "wrote nuclei2d" in result.output and (tmp_path / "n" / "dataset.json").is_file()
    result = _invoke("data", "check", str(tmp_path / "n"))
    assert result.exit_code == 0, result.output
    assert "nucleus" in result.output and "OK" in result.output


def test_check_exits_2_with_one_line_per_problem(tmp_path):
    root = tmp_path / "d"
    for cid in ("a", "b", "c"):
        io.write_image(np.full((6, 5), 10, np.uint8), root / "images" / f"{cid}.png")
    io.write_image(np.ones((6, 5), np.uint8), root / "labels" / "a.png")
    io.write_image(np.zeros((6, 5), np.uint8), root / "labels" / "b.png")  # empty
    io.write_image(np.full((6, 5), 3, np.uint8), root / "labels" / "c.png")
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "cell"}}')
    result = _invoke("data", "check", str(root))
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert any("b.png" in e and "empty mask" in e for e in errors)
    assert any("c.png" in e and "out of range" in e for e in errors)
    assert _invoke("data", "check", str(root), "--allow-empty").exit_code == 2  # c.png is still wrong


def test_list_shows_the_cards():
    result = _invoke("data", "list")
    assert result.exit_code == 0
    for name in ("msd_spleen", "kvasir_seg", "isic2018", "busi", "dsb2018"):
        assert name in result.output


def test_prepare_kvasir_and_unknown_name(tmp_path):
    root = tmp_path / "Kvasir-SEG"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.full((8, 9, 3), 120, np.uint8)).save(root / "images" / "p1.jpg")
    mask = np.zeros((8, 9), np.uint8)
    mask[2:5, 2:6] = 255
    Image.fromarray(mask).save(root / "masks" / "p1.jpg")
    archive = tmp_path / "kvasir-seg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(root.rglob("*")):
            zf.write(p, p.relative_to(tmp_path))
    result = _invoke("data", "prepare", "Kvasir-SEG", "--src", str(archive), "--out", str(tmp_path / "k"))
    assert result.exit_code == 0, result.output
    assert "1 labelled" in result.output and (tmp_path / "k" / "labels" / "p1.png").is_file()
    result = _invoke("data", "prepare", "imagenet", "--src", str(archive), "--out", str(tmp_path / "x"))
    assert isinstance(result.exception, MedsegError) and "no card" in str(result.exception)


def test_main_turns_errors_into_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        medseg.cli.main(["data", "synth", "--kind", "cells", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: demo data kind 'cells'") and "\n" not in err


def _hu_dataset(root):
    """Two int16 HU volumes, 0.7031 x 0.7031 x 2.5 mm, long class names, no modality declared."""
    affine = np.diag([0.7031, 0.7031, 2.5, 1.0])
    for i in range(2):
        image = np.zeros((30, 28, 12), np.int16)
        image[1:29, 2:26, :] = -1000
        image[5:20, 5:20, 2:10] = 45 + i
        image[3, 3, 3] = 1200
        label = np.zeros(image.shape, np.uint8)
        label[6:12, 6:12, 3:6] = 1
        label[14:16, 14:16, 7:8] = 2
        io.write_image(image, root / "images" / f"v{i}.nii.gz", affine)
        io.write_image(label, root / "labels" / f"v{i}.nii.gz", affine)
    labels = {"background": 0, "hepatic parenchyma": 1, "hepatocellular carcinoma": 2}
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    return root


def test_check_shows_the_fingerprint_in_80_columns(tmp_path):
    root = _hu_dataset(tmp_path / "hu")
    result = runner.invoke(medseg.cli.app, ["data", "check", str(root)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    tables = [line for line in lines if not line.startswith(("warning:", "error:"))]
    assert max(len(line) for line in tables) <= 80, "\n".join(tables)
    for expected in ("geometry (2 labelled cases)", "0.7031x0.7031x2.5", "28x24x12", "0 CT*", "45.5",
                     "hepatocellular", "108 / 133.5", "4 / 4.943"):
        assert expected in result.output, expected
    warning = next(line for line in lines if line.startswith("warning:"))
    assert "guessed CT" in warning and '"modality": {"0": "CT"}' in warning
    assert (root / ".medseg" / "fingerprint.json").is_file()


def test_check_json_has_the_report_and_the_fingerprint(tmp_path):
    root = _hu_dataset(tmp_path / "hu")
    result = runner.invoke(medseg.cli.app, ["data", "check", str(root), "--json", "--no-cache"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["check"]["errors"] == [] and data["fingerprint"]["channels"][0]["modality"] == "CT"
    assert data["fingerprint"]["summary"]["median_cropped_shape"] == [28.0, 24.0, 12.0]
    assert not (root / ".medseg").exists()
    label = io.read_image(root / "labels" / "v1.nii.gz")
    broken = label[0].copy()
    broken[0, 0, 0] = 9
    io.write_like(broken, label[1], root / "labels" / "v1.nii.gz")
    result = runner.invoke(medseg.cli.app, ["data", "check", str(root), "--json"])
    assert result.exit_code == 2 and "[9]" in json.loads(result.stdout)["check"]["errors"][0]
