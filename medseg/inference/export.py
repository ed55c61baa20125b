"""Export a run's network to TorchScript or ONNX, verified against the original on a test input.

The exported graph is the network alone (eval mode, fp32) for one patch of the run's
``patch_size``: deployments run their own sliding window over patches of that size, with the
preprocessing written beside the model in ``<output>.json`` (preset, spacing, CT window, patch
size, classes). The batch size may vary (ONNX: dynamic first axis).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medseg.errors import MedsegError
from medseg.run import find_run, read_checkpoint
from medseg.utils import atomic_path, atomic_write_json


def _torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> torch.Tensor:
    """Trace, save, reload and run the reloaded module on ``example``."""
    with warnings.catch_warnings():  # shape-dependent padding is traced for the patch size, as intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))
    return torch.jit.load(str(path))(example)


def _onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> torch.Tensor:
    """Export with a dynamic batch axis and run the file with onnxruntime, else onnx's reference evaluator."""
    try:
        import onnx
    except ImportError:
        raise MedsegError("--format onnx needs the onnx package: pip install 'medseg[onnx]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
    onnx.checker.check_model(str(path))
    try:
        import onnxruntime as ort
    except ImportError:  # onnx's own pure-Python runtime: slow, but an independent check of the file
        from onnx.reference import ReferenceEvaluator

        result = ReferenceEvaluator(str(path)).run(None, {"image": example.numpy()})[0]
    else:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        result = session.run(None, {"image": example.numpy()})[0]
    return torch.from_numpy(result)


FORMATS: dict[str, tuple[str, Callable[[torch.nn.Module, torch.Tensor, Path], torch.Tensor]]] = {
    "torchscript": (".pt", _torchscript),
    "onnx": (".onnx", _onnx),
}


def export_run(
    run: str | Path | None, fmt: str = "torchscript", output: Path | None = None, checkpoint: str = "best",
    seed: int = 0,
) -> tuple[Path, float]:
    """Write the exported model (and its ``.json`` preprocessing card); return its path and the max
    absolute difference between the export's and the original's logits on a random patch."""
    if fmt not in FORMATS:
        raise MedsegError(f"--format {fmt}: unknown; use one of {', '.join(FORMATS)}")
    suffix, write = FORMATS[fmt]
    run_dir = find_run(run)
    ckpt = read_checkpoint(run_dir, checkpoint)
    model = ckpt.build()
    pre: dict[str, Any] = ckpt.preprocess.to_metadata()
    shape = (1, ckpt.preprocess.in_channels, *ckpt.preprocess.patch_size)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    output = Path(output) if output else run_dir / f"model{suffix}"
    with torch.no_grad():
        reference = model(example)
        with atomic_path(output) as tmp:
            result = write(model, example, tmp)
    atomic_write_json(output.with_name(output.name + ".json"), {
        "format": fmt, "input": {"name": "image", "shape": ["batch", *shape[1:]], "dtype": "float32"},
        "output": {"name": "logits", "classes": pre["labels"]}, "preprocess": pre,
        "build_args": ckpt.build_args, "source": str(ckpt.path),
    })
    return output, float((reference - result).abs().max())
