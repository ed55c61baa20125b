"""The plan: every value a config leaves unset, chosen from the fingerprint, the machine and the budget.

``plan_experiment(cfg, fingerprint)`` returns a :class:`Plan`: one :class:`Choice` per config key
with its value and the reason, the user's own values listed as such, and the time estimate. It
never replaces a value the config sets. ``Plan.apply(cfg)`` gives the config training runs;
``Plan.to_yaml()`` a config file ``medseg train --config`` accepts, the reasons as comments.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import yaml

from medseg import runtime
from medseg.config import ExperimentConfig, deep_merge
from medseg.config import validate as validate_config
from medseg.planning import network, rules
from medseg.planning.records import Fingerprint

#: Minutes a run gets when ``train.max_minutes`` is not set, by device type.
DEFAULT_MINUTES = {"cpu": 15.0, "cuda": 60.0}
#: Optimiser steps a budget should afford at least before the network or patch is made smaller.
MIN_STEPS = {2: 500, 3: 400}
#: Voxels of the largest patch the planner starts from, by dimensionality (the ladder shrinks it). 2D
#: crops stay at most 128²: whole small images as the patch left 2 per step, with no crop variety and
#: noisy batch norms, and lost to 8 random 96² crops a step (docs/planning.md).
PATCH_VOXELS = {2: 128 * 128, 3: 96 * 96 * 64}
#: 2D steps take about this many voxels (patches × patch voxels), and at least 8 patches; 3D steps 2.
STEP_VOXELS_2D = 8 * 128 * 128
#: Largest patch axis, by dimensionality; the image's own size caps it too.
MAX_PATCH_AXIS = {2: 512, 3: 192}
#: Patch axes are multiples of this (the deepest network stride that still pads little).
PATCH_MULTIPLE = {2: 32, 3: 8}
#: The ladder: (network width scale, patch scale per axis), tried in order until the steps fit. Widths
#: stay at half the defaults (16 channels at full resolution) while the patch shrinks: thinner networks
#: learn less per step and run CPU convolution kernels far below their peak.
LADDER = [(1.0, 1.0), (0.5, 1.0), (0.5, 0.8), (0.5, 0.64), (0.5, 0.5), (0.375, 0.5), (0.25, 0.5), (0.25, 0.4)]
#: The ladder keeps half widths while the patch shrinks; below them the lesions of ct3d_lesion were
#: missed (Dice 0.18 and 0.10 at 0.25× widths in 3 min on a 2-core AVX2 EPYC; 0.77-0.87 at 0.5×;
#: docs/planning.md).
HALF_WIDTH = 0.5
#: Half widths are kept while they fit this share of :data:`MIN_STEPS`: at 3 min on that CPU, 180 and 235
#: steps at 0.5× widths gave lesion Dice 0.77 where 452 and 624 planned at 0.25× gave 0.10. A third, not
#: a half: one plan's noisy timing of the half-width step (0.9 s, where the runs took 0.62) fell under a half.
THIN_STEPS_SHARE = 1 / 3
#: Seconds of network time per median case up to which prediction averages the mirrored passes.
MAX_TTA_SECONDS = 60.0
#: Validations per run at most, and the share of the budget they may take.
MAX_VALIDATIONS, VALIDATION_SHARE = 15, 0.1
#: Planned epochs are this many times what the measured speed predicts: the time budget ends the run
#: (and the schedule), so a machine faster than its measurement uses its minutes instead of stopping early.
EPOCH_HEADROOM = 3


@dataclass(frozen=True)
class Choice:
    """One config value: what it is, why, and whether the planner chose it (else the user did)."""

    key: str
    value: Any
    reason: str
    planned: bool = True


@dataclass
class Estimate:
    """What the plan expects of the run on this machine."""

    step_seconds: float
    steps: int
    validations: int
    validation_seconds: float
    measured: str
    case_seconds: float = 0.0  # the network's time for one median case, one pass


@dataclass
class Plan:
    """The planned values with their reasons, and the estimate they were chosen by."""

    choices: list[Choice]
    estimate: Estimate
    fingerprint: Fingerprint = field(repr=False)
    #: what the user should know before training on this plan (e.g. a budget too short for the data)
    advice: list[str] = field(default_factory=list)

    def planned(self) -> list[Choice]:
        """The values the planner chose (not the user's)."""
        return [c for c in self.choices if c.planned]

    def overrides(self) -> dict[str, Any]:
        """The planned values as a nested config mapping."""
        out: dict[str, Any] = {}
        for choice in self.planned():
            section, key = choice.key.split(".", 1)
            node = out.setdefault(section, {})
            for part in key.split(".")[:-1]:
                node = node.setdefault(part, {})
            node[key.split(".")[-1]] = choice.value
        return out

    def apply(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """``cfg`` with the planned values filled in (the user's stay as they are)."""
        raw = deep_merge(self.overrides(), cfg.model_dump(mode="json", exclude_none=True))
        return validate_config(raw, "planned config")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every choice with its reason, and the estimate (stored in the run)."""
        return {"choices": [{"key": c.key, "value": c.value, "reason": c.reason, "planned": c.planned}
                            for c in self.choices], "estimate": dict(self.estimate.__dict__),
                "advice": list(self.advice)}

    def to_yaml(self, cfg: ExperimentConfig) -> str:
        """A config ``medseg train --config`` accepts: the planned config, each choice's reason as a comment."""
        lines = ["# medseg plan: every value below was planned for this dataset and machine, or set by you.",
                 f"# Estimate: {self.estimate.steps} steps of {self.estimate.step_seconds:.2f} s "
                 f"({self.estimate.measured}), {self.estimate.validations} validations.",
                 *[f"# note: {line}" for line in self.advice],
                 *[f"# {c.key}: {c.reason}{'' if c.planned else ' (yours)'}" for c in self.choices], ""]
        return "\n".join(lines) + yaml.safe_dump(self.apply(cfg).model_dump(mode="json"), sort_keys=False)


# -- planning -------------------------------------------------------------------------------------------
def plan_experiment(
    cfg: ExperimentConfig, fp: Fingerprint, *, device: torch.device | None = None, measure: bool = True,
    spent_seconds: float = 0.0,
) -> Plan:
    """Plan whatever ``cfg`` leaves unset for dataset ``fp`` on ``device`` (default: the config's).

    ``measure`` times real training steps of the candidate networks here (a binary search along
    :data:`LADDER`); without it the step time is estimated from FLOPs alone. ``spent_seconds`` already came off the budget (reading, checking).
    """
    device = device or runtime.resolve_device(cfg.train.device)
    choices: list[Choice] = []

    def choose(key: str, current: Any, value: Any, reason: str) -> Any:
        if current is not None:
            choices.append(Choice(key, current, "set in the config", planned=False))
            return current
        choices.append(Choice(key, value, reason))
        return value

    dims = fp.spatial_dims
    default_minutes = DEFAULT_MINUTES.get(device.type, 15.0)
    if cfg.train.epochs is not None and cfg.train.max_minutes is None:
        minutes = default_minutes  # fixed epochs: no time limit; the network is sized as for the default budget
    else:
        minutes = choose("train.max_minutes", cfg.train.max_minutes, default_minutes,
                         f"default budget on {device.type}; set --max-minutes for another")
    spacing = _plan_spacing(cfg, fp, choose)
    preset = _plan_intensity(cfg, fp, choose)
    choose("data.class_ratios", cfg.data.class_ratios, *rules.class_ratios(fp))
    choose("train.lr", cfg.train.lr, *rules.learning_rate(fp))
    name = choose("model.name", cfg.model.name, network.DEFAULT_MODELS[dims],
                  f"medseg's default {dims}D model on this budget")
    shape = rules.resampled_shape(fp, spacing)
    limit = None if cfg.train.epochs is not None and cfg.train.max_minutes is None else minutes  # None: none to raise
    size = _plan_size(cfg, fp, name, shape, spacing, device, minutes * 60.0 - spent_seconds, measure, limit,
                      preset == "ct")
    for key, current, value, reason in size.choices(cfg):
        choose(key, current, value, reason)
    choose("inference.tta", cfg.inference.tta, *_plan_mirroring(fp, shape, size))
    return Plan(choices, size.estimate, fp, [size.advice] if size.advice else [])


def _norm_reason(options: dict[str, Any], patches: int) -> str:
    """Why the planned options carry instance norms (empty when they do not)."""
    if "instance" not in (options.get("norm"), (options.get("encoder_options") or {}).get("norm")):
        return ""
    return f"; instance norms: {patches} patches a step give batch norms one case's statistics (nnU-Net's choice)"


def _plan_mirroring(fp: Fingerprint, shape: tuple[float, ...], size: _Size) -> tuple[bool, str]:
    """Test-time mirroring (nnU-Net's default) where a median case still predicts within
    :data:`MAX_TTA_SECONDS` here: averaging the flips gained 0.2 Dice points on micro2d."""
    passes = 2 ** fp.spatial_dims
    seconds = passes * size.estimate.case_seconds
    if seconds <= MAX_TTA_SECONDS:
        return True, f"average {passes} mirrored passes at prediction (≈{seconds:.0f} s a median case here)"
    return False, (f"{passes} mirrored passes would take ≈{seconds:.0f} s a median case here; "
                   "--tta turns them on")


def _plan_spacing(cfg: ExperimentConfig, fp: Fingerprint, choose: Any) -> tuple[float, ...] | None:
    if fp.spatial_dims == 2:  # 2D images keep their pixels (a config cannot set a 2D spacing)
        return None
    spacing, why = rules.target_spacing(fp)
    assert spacing is not None
    coarse, coarse_why = rules.coarsen_for_budget(fp, spacing, 4 * PATCH_VOXELS[3])
    value = choose("data.spacing", cfg.data.spacing, [round(s, 4) for s in coarse],
                   f"{why}; {coarse_why}" if coarse_why else why)
    return tuple(float(s) for s in value)


def _plan_intensity(cfg: ExperimentConfig, fp: Fingerprint, choose: Any) -> str:
    preset, intensity, why = rules.normalisation(fp)
    chosen = choose("data.preset", cfg.data.preset, preset, why)
    if chosen == "ct" and cfg.data.ct_window is None:
        if intensity is None:  # the user said CT on data whose modality was not declared CT
            intensity = rules.normalisation(_as_ct(fp))[1]
        choose("data.intensity", cfg.data.intensity, intensity, "the CT scheme's foreground statistics")
    return str(chosen)


def _as_ct(fp: Fingerprint) -> Fingerprint:
    return replace(fp, channels=tuple(replace(c, modality="CT") for c in fp.channels))


@dataclass
class _Size:
    """The patch, batch, network options and step budget the ladder settled on."""

    patch: tuple[int, ...]
    batch_size: int
    num_samples: int
    options: dict[str, Any] | None
    scale: float
    estimate: Estimate
    epochs: int
    steps_per_epoch: int
    why: str
    advice: str | None = None

    def choices(self, cfg: ExperimentConfig) -> list[tuple[str, Any, Any, str]]:
        rows = [
            ("data.patch_size", cfg.data.patch_size, list(self.patch), self.why),
            ("train.batch_size", cfg.train.batch_size, self.batch_size, "cases per step (each gives num_samples patches)"),
            ("data.num_samples", cfg.data.num_samples, self.num_samples, "patches drawn per case and step"),
            ("train.val_every", cfg.train.val_every, 1, "validate after every epoch"),
        ]
        if cfg.train.epochs is None:  # fixed epochs keep their length: one pass each (or steps_per_epoch)
            rows += [
                ("train.epochs", None, self.epochs,
                 f"at most; the time budget ends the run and its schedule (≈{self.estimate.validations} epochs, "
                 f"≈{self.estimate.steps} steps at the measured speed)"),
                ("train.steps_per_epoch", cfg.train.steps_per_epoch, self.steps_per_epoch,
                 "optimiser steps between validations"),
            ]
        if self.options is not None:
            rows.append(("model.options", None, self.options, f"widths at {self.scale:g}× the model's defaults so "
                         f"≈{self.estimate.steps} steps fit the budget ({self.estimate.measured})"
                         f"{_norm_reason(self.options, self.batch_size * self.num_samples)}"))
        return rows


def _plan_size(
    cfg: ExperimentConfig, fp: Fingerprint, name: str, shape: tuple[float, ...], spacing: tuple[float, ...] | None,
    device: torch.device, seconds: float, measure: bool, minutes: float | None, ct: bool = False,
) -> _Size:
    """The first rung of :data:`LADDER` whose steps fit :data:`MIN_STEPS` into the budget, but not below half
    widths while those fit :data:`THIN_STEPS_SHARE` of the steps; a short budget's advice names the one
    that fits them all (``minutes``: the run's time limit; None, fixed epochs, gives no advice; ``ct``:
    the data is normalised as CT, which keeps batch norms)."""
    dims = fp.spatial_dims
    sizable = not (set(cfg.model.options) & network.SIZE_OPTIONS) and name in network.SIZERS
    fixed_patch = tuple(cfg.data.patch_size) if cfg.data.patch_size is not None else None
    base_patch = fixed_patch or rules.patch_for(shape, PATCH_VOXELS[dims], PATCH_MULTIPLE[dims], MAX_PATCH_AXIS[dims])
    patches = _patches_per_step(cfg, dims, base_patch)
    norm = network.norm_for(patches, ct)
    ladder = LADDER if (sizable or fixed_patch is None) else [(1.0, 1.0)]
    cost = _StepCost(cfg, fp, name, device, measure)

    def rung(k: int) -> tuple[dict[str, Any], tuple[int, ...]]:
        scale, patch_scale = ladder[k]
        patch = fixed_patch or rules.round_patch([p * patch_scale for p in base_patch], shape, PATCH_MULTIPLE[dims])
        options = (network.sized_options(name, cfg.model.options, scale, patch, spacing, norm) if sizable
                   else dict(cfg.model.options))
        return options, patch

    def fits(k: int, share: float = 1.0) -> bool:  # 10 % room for validation and data
        return seconds / cost.seconds(*rung(k), patches) >= MIN_STEPS[dims] * 1.1 * share

    lo = _first(len(ladder), fits)
    floor = max((k for k, (scale, _) in enumerate(ladder) if scale >= HALF_WIDTH), default=None) if sizable else None
    if floor is not None and lo > floor and fits(floor, THIN_STEPS_SHARE):
        lo = floor  # half widths with fewer steps learned small structures that thinner networks missed
    options, patch = rung(lo)
    step = cost.seconds(options, patch, patches)
    window = cost.window_seconds(options, patch, step, patches)
    size = _budget(cfg, fp, shape, patch, patches, options if sizable else None, ladder[lo][0], step, window,
                   seconds, cost.how)
    if minutes is not None and floor is not None and lo >= floor and not fits(floor):
        needed = minutes * 60.0 - seconds + cost.spent + MIN_STEPS[dims] * 1.1 * cost.seconds(*rung(floor), patches)
        size.advice = _short_budget_advice(fp, size, minutes, rung(floor)[1], math.ceil(needed / 60.0))
    return size


def _first(n: int, fits: Callable[[int], bool]) -> int:
    """The first of ``n`` rungs that ``fits`` (binary search: step time only falls along the ladder);
    the last one when none does."""
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _short_budget_advice(
    fp: Fingerprint, size: _Size, minutes: float, floor_patch: tuple[int, ...], floor_minutes: int,
) -> str:
    """One line: how few steps the budget fits here, and the budget that fits them at half widths."""
    wanted, crops = MIN_STEPS[fp.spatial_dims], "×".join(map(str, size.patch))
    head = f"short budget: {minutes:g} min on this machine fit ≈{size.estimate.steps} steps"
    if size.scale >= HALF_WIDTH:
        return (f"{head} of {size.scale:g}× widths at {crops} crops ({wanted} wanted); "
                f"--max-minutes {floor_minutes} fits {wanted}")
    rarest = min(fp.classes, key=lambda c: c.fraction, default=None)
    small = f" such as '{rarest.name}' ({rarest.fraction:.2%} of voxels)" if rarest is not None else ""
    return (f"{head} only at {size.scale:g}× widths and {crops} crops, a network too small for small "
            f"structures{small}; --max-minutes {floor_minutes} fits {wanted} steps of {HALF_WIDTH:g}× widths at "
            f"{'×'.join(map(str, floor_patch))} crops")


def _patches_per_step(cfg: ExperimentConfig, dims: int, patch: tuple[int, ...]) -> int:
    if cfg.train.batch_size is not None:
        return cfg.train.batch_size * (cfg.data.num_samples or 2)
    if dims == 3:
        return 2  # nnU-Net's 3D batch
    return int(min(16, max(8, 2 * round(STEP_VOXELS_2D / math.prod(patch) / 2))))


class _StepCost:
    """Step seconds of a candidate: real training steps at the planned patches a step, timed here.

    Without measuring, forward FLOPs at :data:`FALLBACK` seconds each (a pessimistic constant).
    """

    #: seconds per forward GFLOP of a training step when nothing is measured
    FALLBACK = 0.03

    def __init__(self, cfg: ExperimentConfig, fp: Fingerprint, name: str, device: torch.device, measure: bool) -> None:
        self.cfg, self.fp, self.name, self.device, self.measure = cfg, fp, name, device, measure
        self.known: dict[str, float] = {}
        self.spent = 0.0
        self.how = "estimated from FLOPs"

    def _settings(self) -> tuple[runtime.Precision, bool]:
        """The precision and memory format the timed passes run in: the training run's."""
        return (runtime.resolve_precision(self.cfg.train.precision, self.device),
                runtime.resolve_channels_last(self.cfg.train.channels_last))

    def _args(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"name": self.name, "spatial_dims": self.fp.spatial_dims, "in_channels": self.fp.num_channels,
                "out_channels": len(self.fp.labels), **options}

    def seconds(self, options: dict[str, Any], patch: tuple[int, ...], patches: int) -> float:
        key = repr((options, patch, patches))
        if key not in self.known:
            if self.measure:
                precision, channels_last = self._settings()
                t0 = time.perf_counter()
                # at the real batch: timing two patches and scaling overestimated a 2D step of 10 by 2×
                self.known[key] = network.measure_step_seconds(self._args(options), patch, max(2, patches),
                                                               self.device, precision, channels_last) / patches
                self.spent += time.perf_counter() - t0
                self.how = f"measured here in {self.spent:.0f} s"
            else:
                self.known[key] = self.FALLBACK * network.gflops(
                    self.name, self.fp.spatial_dims, self.fp.num_channels, len(self.fp.labels), options, patch)
        return self.known[key] * patches

    def window_seconds(self, options: dict[str, Any], patch: tuple[int, ...], step: float, patches: int) -> float:
        """Seconds of one sliding-window patch at prediction: timed here (a batch of ``sw_batch_size``
        in inference mode), or without measuring 1/2.5 of a training step's patch."""
        if not self.measure:
            return step / (2.5 * patches)
        precision, channels_last = self._settings()
        batch = self.cfg.inference.sw_batch_size
        t0 = time.perf_counter()
        seconds = network.measure_forward_seconds(self._args(options), patch, batch, self.device, precision,
                                                  channels_last) / batch
        self.spent += time.perf_counter() - t0
        self.how = f"measured here in {self.spent:.0f} s"
        return seconds


def sliding_windows(shape: Sequence[float], patch: Sequence[int], overlap: float) -> int:
    """Windows MONAI's ``sliding_window_inference`` runs over ``shape``: per axis, steps of
    ``int(patch × (1 - overlap))`` from 0 until a window reaches the end."""
    counts = []
    for size, roi in zip(shape, patch, strict=True):
        interval = max(1, int(roi * (1 - overlap)))
        counts.append(1 if size <= roi else math.ceil((size - roi) / interval) + 1)
    return math.prod(counts)


def _budget(
    cfg: ExperimentConfig, fp: Fingerprint, shape: tuple[float, ...], patch: tuple[int, ...], patches: int,
    options: dict[str, Any] | None, scale: float, step: float, window: float, seconds: float, how: str,
) -> _Size:
    """Steps, validations and epochs from the step time, one window's prediction time and the seconds left."""
    dims = fp.spatial_dims
    n_val = max(1, round(fp.num_cases * cfg.data.val_fraction))
    case = sliding_windows(shape, patch, cfg.inference.overlap) * window
    validation = n_val * case + 0.5
    validations = int(max(2, min(MAX_VALIDATIONS, VALIDATION_SHARE * seconds / validation)))
    steps = max(1, int((seconds - validations * validation) * 0.92 / step))  # 8 % for data and saving
    per_epoch = max(1, math.ceil(steps / validations))
    num_samples = 2 if patches >= 2 else 1
    batch = max(1, min(patches // num_samples, max(1, fp.num_cases - n_val)))
    why = (f"the median image at the planned spacing ({'×'.join(f'{s:.0f}' for s in shape)}), "
           f"at most {PATCH_VOXELS[dims] // 1000} k voxels a patch, shrunk until ≥ {MIN_STEPS[dims]} steps fit "
           f"(at half widths, ≥ {MIN_STEPS[dims] * THIN_STEPS_SHARE:.0f})")
    estimate = Estimate(round(step, 4), steps, validations, round(validation, 2), how, round(case, 2))
    return _Size(patch, batch, num_samples, options, scale, estimate, validations * EPOCH_HEADROOM, per_epoch, why)
