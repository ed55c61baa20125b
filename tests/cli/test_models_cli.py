"""``medseg models``: every encoder and model listed, with figures equal to the library's."""

from __future__ import annotations

import re

import pytest
import torch
from typer.testing import CliRunner

import medseg.cli
from medseg.encoders import list_encoders
from medseg.models import build_model, list_models
from medseg.models.summary import count_parameters, forward_gflops

medseg.cli._register()


def test_models_lists_everything_with_params_and_gflops():
    result = CliRunner().invoke(medseg.cli.app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    for name in [*list_encoders(), *list_models()]:
        assert re.search(rf"\b{re.escape(name)}\b", out), name
    assert "1×1×256×256" in out
    with torch.device("meta"):
        unet = build_model("unet")
        params, gflops = count_parameters(unet), forward_gflops(unet, (1, 1, 256, 256))
    row = next(line for line in out.splitlines() if re.search(r"\bunet\b", line) and "Classic" in line)
    assert f"{params:,}" in row and f"{gflops:.2f}" in row


def test_models_bad_dims_is_one_line_error_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        medseg.cli.main(["models", "--spatial-dims", "4"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --spatial-dims 4") and "\n" not in err
