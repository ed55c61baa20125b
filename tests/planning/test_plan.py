"""The planner's rules on hand-made fingerprints, and a whole plan that keeps the user's values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medseg import runtime
from medseg.config import TrainConfig, load_config, resolve_config
from medseg.planning import network, rules
from medseg.planning import plan as plan_module
from medseg.planning.plan import plan_experiment
from medseg.planning.records import (
    CaseFingerprint,
    ChannelFingerprint,
    ClassFingerprint,
    Fingerprint,
    IntensityStats,
)
from medseg.training.schedule import Budget, lr_factor


def _fp(spacings, shapes, *, modality="CT", labels=None, object_mm=(500.0,), crop=1.0, dims=3) -> Fingerprint:
    labels = labels or {0: "background", 1: "organ", 2: "lesion"}
    cases = tuple(
        CaseFingerprint(f"c{i}", tuple(sp), tuple(sh), tuple(round(n * crop ** (1 / dims)) for n in sh),
                        (0,) * dims, "RAS" if dims == 3 else "", 1, "int16")
        for i, (sp, sh) in enumerate(zip(spacings, shapes, strict=True))
    )
    stats = IntensityStats(60.0, 20.0, 58.0, -100.0, 200.0, 5.0, 110.0, 1000)
    channel = ChannelFingerprint(0, modality, False, stats, -1024.0, 1500.0, True)
    classes = tuple(ClassFingerprint(v, labels[v], 100, f, len(cases), 3, 10, 50.0, mm / 4, mm)
                    for v, f, mm in zip(sorted(k for k in labels if k), (0.08, 0.004), object_mm * 2, strict=False))
    return Fingerprint("t", "/tmp/t", "msd", dims, 1, labels, cases, (channel,), classes, 0.9, (), "key", 10_000, 0)


ANISO = _fp([(0.8, 0.8, 3.0), (0.78, 0.78, 3.0), (0.82, 0.82, 2.5)], [(160, 160, 40), (150, 160, 42), (170, 160, 38)])


def test_thick_axis_keeps_its_tenth_percentile_as_nnunet_plans_it() -> None:
    spacing, why = rules.target_spacing(ANISO)
    assert spacing == pytest.approx((0.8, 0.8, float(np.percentile([3.0, 3.0, 2.5], 10))))
    assert "10th percentile" in why
    iso = _fp([(1.0, 1.0, 1.2), (1.1, 1.0, 1.2)], [(96, 112, 80), (90, 110, 80)])
    assert rules.target_spacing(iso)[0] == pytest.approx((1.05, 1.0, 1.2))
    flat = _fp([(0.5, 0.5)], [(160, 224)], dims=2, modality="gray")
    assert rules.target_spacing(flat)[0] is None


def test_coarsening_for_the_budget_stops_where_the_small_objects_would_vanish() -> None:
    big = _fp([(0.5, 0.5, 0.5)] * 3, [(400, 400, 400)] * 3, object_mm=(4000.0,))
    coarse, why = rules.coarsen_for_budget(big, (0.5, 0.5, 0.5), 2e6)
    assert coarse[0] > 0.5 and np.prod(rules.resampled_shape(big, coarse)) == pytest.approx(2e6, rel=0.05)
    assert "budget" in (why or "")
    tiny_objects = _fp([(0.5, 0.5, 0.5)] * 3, [(400, 400, 400)] * 3, object_mm=(4.2,))  # 2 mm across
    capped, _ = rules.coarsen_for_budget(tiny_objects, (0.5, 0.5, 0.5), 2e6)
    diameter = rules.smallest_typical_object_mm(tiny_objects)
    assert capped[0] == pytest.approx(max(0.5, diameter / rules.MIN_OBJECT_VOXELS_ACROSS))
    assert rules.coarsen_for_budget(ANISO, (0.8, 0.8, 3.0), 5e6) == ((0.8, 0.8, 3.0), None)
    thick, _ = rules.coarsen_for_budget(ANISO, (0.8, 0.8, 3.0), 2e5)
    assert thick[2] == 3.0 and thick[0] <= 3.0  # the thick axis is never coarsened


def test_normalisation_by_modality() -> None:
    preset, intensity, why = rules.normalisation(ANISO)
    assert preset == "ct" and intensity == {"clip": [5.0, 110.0], "mean": [60.0], "std": [20.0]} and "CT" in why
    mri = _fp([(1.0, 1.0, 1.2)] * 2, [(96, 112, 80)] * 2, modality="T1", crop=0.5)
    assert rules.normalisation(mri)[:2] == ("mri", None)
    assert rules.normalisation(_fp([(1.0, 1.0, 1.2)] * 2, [(96, 112, 80)] * 2, modality="T1"))[:2] == ("zscore", None)
    assert rules.normalisation(_fp([(1, 1)], [(160, 224)], dims=2, modality="gray"))[0] == "zscore"


def test_every_class_centres_an_equal_share_of_patches() -> None:
    ratios, why = rules.class_ratios(ANISO)
    assert ratios == [1.0, 1.0, 1.0] and "'lesion'" in why


@pytest.mark.parametrize(("shape", "budget", "expected"), [
    ((160, 224), 256 * 256, (160, 224)), ((600, 600), 256 * 256, (256, 256)), ((160, 160, 40), 96 * 96 * 64, (128, 128, 32)),
])
def test_patch_follows_the_image_within_the_budget(shape, budget, expected) -> None:
    patch = rules.patch_for(shape, budget, 8 if len(shape) == 3 else 32, 512)
    assert np.prod(patch) <= budget * 1.01 and all(p <= -(-s // 8) * 8 for p, s in zip(patch, shape, strict=True))
    assert patch == expected


def test_unet_pooling_waits_for_the_thick_axis() -> None:
    assert network.pooling_strides([128, 128, 32], [0.8, 0.8, 3.0]) == [[2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert network.pooling_strides([64, 64], None) == [[2, 2]] * 4
    assert network.pooling_strides([16, 16, 8], [1, 1, 1]) == [[2, 2, 2], [2, 2, 1]]  # each axis stops at 4


def test_a_plan_keeps_the_users_values_and_writes_a_config_that_loads(tmp_path: Path) -> None:
    cfg = resolve_config(model="unet", overrides={"data": {"path": str(tmp_path), "patch_size": [64, 64, 16]},
                                                   "train": {"max_minutes": 3}})
    plan = plan_experiment(cfg, ANISO, measure=False)
    by_key = {c.key: c for c in plan.choices}
    assert not by_key["data.patch_size"].planned and by_key["data.patch_size"].value == [64, 64, 16]
    assert not by_key["train.max_minutes"].planned and by_key["model.name"].value == "unet"
    assert by_key["data.preset"].value == "ct" and by_key["data.spacing"].planned
    planned = plan.apply(cfg)
    assert planned.data.patch_size == [64, 64, 16] and planned.train.max_minutes == 3
    assert planned.model.options["features"] and not planned.needs_planning()
    path = tmp_path / "plan.yaml"
    path.write_text(plan.to_yaml(cfg), encoding="utf-8")
    assert load_config(path) == planned and "# data.spacing: median spacing" in path.read_text(encoding="utf-8")
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["model"]["name"] == "unet"


def test_the_users_network_size_is_never_replaced(tmp_path: Path) -> None:
    cfg = resolve_config(model="unet", overrides={"data": {"path": str(tmp_path)},
                                                   "model": {"options": {"features": [8, 16, 32]}}})
    plan = plan_experiment(cfg, ANISO, measure=False)
    assert plan.apply(cfg).model.options == {"features": [8, 16, 32]}
    assert "model.options" not in {c.key for c in plan.planned()}


def test_schedule_ends_when_the_time_does() -> None:
    assert lr_factor(50, 1000, 10, "cosine", time_fraction=1.0) == pytest.approx(0.0)
    assert lr_factor(50, 1000, 10, "cosine", time_fraction=0.5) == pytest.approx(0.5)
    assert lr_factor(5, 1000, 10, "cosine", time_fraction=0.9) == pytest.approx(0.6)  # warm-up is in steps
    budget = Budget(100.0, spent=50.0)
    assert 0.5 <= budget.fraction() < 0.51
    budget.reserve = 50.0
    assert budget.fraction() >= 1.0 and Budget(None).fraction() == 0.0


def _planned(minutes: float, **train: object) -> plan_module.Plan:
    cfg = resolve_config(model="unet", overrides={"data": {"path": "/tmp"}, "train": {"max_minutes": minutes, **train}})
    return plan_experiment(cfg, ANISO, measure=False)


def _widths(plan: plan_module.Plan) -> str:
    return {c.key: c.reason for c in plan.choices}["model.options"]


def test_half_widths_are_kept_with_fewer_steps_and_the_advice_names_the_budget_for_all() -> None:
    short = _planned(3)  # the FLOPs estimate fits ≈270 steps of half widths in 3 min, 0.25× would fit 400
    assert "widths at 0.5×" in _widths(short) and len(short.advice) == 1
    line = short.advice[0]
    assert line.startswith("short budget: 3 min on this machine fit ≈") and "(400 wanted)" in line
    advised = int(line.split("--max-minutes ")[1].split()[0])
    enough = _planned(advised)  # the advised budget fits the steps, and says nothing
    assert advised > 3 and "widths at 0.5×" in _widths(enough) and enough.advice == []
    assert enough.estimate.steps > short.estimate.steps
    assert "# note: short budget:" in short.to_yaml(resolve_config(model="unet", overrides={"data": {"path": "/tmp"}}))
    assert short.to_dict()["advice"] == [line]


def test_a_budget_that_fits_only_thin_networks_warns_about_small_structures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module._StepCost, "FALLBACK", 0.3)  # a slow machine: 10× the default estimate
    short = _planned(3)
    assert "widths at 0.25×" in _widths(short)
    (line,) = short.advice
    assert "only at 0.25× widths" in line and "'lesion' (0.40% of voxels)" in line
    advised = int(line.split("--max-minutes ")[1].split()[0])
    assert advised > 3 and _planned(advised).advice == [] and "widths at 0.5×" in _widths(_planned(advised))


def test_no_budget_advice_on_a_fast_machine_or_without_a_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _planned(15).advice == [] and _planned(60).advice == []
    monkeypatch.setattr(plan_module._StepCost, "FALLBACK", 0.3)
    cfg = resolve_config(model="unet", overrides={"data": {"path": "/tmp"}, "train": {"epochs": 5}})
    assert plan_experiment(cfg, ANISO, measure=False).advice == []  # fixed epochs: no minutes to raise


def test_validation_and_mirroring_are_planned_from_a_timed_window_not_the_training_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(network, "measure_step_seconds", lambda *a, **k: 0.5)
    monkeypatch.setattr(network, "measure_forward_seconds", lambda args, patch, batch, *a, **k: 0.01 * batch)
    cfg = resolve_config(model="unet", overrides={"data": {"path": "/tmp", "patch_size": [64, 64, 16]},
                                                   "train": {"max_minutes": 10}})
    plan = plan_experiment(cfg, ANISO, measure=True)
    spacing = next(c.value for c in plan.choices if c.key == "data.spacing")
    shape = rules.resampled_shape(ANISO, tuple(spacing))
    windows = plan_module.sliding_windows(shape, (64, 64, 16), 0.5)
    assert plan.estimate.case_seconds == pytest.approx(0.01 * windows, abs=0.01)  # 0.01 s a window, as timed
    assert plan.estimate.step_seconds == pytest.approx(0.5)  # the timed step of 2 patches
    assert [c.value for c in plan.choices if c.key == "inference.tta"] == [True]  # 8 passes ≈ 8 × 0.01 × windows
    tiny = network.measure_forward_seconds({"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                                            "features": [4, 8, 16]}, (32, 32), 2, torch.device("cpu"),
                                           runtime.resolve_precision("fp32", torch.device("cpu")), False)
    assert 0.0 < tiny < 5.0


@pytest.mark.parametrize(("shape", "patch", "overlap"), [
    ((160, 160, 40), (64, 64, 16), 0.5), ((100, 37, 9), (32, 32, 16), 0.25), ((64, 64), (64, 64), 0.5),
    ((130, 97), (48, 40), 0.6),
])
def test_the_planned_window_count_is_what_monais_sliding_window_runs(shape, patch, overlap) -> None:
    from monai.inferers import sliding_window_inference

    seen = []

    def count(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return x

    sliding_window_inference(torch.zeros(1, 1, *shape), patch, 1, count, overlap=overlap)
    assert plan_module.sliding_windows(shape, patch, overlap) == len(seen)


def test_few_patches_a_step_plan_instance_norms_except_for_ct() -> None:
    """3D plans draw 2 patches a step: batch norms would hold one case's statistics, yet on CT they
    trained better in minutes (docs/planning.md)."""
    mri = _fp([(1.0, 1.0, 1.2)] * 3, [(96, 112, 80)] * 3, modality="MRI")
    cfg = resolve_config(model="unet", overrides={"data": {"path": "/tmp"}, "train": {"max_minutes": 10}})
    plan = plan_experiment(cfg, mri, measure=False)
    assert plan.apply(cfg).model.options["norm"] == "instance" and "instance norms: 2 patches a step" in _widths(plan)
    assert "norm" not in plan_experiment(cfg, ANISO, measure=False).apply(cfg).model.options  # CT: batch norms
    assert network.norm_for(2) == "instance" and network.norm_for(network.BATCH_NORM_MIN_PATCHES) == "batch"
    assert network.norm_for(2, ct=True) == "batch"


@pytest.mark.parametrize(("name", "options", "expected"), [
    ("unet", {}, {"norm": "instance"}),
    ("unet", {"norm": "group"}, {"norm": "group"}),  # the user's
    ("unet_resnet", {}, {"norm": "instance", "encoder_options": {"norm": "instance"}}),
    ("fcn", {}, {"encoder_options": {"norm": "instance"}}),  # no decoder norm to set
    ("unet_resnet", {"encoder_weights": "w.pt"},  # pretrained batch norms stay
     {"encoder_weights": "w.pt", "norm": "instance", "encoder_options": {"norm": "batch"}}),
])
def test_instance_norms_go_where_each_model_takes_them(name: str, options: dict, expected: dict) -> None:
    assert network.with_norm(name, options, "instance", 3) == expected
    assert network.with_norm(name, options, "batch", 3) == options


def test_the_learning_rate_is_planned_by_dimensionality_and_the_users_is_kept() -> None:
    by_key = {c.key: c for c in _planned(5).choices}
    assert by_key["train.lr"].value == rules.LEARNING_RATES[3] == 2e-3 and by_key["train.lr"].planned
    flat = _fp([(1.0, 1.0)] * 3, [(128, 96)] * 3, modality="", dims=2)
    assert rules.learning_rate(flat)[0] == 1e-3
    cfg = resolve_config(model="unet", overrides={"data": {"path": "/tmp"}, "train": {"lr": 3e-4, "max_minutes": 5}})
    plan = plan_experiment(cfg, ANISO, measure=False)
    assert plan.apply(cfg).train.lr == 3e-4 and "train.lr" not in {c.key for c in plan.planned()}
    assert TrainConfig().lr is None and TrainConfig().learning_rate == 1e-3  # unplanned: the old default
