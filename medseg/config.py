"""Typed experiment configuration: YAML files, composed by ``base:``, overridden from the CLI.

A config has four sections (``model``, ``data``, ``train``, ``inference``) plus ``out``. Files may
name other configs in ``base:`` (built-in names such as ``nuclei2d`` or paths); later values win.
Every mistake is one line that names the file and the key: unknown keys, wrong types and
impossible values alike.

Values left at ``None`` are *planned*: :mod:`medseg.planning` chooses them from the dataset's
fingerprint, the machine and the time budget when training starts, and the run records which were
planned and why. A value set anywhere (a config file, a flag, ``--set``) is never replaced.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medseg.errors import MedsegError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_MODEL = "dual_unet_resnet"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which network to build; ``options`` go to :func:`medseg.models.build_model` unchanged."""

    name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Section):
    """Where the cases are and how they are preprocessed (stored with every run for ``predict``)."""

    path: str | None = None
    demo: Literal["nuclei2d", "organ3d"] = "nuclei2d"
    preset: Literal["ct", "mri", "zscore", "gray2d", "rgb2d"] | None = None
    patch_size: list[int] | None = None
    spacing: list[float] | None = None
    ct_window: tuple[float, float] | None = None
    #: CT normalisation statistics per channel (``clip``: low, high pairs; ``mean``; ``std``), planned
    #: from the fingerprint's foreground unless ``ct_window`` is set.
    intensity: dict[str, list[float]] | None = None
    #: Share of training patches centred on each class, background first (planned: equal shares).
    class_ratios: list[float] | None = None
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    fold: int | None = Field(None, ge=0)
    num_folds: int = Field(5, ge=2)
    #: The splits file (nnU-Net's ``splits_final.json`` format); default ``<dataset>/splits.json``.
    #: A cross-validation keeps its own in its parent run directory.
    split_file: str | None = None
    num_samples: int | None = Field(None, ge=1)
    elastic: bool = False
    cache: Literal["none", "memory", "disk"] = "memory"
    num_workers: int = Field(0, ge=0)

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) not in (2, 3) or any(v < 8 for v in value)):
            raise ValueError("must list 2 or 3 sizes, each at least 8, e.g. [128, 128] or [96, 96, 64]")
        return value

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 3 or any(v <= 0 for v in value)):
            raise ValueError("must be three positive numbers in mm, e.g. [1.5, 1.5, 2.0]")
        return value


class TrainConfig(_Section):
    """Optimisation, schedule, validation cadence and the hardware path."""

    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)  # planned (medseg.planning.rules.learning_rate); 1e-3 when not
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.99, ge=0, lt=1)
    schedule: Literal["cosine", "poly", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)  # with max_minutes, at most 5 % of the steps' time (schedule.py)
    grad_clip: float | None = Field(12.0, gt=0)
    loss: Literal["dice_ce", "dice_focal"] = "dice_ce"
    deep_supervision_weights: list[float] = Field(default_factory=lambda: [1.0, 0.5])
    val_every: int | None = Field(None, ge=1)
    early_stopping: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    steps_per_epoch: int | None = Field(None, ge=1)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False

    @property
    def learning_rate(self) -> float:
        """``lr``, or 1e-3 where neither the user nor the planner set one (a fixed config)."""
        return self.lr if self.lr is not None else 1e-3


class InferenceConfig(_Section):
    """Sliding-window settings shared by validation and ``medseg predict``."""

    overlap: float = Field(0.5, ge=0, lt=1)
    sw_batch_size: int = Field(4, ge=1)
    blend: Literal["gaussian", "constant"] = "gaussian"
    #: average the mirrored passes; None: planned (on where a case still predicts within a minute), else off
    tta: bool | None = None
    largest_component: bool = False
    save_probabilities: bool = False
    #: above this many GiB of whole-volume logits, the class decision is taken slab by slab (bounded memory)
    max_logits_gib: float = Field(2.0, gt=0)


