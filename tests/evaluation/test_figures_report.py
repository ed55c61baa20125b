"""Figures are real PNGs of the promised size; the HTML report is one self-contained, well-formed page."""

from __future__ import annotations

import base64
import csv
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from medseg.evaluation import evaluate_arrays, summarise
from medseg.evaluation.figures import (
    BARS_SIZE_PX,
    CURVES_SIZE_PX,
    LABEL_COLOURS,
    grid_size_px,
    mid_slice,
    plot_bars,
    plot_curves,
    plot_grid,
)
from medseg.evaluation.report import external_references, html_table, markdown_table, write_report


def png_size(path: Path) -> tuple[int, int]:
    image = imread(path)
    assert image.std() > 0, f"{path} is blank"
    return image.shape[1], image.shape[0]


def test_plot_curves_from_rows_and_csv(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": "" if e % 2 else 0.9 / e, "val_dice": "" if e % 2
             else 0.1 * e, "dice_organ": "" if e % 2 else 0.09 * e, "lr": 1e-3} for e in range(1, 7)]
    assert png_size(plot_curves(rows, tmp_path / "a.png")) == CURVES_SIZE_PX
    with (tmp_path / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert png_size(plot_curves(tmp_path / "metrics.csv", tmp_path / "b.png")) == CURVES_SIZE_PX
    assert png_size(plot_curves([], tmp_path / "empty.png")) == CURVES_SIZE_PX


def test_mid_slice_picks_most_foreground():
    vol = np.zeros((6, 6, 9), np.uint8)
    vol[1:3, 1:3, 2] = 1
    vol[1:5, 1:5, 6] = 2
    assert mid_slice(vol) == 6 and mid_slice(vol, label=1) == 2
    assert mid_slice(vol, axis=0) == 1
    assert mid_slice(np.zeros((4, 4, 9))) == 4


def test_plot_grid_size_and_overlay_colour(tmp_path):
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(3):
        image = rng.random((40, 32)).astype(np.float32)
        mask = np.zeros((40, 32), np.uint8)
        mask[10:30, 8:20] = 1
        cases.append((image, mask, np.roll(mask, 3, axis=0)))
    rows = [("unet", cases), ("dual_unet_resnet", cases)]
    out = plot_grid(rows, tmp_path / "grid.png", labels={0: "background", 1: "organ"})
    assert png_size(out) == grid_size_px(2, 3, legend=True)
    assert png_size(plot_grid(rows[:1], tmp_path / "one.png")) == grid_size_px(1, 3)
    pixels = imread(out)[..., :3]
    # the label-1 colour, blended at alpha 0.55 over a grey image, dominates the mask panels
    colour = np.asarray(to_rgb(LABEL_COLOURS[0]))
    hue = pixels - pixels.mean(-1, keepdims=True)
    target = colour - colour.mean()
    assert np.sum(np.abs(hue - 0.55 * target).sum(-1) < 0.12) > 1000


def test_plot_bars_from_summaries(tmp_path):
    rng = np.random.default_rng(1)
    summaries = {}
    for name in ("fcn", "unet"):
        rows = []
        for k in range(6):
            p, g = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
            g[4:14, 4:14] = 1
            p[4 + rng.integers(0, 4):14, 4:14] = 1
            rows += evaluate_arrays(p, g, case=str(k), labels={1: "organ"})
        summaries[name] = summarise(rows)
    assert png_size(plot_bars(summaries, "dice", tmp_path / "bars.png")) == BARS_SIZE_PX
    assert png_size(plot_bars(summaries, "hd95", tmp_path / "hd.png", error="ci95")) == BARS_SIZE_PX
    with pytest.raises(ValueError, match="error"):
        plot_bars(summaries, "dice", tmp_path / "x.png", error="sem")


class _Checker(HTMLParser):
    """Tracks open elements; fails on a mismatched end tag."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def test_report_is_self_contained_valid_html(tmp_path):
    png = plot_curves([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}], tmp_path / "c.png")
    (tmp_path / "config.yaml").write_text("model: unet\nlr: 0.001  # <b>not html</b>\n")
    rows = [{"model": "unet", "dice": 0.8123456, "note": "a|b <i>"}, {"model": "fcn", "dice": float("nan")}]
    out = write_report(tmp_path / "report.html", "Compare <models>", [
        ("Summary", "<p>Four models, 3 cases.</p>"),
        ("Table", html_table(rows, ["model", "dice", "note"])),
        ("Curves", png),
        ("Config", tmp_path / "config.yaml"),
        ("Config", ("pre", "data = 5\nsrc='x'")),
        ("Mixed", [("text", "a & b"), ("table", (rows, ["model"])), ("image", png.read_bytes())]),
    ])
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>Compare &lt;models&gt;</title>" in page
    checker = _Checker()
    checker.feed(page)
    assert checker.stack == []
    images = [attrs["src"] for tag, attrs in checker.tags if tag == "img"]
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1]) == png.read_bytes()
    assert external_references(page) == [] and "<script" not in page
    assert {attrs["id"] for tag, attrs in checker.tags if tag == "section"} == {
        "summary", "table", "curves", "config", "config-2", "mixed"}
    assert "&lt;b&gt;not html&lt;/b&gt;" in page and "a|b &lt;i&gt;" in page and "0.8123" in page
    assert re.search(r"<td>nan</td>", page)


def test_report_refuses_external_resources(tmp_path):
    for fragment in ('<img src="https://example.org/x.png">', '<link rel="stylesheet" href="style.css">',
                     '<div style="background: url(http://x/y.png)"></div>'):
        with pytest.raises(ValueError, match="external"):
            write_report(tmp_path / "r.html", "t", [("s", fragment)])
    assert not (tmp_path / "r.html").exists()


def test_markdown_table():
    text = markdown_table([{"model": "a|b", "dice": 0.5}, {"model": "c"}], ["model", "dice"])
    assert text.splitlines() == ["| model | dice |", "|---|---|", "| a\\|b | 0.5000 |", "| c |  |"]
