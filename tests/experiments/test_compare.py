"""``medseg compare`` on tiny 2D demo data writes every promised file, with all four models."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from medseg.cli import _register, app
from medseg.data import synthetic

_register()


def test_compare_writes_table_grid_bars_and_report(tmp_path: Path) -> None:
    data = synthetic.generate("nuclei2d", tmp_path / "data", n_cases=8, seed=3, size=(48, 48))
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(data), "--epochs", "1", "--out", str(out), "--precision", "fp32",
            "--set", "data.patch_size=[32, 32]", "--set", "data.cache=none", "--set", "data.num_samples=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "comparison.csv").open(encoding="utf-8")))
    assert [r["model"] for r in rows] == ["fcn", "unet", "unet_resnet", "dual_unet_resnet"]
    for row in rows:
        assert float(row["params_m"]) > 0 and float(row["gflops"]) > 0 and row["epochs"] == "1"
        assert 0.0 <= float(row["dice"].split(" ")[0]) <= 1.0
    md = (out / "comparison.md").read_text(encoding="utf-8")
    assert "Held-out cases: 2" in md and "| dual_unet_resnet |" in md
    grid = Image.open(out / "grid.png")
    assert grid.size[0] > grid.size[1] > 200  # 4 model rows, 6 columns (Image | Mask | Prediction ×2 cases)
    Image.open(out / "dice_bars.png").verify()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 2 + 4  # grid, bars, one curve per model
    assert "http://" not in html and "https://" not in html
    for model in ("fcn", "unet", "unet_resnet", "dual_unet_resnet"):
        assert (out / "evaluation" / model / "summary.json").is_file()

    # --reuse keeps finished runs with an unchanged config instead of training again
    before = (out / "runs" / "unet" / "best.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(app, [*args, "--reuse", "--models", "unet"])
    assert again.exit_code == 0, again.output
    assert (out / "runs" / "unet" / "best.safetensors").stat().st_mtime_ns == before