class ExperimentConfig(_Section):
    """The whole experiment; ``medseg train`` writes the resolved one to ``config.yaml``."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    out: str = "runs"

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.data.spacing is not None and self.data.patch_size is not None and len(self.data.patch_size) != 3:
            raise ValueError("data.spacing is for 3D data; set a 3-number data.patch_size or remove data.spacing")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def completes(self, requested: ExperimentConfig) -> bool:
        """True when every value ``requested`` sets is the same here: this is ``requested`` planned."""
        return _is_subset(requested.model_dump(mode="json", exclude_none=True), self.model_dump(mode="json"))

    def needs_planning(self) -> bool:
        """True when any value that sizes the run is left to the planner.

        A config that fixes the model, the normalisation, the patch, the batch and the epochs (as the
        demo's does) runs as it is: ``steps_per_epoch`` left unset then means one pass over the data.
        """
        return any(getattr(getattr(self, section), key) is None for section, key in _PRIMARY)


def _is_subset(part: Any, whole: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and _is_subset(v, whole[k]) for k, v in part.items())
    return bool(part == whole)


#: The values whose absence makes :mod:`medseg.planning` plan the run (and everything else left unset).
_PRIMARY = (("model", "name"), ("data", "preset"), ("data", "patch_size"), ("train", "epochs"),
            ("train", "batch_size"))


def builtin_configs() -> list[str]:
    """Names of the configs shipped with medseg (``configs/`` in the repository)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_ref(ref: str, relative_to: Path | None) -> Path:
    candidates = [Path(ref)]
    if relative_to is not None:
        candidates.insert(0, relative_to.parent / ref)
    candidates.append(CONFIG_DIR / (ref if ref.endswith((".yaml", ".yml")) else f"{ref}.yaml"))
    for path in candidates:
        if path.is_file():
            return path
    where = f" (named in {relative_to})" if relative_to else ""
    raise MedsegError(
        f"config '{ref}'{where} not found; give a YAML path or one of: {', '.join(builtin_configs())}"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise MedsegError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)}); fix the syntax") from err
    except OSError as err:
        raise MedsegError(f"{path}: cannot read config ({err.strerror}); check the path") from err
    if not isinstance(data, dict):
        raise MedsegError(f"{path}: a config must be a mapping of sections (model, data, train, inference)")
    return data


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge nested mappings; values in ``update`` win, except ``model.options`` merge key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_raw(ref: str | Path, relative_to: Path | None = None, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one config and everything it names in ``base:``, merged in order."""
    path = _resolve_ref(str(ref), relative_to).resolve()
    if path in _seen:
        raise MedsegError(f"{path}: 'base' includes itself through {' -> '.join(map(str, _seen))}; remove the loop")
    data = _read_yaml(path)
    bases = data.pop("base", []) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, load_raw(base, path, (*_seen, path)))
    return deep_merge(merged, data)


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``--set train.lr=3e-4`` items into a nested dict; values are parsed as YAML scalars."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MedsegError(f"--set '{item}': expected section.key=value, e.g. --set train.lr=3e-4")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _scalar(value)
    return result


def _scalar(text: str) -> Any:
    """Parse a --set value as YAML; also read ``1e-3`` as a number (YAML 1.1 wants ``1.0e-3``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _format_error(err: ValidationError, source: str) -> str:
    """The first validation problem as one line: where, which key, what is wrong, how to fix it."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        section_model: type[BaseModel] = ExperimentConfig
        for part in first["loc"][:-1]:
            field = section_model.model_fields.get(str(part))
            annotation = getattr(field, "annotation", None) if field else None
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                section_model = annotation
        known = list(section_model.model_fields)
        guess = difflib.get_close_matches(str(first["loc"][-1]), known, n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else f"known keys: {', '.join(known)}"
        return f"{source}: unknown key '{loc}'; {hint}"
    value = first.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict | list) else ""
    return f"{source}: {loc or 'config'}: {first['msg']}{shown}; fix this value"


def validate(raw: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping into an :class:`ExperimentConfig` or raise a one-line MedsegError."""
    try:
        return ExperimentConfig.model_validate(dict(raw))
    except ValidationError as err:
        raise MedsegError(_format_error(err, source)) from None


def resolve_config(
    model: str | None = None,
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
) -> ExperimentConfig:
    """Compose the experiment config the way ``medseg train`` does.

    Order, later wins: the built-in config of the model (``configs/<model>.yaml``: its architecture,
    never a dataset's sizes), the ``config`` file (its model section replaced by the built-in one
    when ``model`` names another model), the explicit ``overrides`` (``{"train": {"epochs": 3}}``),
    then ``--set`` items. Without a dataset (no ``data.path``) the demo task's config
    (``data.demo``: ``nuclei2d`` or ``organ3d``) goes underneath everything and the model defaults
    to ``dual_unet_resnet``; with one, whatever is left unset is planned when training starts.
    """
    user = load_raw(config) if config else {}
    file_model = user.get("model", {}).get("name")
    if model and file_model and file_model != model:
        user = {**user, "model": {"name": model}}
    raw = deep_merge(_builtin_for(model or file_model) if (model or file_model) else {}, user)
    raw = deep_merge(raw, overrides or {})
    extra = parse_set(sets)
    raw = _with_demo(deep_merge(raw, extra))
    source = str(config) if config else f"built-in config '{model or DEFAULT_MODEL}'"
    return validate(raw, source + (" with --set" if extra else ""))


def _with_demo(raw: dict[str, Any]) -> dict[str, Any]:
    """Without a dataset, the demo task's config (and the default model) go underneath ``raw``."""
    data = raw.get("data") or {}
    if data.get("path"):
        return raw
    below = load_raw(str(data.get("demo") or "nuclei2d"))
    if not (raw.get("model") or {}).get("name"):
        below = deep_merge(below, _builtin_for(DEFAULT_MODEL))
    return deep_merge(below, raw)


def _builtin_for(model: str) -> dict[str, Any]:
    """The built-in config of ``model`` (architecture choices only), or just its name."""
    path = CONFIG_DIR / f"{model}.yaml"
    if path.is_file():
        return load_raw(path)
    return {"model": {"name": model}}


def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate one YAML file (a run's ``config.yaml`` or any experiment file)."""
    return validate(load_raw(path), str(path))
