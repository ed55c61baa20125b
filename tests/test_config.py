"""Config composition, CLI overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.config import builtin_configs, load_config, parse_set, resolve_config
from medseg.errors import MedsegError


def test_builtin_configs_cover_every_model_and_task() -> None:
    names = set(builtin_configs())
    assert {"fcn", "unet", "unet_resnet", "dual_unet_resnet", "nuclei2d", "organ3d"} <= names
    for name in names:
        cfg = resolve_config(config=name)
        assert cfg.train.epochs >= 1


def test_model_config_bases_on_task_and_cli_wins() -> None:
    cfg = resolve_config(model="unet_resnet", overrides={"train": {"epochs": 3}}, sets=["train.lr=3e-4"])
    assert cfg.model.name == "unet_resnet"
    assert cfg.model.options["encoder"] == "resnet34"
    assert cfg.data.demo == "nuclei2d"  # inherited through base: [nuclei2d]
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(3e-4)


def test_model_flag_replaces_model_section_of_a_task_config() -> None:
    cfg = resolve_config(model="fcn", config="organ3d")
    assert cfg.model.name == "fcn" and cfg.model.options["variant"] == "fcn8s"
    assert cfg.data.demo == "organ3d" and cfg.data.patch_size == [64, 64, 32]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: {epocs: 3}", "unknown key 'train.epocs'; did you mean 'epochs'?"),
        ("train: {epochs: 0}", "train.epochs"),
        ("train: {precision: fp8}", "train.precision"),
        ("data: {patch_size: [4, 4]}", "data.patch_size"),
        ("trian: {}", "unknown key 'trian'; did you mean 'train'?"),
        ("train: [1, 2", "not valid YAML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MedsegError) as info:
        load_config(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_set_parses_yaml_scalars_and_rejects_garbage() -> None:
    assert parse_set(["train.lr=1e-3", "data.patch_size=[64, 64]", "train.compile=true"]) == {
        "train": {"lr": 1e-3, "compile": True},
        "data": {"patch_size": [64, 64]},
    }
    with pytest.raises(MedsegError, match=r"section\.key=value"):
        parse_set(["train.lr"])


def test_base_loop_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("base: [a.yaml]\n")
    with pytest.raises(MedsegError, match="includes itself"):
        load_config(tmp_path / "a.yaml")


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = resolve_config(model="dual_unet_resnet", sets=["train.epochs=2"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
