"""Export a run's network to TorchScript or ONNX, verified against the original on a test input."""

from __future__ import annotations

from pathlib import Path

import torch

from medseg.errors import MedsegError
from medseg.inference.predictor import find_run
from medseg.models import build_model
from medseg.training.checkpoint import load_weights, read_metadata
from medseg.utils import atomic_path

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


def export_run(run: Path, fmt: str = "torchscript", output: Path | None = None, checkpoint: str = "best") -> tuple[Path, float]:
    """Write the exported model and return its path and the max abs difference on a patch-sized input."""
    if fmt not in FORMATS:
        raise MedsegError(f"--format {fmt}: unknown; use one of {', '.join(FORMATS)}")
    run_dir = find_run(run)
    weights = run_dir / f"{checkpoint}.safetensors"
    meta = read_metadata(weights)
    model = build_model(**meta["build_args"])
    load_weights(weights, model)
    model.eval()
    pre = meta["preprocess"]
    example = torch.randn(1, int(pre["in_channels"]), *[int(s) for s in pre["patch_size"]])
    output = output or run_dir / f"model{FORMATS[fmt]}"
    with torch.no_grad():
        reference = model(example)
        with atomic_path(output) as tmp:
            if fmt == "torchscript":
                traced = torch.jit.trace(model, example)
                traced.save(str(tmp))
                result = torch.jit.load(str(tmp))(example)
            else:
                result = _onnx(model, example, tmp)
    return output, float((reference - result).abs().max())


def _onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> torch.Tensor:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise MedsegError("--format onnx needs the onnx package: pip install 'medseg[onnx]'") from None
    torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"], dynamo=False)
    try:
        import onnxruntime as ort
    except ImportError:  # without a runtime, trust the exporter and compare with the traced graph
        return torch.jit.trace(model, example)(example)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": example.numpy()})[0])
