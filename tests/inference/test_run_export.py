"""``medseg export RUN``: TorchScript and ONNX files that compute the run's logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inference_helpers import make_run
from typer.testing import CliRunner

from medseg.cli import _register, app
from medseg.errors import MedsegError
from medseg.inference.export import export_run
from medseg.models import build_model
from medseg.run import load_weights, read_metadata

_register()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, out_channels=3, features=[4, 4, 8])
    labels = {"0": "background", "1": "liver", "2": "tumour"}
    return make_run(tmp_path_factory.mktemp("runs") / "run", model, patch_size=[16, 16, 24], labels=labels)


def original(run_dir):
    weights = run_dir / "best.safetensors"
    model = build_model(**read_metadata(weights)["build_args"])
    load_weights(weights, model)
    return model.eval()


def test_torchscript_export_equals_the_original(run_dir, tmp_path):
    result = CliRunner().invoke(app, ["export", str(run_dir), "-o", str(tmp_path / "net.pt")])
    assert result.exit_code == 0, result.output
    loaded = torch.jit.load(str(tmp_path / "net.pt"))
    x = torch.randn(2, 1, 16, 16, 24, generator=torch.Generator().manual_seed(5))  # not the export's test input
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(run_dir)(x), atol=1e-5, rtol=1e-4)
    card = json.loads((tmp_path / "net.pt.json").read_text())
    assert card["preprocess"]["patch_size"] == [16, 16, 24] and card["output"]["classes"]["2"] == "tumour"


def test_onnx_export_equals_the_original(run_dir, tmp_path):
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    path, max_diff = export_run(run_dir, "onnx", tmp_path / "net.onnx")
    assert max_diff < 1e-4
    x = torch.randn(2, 1, 16, 16, 24, generator=torch.Generator().manual_seed(6))
    got = ReferenceEvaluator(str(path)).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, original(run_dir)(x).numpy(), atol=1e-4, rtol=1e-3)
    assert (run_dir / "model.onnx").exists() is False  # -o was honoured


def test_unknown_format_is_a_user_error(run_dir):
    with pytest.raises(MedsegError, match="--format"):
        export_run(run_dir, "tflite")
