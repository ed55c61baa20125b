"""Make docs/images/seg_nrrd.png: what 3D Slicer is handed by ``medseg predict --stats --format seg.nrrd``.

It runs what a user would (all through the CLI, on data made unlike the demo), then draws the
``.seg.nrrd`` as ``slicerio`` reads it back: three planes through the largest structure, each
segment in the colour and under the name its header carries, with the volume from
``statistics.csv`` in the legend. Takes about four minutes on 2 CPU cores.

    python docs/figures/seg_nrrd_view.py [--out docs/images/seg_nrrd.png] [--minutes 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import slicerio
from matplotlib.patches import Patch

COLOURS = {"organ": [221, 130, 101], "lesion": [241, 214, 145]}  # Slicer's liver and tumour colours


def medseg(*args: str) -> None:
    """Run the medseg CLI as a user would; stop on the first failure."""
    subprocess.run([sys.executable, "-m", "medseg", *args], check=True)


def make_prediction(work: Path, minutes: float) -> tuple[Path, Path, Path]:
    """Synthesise a CT-like set with dataset.json colours, train, predict one test case."""
    data = work / "ct"
    medseg("data", "synth", "--kind", "ct3d_lesion", "--out", str(data))
    spec = json.loads((data / "dataset.json").read_text())
    spec["colors"] = COLOURS
    (data / "dataset.json").write_text(json.dumps(spec, indent=2))
    medseg("train", "--data", str(data), "--max-minutes", str(minutes), "--out", str(work / "run"))
    scan = sorted((data / "imagesTs").iterdir())[0]
    out = work / "pred"
    medseg("predict", str(scan), "--run", str(work / "run"), "-o", str(out),
           "--stats", "--format", "seg.nrrd")
    return scan, next(out.glob("*.seg.nrrd")), out / "statistics.csv"


def volumes(stats: Path) -> dict[str, float]:
    with stats.open(newline="") as handle:
        return {row["structure"]: float(row["volume"]) for row in csv.DictReader(handle)}


def draw(scan: Path, seg_path: Path, stats: Path, out: Path) -> None:
    """Axial, coronal and sagittal planes through the largest structure's centre, Slicer-style."""
    seg = slicerio.read_segmentation(str(seg_path))
    nifti = nib.load(scan)
    labels, image = np.asarray(seg["voxels"]), np.asarray(nifti.dataobj, dtype=np.float32)
    sx, sy, sz = (float(z) for z in nifti.header.get_zooms()[:3])
    assert labels.shape == image.shape, (labels.shape, image.shape)
    centre = [int(np.median(a)) for a in np.nonzero(labels)]
    lookup = np.zeros((int(labels.max()) + 1, 4))
    for s in seg["segments"]:
        lookup[s["labelValue"]] = [*s["color"], 0.55]
    ml = volumes(stats)
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.2), facecolor="black")
    planes = ((2, "axial", sy / sx), (1, "coronal", sz / sx), (0, "sagittal", sz / sy))  # rows' over columns' mm
    for ax, (axis, title, aspect) in zip(axes, planes):
        index = [slice(None)] * 3
        index[axis] = centre[axis]
        ax.imshow(np.rot90(image[tuple(index)]), cmap="gray", vmin=-175, vmax=250, aspect=aspect)
        ax.imshow(np.rot90(lookup[labels[tuple(index)]], axes=(0, 1)), aspect=aspect)
        ax.set_title(title, color="white")
        ax.axis("off")
    handles = [Patch(color=s["color"], label=f'{s["name"]} (value {s["labelValue"]}): {ml.get(s["name"], 0):.1f} mL')
               for s in seg["segments"]]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white")
    fig.suptitle(f"{seg_path.name} as slicerio reads it: names, colours and volumes from the file", color="white")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor="black")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/seg_nrrd.png"))
    parser.add_argument("--minutes", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        draw(*make_prediction(Path(tmp), args.minutes), args.out)


if __name__ == "__main__":
    main()
