"""Layers import downwards only: prediction loads no training code, encoders no medseg layer above them."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(m for m in sys.modules if m.startswith('medseg')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_inference_loads_no_training_code() -> None:
    loaded = _loaded_after("medseg.inference")
    assert not {m for m in loaded if m.startswith("medseg.training")}
    assert "medseg.run" in loaded


@pytest.mark.parametrize(("module", "forbidden"), [
    ("medseg.encoders", ("medseg.models", "medseg.data", "medseg.training", "medseg.inference", "medseg.planning")),
    ("medseg.run", ("medseg.training", "medseg.inference", "medseg.planning")),
    ("medseg.planning", ("medseg.training", "medseg.inference", "medseg.experiments")),
])
def test_lower_layers_do_not_import_upper_ones(module: str, forbidden: tuple[str, ...]) -> None:
    loaded = _loaded_after(module)
    assert not [m for m in loaded if m.startswith(forbidden)]
