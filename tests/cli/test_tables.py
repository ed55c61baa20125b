"""Terminal tables of evaluate and compare keep every number whole on an 80-column terminal."""

from __future__ import annotations

from rich.console import Console

from medseg.cli.evaluate import summary_table


def _summary(names: list[str]) -> dict:
    values = {"dice": 0.934, "iou": 0.871, "hd95": 112.34, "assd": 11.25, "nsd": 0.912, "lesion_f1": 0.667}
    return {"n_cases": 12, "tolerance_mm": 1.0,
            "metrics": {k: {n: {"mean": v, "std": 0.0123, "n": 12} for n in names} for k, v in values.items()},
            "counts": {n: {"ok": 11, "pred_empty": 1, "gt_empty": 0, "both_empty": 0} for n in names}}


def test_numbers_are_whole_at_80_columns() -> None:
    names = ["organ", "small_hypodense_lesion", "oedema"]
    console = Console(width=80, record=True, color_system=None)
    console.print(summary_table(_summary(names)))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for number in ("0.934", "0.871", "112.34", "11.25", "0.912", "0.667", "±0.012", "1/0/0"):
        assert text.count(number) >= len(names), number


def test_names_come_from_the_dataset_json_beside_the_labels(tmp_path) -> None:
    import json

    from medseg.cli.evaluate import dataset_labels

    labels = tmp_path / "labelsTs"
    labels.mkdir()
    assert dataset_labels(labels) is None
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "oedema": 1, "core": 2}}))
    assert dataset_labels(labels) == {1: "oedema", 2: "core"}  # nnU-Net v2: name -> value
    (labels / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ"}}))
    assert dataset_labels(labels) == {1: "organ"}  # MSD, and the nearer file wins


def test_the_comparison_table_fits_80_columns() -> None:
    from medseg.cli.compare import comparison_table
    from medseg.experiments.compare import COLUMNS

    values = {"dice": "0.9498 ± 0.0100", "iou": "0.9046 ± 0.0181", "hd95": "11.48 ± 10.46", "params_m": "26.04",
              "gflops": "15.74", "train_minutes": "10.9", "epochs": "120", "infer_seconds_per_case": "0.04"}
    rows = [{"model": name, **values} for name in ("fcn", "unet_resnet", "dual_unet_resnet")]
    assert set(rows[0]) == set(COLUMNS)
    console = Console(width=80, record=True, color_system=None)
    console.print(comparison_table(rows, 8))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    for number in ("0.9498", "±0.0100", "11.48", "±10.46", "26.04", "15.74", "10.9", "120", "0.04"):
        assert text.count(number) == 3, number
