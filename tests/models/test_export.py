"""Every model exports in eval mode (TorchScript trace; ONNX for one) and the export computes the same logits."""

from __future__ import annotations

import pytest
import torch
from test_models import SMALL  # tests/models is on sys.path (pytest rootdir-relative import)

from medseg.models import build_model

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::UserWarning")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_torchscript_trace_matches_eager(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, out_channels=3, **SMALL[name]).eval()
    x = torch.randn(1, 1, 45, 52)
    with torch.no_grad():
        reference = model(x)
        traced = torch.jit.trace(model, x, check_trace=False)
        traced.save(str(tmp_path / "model.pt"))
        loaded = torch.jit.load(str(tmp_path / "model.pt"))
        torch.testing.assert_close(loaded(x), reference)


def test_3d_trace_matches_eager():
    torch.manual_seed(0)
    model = build_model("dual_unet_resnet", spatial_dims=3, **SMALL["dual_unet_resnet"]).eval()
    x = torch.randn(1, 1, 21, 18, 19)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.trace(model, x, check_trace=False)(x), model(x))


def test_onnx_export_computes_the_same_logits(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator  # onnx's own pure-Python runtime

    torch.manual_seed(0)
    model = build_model("unet_resnet", out_channels=4, **SMALL["unet_resnet"]).eval()
    x = torch.randn(1, 1, 40, 36)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["logits"], dynamo=False)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    (logits,) = ReferenceEvaluator(graph).run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), rtol=1e-4, atol=1e-4)
