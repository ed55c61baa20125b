"""The degradation experiment end to end at a tiny budget, its task generator, and its CLI."""

from __future__ import annotations

import csv
import inspect
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medseg.cli import _register, app, main
from medseg.errors import MedsegError
from medseg.experiments.degradation import (
    CURVE_FIELDS,
    GRADIENT_FIELDS,
    RECIPES,
    RESPONSE_FIELDS,
    SUMMARY_FIELDS,
    build_network,
    conv_layers,
    learning_rate,
    make_task,
    parse_depths,
    response_stds,
    run_degradation,
)

FAMILIES = ("plain", "resnet", "highway", "fractal")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("degradation")
    messages: list[str] = []
    result = run_degradation(out, depths=(8, 14), steps=6, batch_size=8, lr=0.05, n_train=64, n_test=16,
                             image_size=8, log_points=3, seed=1, families=FAMILIES, on_progress=messages.append)  # fmt: skip
    return out, result, messages


def test_writes_every_file(tiny_run) -> None:
    out, result, messages = tiny_run
    names = {"curves.csv", "summary.csv", "gradient_norms.csv", "response_std.csv", "degradation.png",
             "gradient_norms.png", "response_std.png"}
    assert {p.name for p in result.files} == names
    for name in names:
        assert (out / name).stat().st_size > 0
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" or name.endswith(".csv")
    assert not list(out.glob(".tmp-*"))
    assert sum(m.startswith("training") for m in messages) == 8


def test_curves_are_finite_and_complete(tiny_run) -> None:
    out, result, _ = tiny_run
    fields, rows = read_csv(out / "curves.csv")
    assert fields == CURVE_FIELDS
    networks = [f"{family}-{depth}" for family in FAMILIES for depth in (8, 14)]
    for net in networks:
        mine = [r for r in rows if r["network"] == net]
        assert [int(r["step"]) for r in mine] == [2, 4, 6]  # steps // log_points = 2
        for r in mine:
            assert math.isfinite(float(r["train_loss"])) and float(r["train_loss"]) > 0
            assert 0.0 <= float(r["train_error"]) <= 1.0
            assert 0.0 <= float(r["test_error"]) <= 1.0
            # a test error on 16 images is a multiple of 1/16
            assert float(r["test_error"]) * 16 == pytest.approx(round(float(r["test_error"]) * 16))
    fields, summary = read_csv(out / "summary.csv")
    assert fields == SUMMARY_FIELDS
    assert [r["network"] for r in summary] == networks
    assert result.final("final_train_error").keys() == set(networks)
    for r in summary:
        assert int(r["parameters"]) == sum(
            p.numel() for p in build_network(int(r["depth"]), r["family"]).parameters()
        )
    # option A shortcuts add no parameters: plain and residual twins have the same count
    assert summary[0]["parameters"] == summary[2]["parameters"]


def test_gradient_rows_per_conv_layer(tiny_run) -> None:
    out, _, _ = tiny_run
    fields, rows = read_csv(out / "gradient_norms.csv")
    assert fields == GRADIENT_FIELDS
    for depth in (8, 14):
        for family in ("plain", "resnet", "highway"):
            layers = [name for name, _ in conv_layers(build_network(depth, family))]
            assert len(layers) == depth - 1  # every layer but fc is a conv (no projection shortcuts, no gates)
            net = f"{family}-{depth}"
            for bn, phase in (("True", "init"), ("False", "init"), ("True", "trained")):
                sel = [r for r in rows if r["network"] == net and r["batch_norm"] == bn and r["phase"] == phase]
                assert [r["layer"] for r in sel] == layers
                assert [int(r["index"]) for r in sel] == list(range(1, depth))
                norms = [float(r["grad_norm"]) for r in sel]
                assert all(math.isfinite(v) and v > 0 for v in norms)
    assert {(r["batch_norm"], r["phase"]) for r in rows} == {("True", "init"), ("False", "init"), ("True", "trained")}


def test_fractal_rows_cover_every_conv_and_its_deepest_path_matches_the_depth(tiny_run) -> None:
    out, _, _ = tiny_run
    _, rows = read_csv(out / "gradient_norms.csv")
    for depth in (8, 14):
        net = build_network(depth, "fractal")
        sel = [r for r in rows if r["network"] == f"fractal-{depth}" and r["phase"] == "trained"]
        assert [r["layer"] for r in sel] == [name for name, _ in conv_layers(net)]
        assert all(float(r["grad_norm"]) > 0 for r in sel)  # drop-path is off while measuring: every column
        assert net.encoder.depth + 1 == depth


