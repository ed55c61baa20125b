"""Crash safety (SIGKILL mid-epoch, then --resume) and 2-process DDP on the CPU with gloo."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from medseg.config import load_config
from medseg.training.checkpoint import load_state
from tests.training.conftest import tiny_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _epochs(run: Path) -> list[int]:
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        return [int(r["epoch"]) for r in csv.DictReader(handle)]


def test_sigkill_mid_epoch_then_resume_loses_no_epoch(tiny_nuclei: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [*tiny_args("unet", tiny_nuclei, run, epochs=4), "--set", "train.steps_per_epoch=40"]
    proc = subprocess.Popen([sys.executable, "-m", "medseg", *args], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.csv").is_file() and _epochs(run) == [1]:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "trainer exited early"
    time.sleep(0.3)  # well inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_state(run / "state.pt")["epoch"]
    assert killed_at in (1, 2)

    resumed = subprocess.run([sys.executable, "-m", "medseg", "train", "--resume", str(run), "--quiet"],
                             env=ENV, capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert _epochs(run) == [1, 2, 3, 4]  # no completed epoch lost, none repeated
    assert load_state(run / "state.pt")["epoch"] == 4
    for name in ("best.safetensors", "last.safetensors"):
        assert load_file(str(run / name))
    load_config(run / "config.yaml")
    Image.open(run / "curves.png").verify()
    assert "resume at epoch" in (run / "log.txt").read_text(encoding="utf-8")
    assert not [p.name for p in run.iterdir() if p.name.startswith(".tmp-")]


SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from safetensors.torch import save_file
    from medseg.config import resolve_config
    from medseg.training import train
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = resolve_config(model="unet", overrides={
        "model": {"options": {"features": [4, 8, 16]}},
        "data": {"path": str(data), "patch_size": [32, 32], "cache": "none", "num_samples": 1},
        "train": {"epochs": 2, "batch_size": 2, "precision": "fp32", "device": "cpu"},
    })
    result = train(cfg, run_dir=out / "run", quiet=True)
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(out / f"rank{os.environ['RANK']}.safetensors"))
    """
)


def test_two_process_ddp_ranks_end_with_identical_weights(tiny_nuclei: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tiny_nuclei), str(tmp_path)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert _epochs(tmp_path / "run") == [1, 2]  # only rank 0 wrote, once per epoch