def test_response_stds_follow_every_norm_layer_in_forward_order(tiny_run) -> None:
    out, _, _ = tiny_run
    fields, rows = read_csv(out / "response_std.csv")
    assert fields == RESPONSE_FIELDS
    for family in FAMILIES:
        sel = [r for r in rows if r["network"] == f"{family}-14"]
        norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in build_network(14, family).modules())
        assert len(sel) == norms and all(float(r["std"]) > 0 for r in sel)
    torch.manual_seed(0)
    net = build_network(8, "plain")
    x = torch.randn(6, 3, 8, 8)
    stds = response_stds(net, x)
    net.eval()
    with torch.no_grad():  # the stem's BN output in eval mode, std per channel over images and pixels, averaged
        expected = net.encoder.bn1(net.encoder.conv1(x)).transpose(0, 1).flatten(1).std(1).mean()
    assert stds[0] == ("bn1", pytest.approx(float(expected), rel=1e-5))


def test_no_bn_network_has_no_norm_layers() -> None:
    for family in FAMILIES:
        net = build_network(8, family, batch_norm=False)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in build_network(8, family).modules())
        assert build_network(8, family)(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_he_recipe_schedule_and_warm_up() -> None:
    he = RECIPES["he"]
    lrs = [learning_rate(he, 0.1, step, 100, warming=False) for step in (1, 50, 51, 75, 76, 100)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert learning_rate(he, 0.1, 10, 100, warming=True) == 0.01
    assert learning_rate(RECIPES["small"], 0.1, 10, 100, warming=False) is None
    assert he.augment and he.mean_subtraction and he.warmup_depth == 110 and (he.lr, he.batch_size) == (0.1, 128)


def test_he_recipe_run_warms_up_a_110_layer_network(tmp_path: Path) -> None:
    result = run_degradation(tmp_path, depths=(110,), steps=4, n_train=32, n_test=8, image_size=8, log_points=4,
                             families=("resnet",), recipe="he", batch_size=4)  # fmt: skip
    _, rows = read_csv(tmp_path / "curves.csv")
    errors = [float(r["train_error"]) for r in rows]
    for i, r in enumerate(rows):  # lr 0.01 until a window's training error falls below 80 %, then the schedule
        warming = all(e >= 0.8 for e in errors[:i])
        expected = 0.01 if warming else learning_rate(RECIPES["he"], 0.1, int(r["step"]), 4, warming=False)
        assert float(r["lr"]) == pytest.approx(expected)
    assert float(rows[0]["lr"]) == 0.01 and result.summary[0]["steps"] == 4


def test_make_task_is_deterministic_by_seed() -> None:
    a_img, a_lab = make_task(32, size=8, seed=3)
    b_img, b_lab = make_task(32, size=8, seed=3)
    c_img, _ = make_task(32, size=8, seed=4)
    assert a_img.shape == (32, 3, 8, 8) and a_lab.shape == (32,)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(a_img, c_img)
    assert a_lab.min() >= 0 and a_lab.max() < 10
    assert set(make_task(400, size=8, seed=0)[1].tolist()) == set(range(10))


def test_depths_are_checked() -> None:
    assert parse_depths("20, 56") == [20, 56]
    for bad in ("21,56", "2", "", "20,x", "20,20"):
        with pytest.raises(MedsegError):
            parse_depths(bad)
    with pytest.raises(MedsegError, match="6n\\+2"):
        run_degradation(Path("unused"), depths=(9,))


def test_cli_defaults_match_the_library() -> None:
    from medseg.cli.experiment import DEFAULTS

    params = inspect.signature(run_degradation).parameters
    assert {name: params[name].default for name in DEFAULTS} == DEFAULTS
    assert params["families"].default == ("plain", "resnet")


@pytest.mark.parametrize("depths", ["21,56", "20,abc", "20,20"])
def test_cli_rejects_bad_depths_in_one_line(tmp_path: Path, depths: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "degradation", "--depths", depths, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --depths '{depths}': ")
    assert not list(tmp_path.iterdir())


def test_cli_runs_a_tiny_experiment(tmp_path: Path) -> None:
    _register()
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            app,
            ["experiment", "degradation", "--out", str(tmp_path), "--depths", "8", "--steps", "2", "--batch-size",
             "4", "--image-size", "8", "--n-train", "16", "--threads", "1"],
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "plain-8" in result.output and "resnet-8" in result.output
    _, rows = read_csv(tmp_path / "summary.csv")
    assert [r["network"] for r in rows] == ["plain-8", "resnet-8"]
