"""Time and peak memory of ``Predictor.predict_file`` on a large CT-like volume, per precision.

What it does:

1. writes a synthetic CT (int16 HU, default 512×512×300 at 0.8×0.8×1.5 mm, LPS-oriented as
   scanners store it, so orientation is inverted too) as NIfTI into a temporary folder;
2. makes a run directory without training: a small ``unet_resnet`` (resnet18 with narrow widths)
   with random weights, ``ct`` preset, patch 96×96×48 and a target spacing (default 1.6×1.6×3.0 mm,
   so the prediction is resampled there and back);
3. for each precision (default ``auto`` then ``fp32``) starts a *fresh* Python process that builds
   the ``Predictor`` and runs ``predict_file`` once, and reads that process's peak resident memory
   (``ru_maxrss`` of exactly that child, via ``os.wait4``; ``RUSAGE_CHILDREN`` would give the maximum
   over all children so far). The child also reports its resident memory before predicting
   (imports, model), so the table shows what prediction itself adds.

Wall time is ``predict_file`` alone: read, preprocess, sliding window, map back, write. The masks
are not compared (random weights); instead the largest bf16-vs-fp32 logit difference on a patch is reported.

Run it when the machine is quiet: ``python benchmarks/predict_ct.py [--markdown docs/benchmarks.md]``;
``--shape 256 256 120`` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from markdown_section import write_section

ENCODER = {"encoder": "resnet18", "encoder_options": {"widths": [16, 32, 64, 128]},
           "decoder_channels": [64, 32, 16, 16, 8]}


def synthetic_ct(path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    """Air, a body ellipse (soft tissue with noise), a spine-like bone rod and a brighter organ; int16 HU."""
    import nibabel as nib

    x, y = np.meshgrid(np.arange(shape[0]) - shape[0] / 2, np.arange(shape[1]) - shape[1] / 2, indexing="ij")
    body = (x / (0.42 * shape[0])) ** 2 + (y / (0.32 * shape[1])) ** 2 <= 1
    bone = ((x) / (0.04 * shape[0])) ** 2 + ((y - 0.2 * shape[1]) / (0.04 * shape[1])) ** 2 <= 1
    rng = np.random.default_rng(0)
    data = np.empty(shape, dtype=np.int16)
    for k in range(shape[2]):  # slice by slice: no full-volume float temporaries
        z = (k - shape[2] / 2) / (0.3 * shape[2])
        organ = ((x + 0.12 * shape[0]) / (0.14 * shape[0])) ** 2 + (y / (0.12 * shape[1])) ** 2 + z**2 <= 1
        hu = np.where(body, 40.0, -1000.0) + np.where(organ, 60.0, 0.0) + np.where(bone, 660.0, 0.0)
        data[:, :, k] = (hu + rng.normal(0, 15, hu.shape)).astype(np.int16)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS storage: Orientationd flips two axes
    affine[:3, 3] = (200.0, 180.0, -300.0)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def make_run(root: Path, patch: list[int], spacing: list[float] | None, classes: int = 2) -> Path:
    """A run directory as ``medseg train`` writes it, with random weights (speed does not depend on them)."""
    import torch

    from medseg.config import resolve_config
    from medseg.models import build_model
    from medseg.run import DEFAULT_CT_WINDOW, Preprocess, checkpoint_metadata, save_weights
    from medseg.utils import atomic_write_text

    torch.manual_seed(0)
    model = build_model("unet_resnet", spatial_dims=3, in_channels=1, out_channels=classes, **ENCODER)
    cfg = resolve_config(model="unet_resnet", overrides={
        "model": {"options": ENCODER}, "data": {"patch_size": patch, "spacing": spacing, "preset": "ct"},
    })
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "config.yaml", cfg.to_yaml())
    names = {0: "background", 1: "organ", **{k: f"structure_{k}" for k in range(2, classes)}}
    preprocess = Preprocess("ct", 3, tuple(patch), 1, names,
                            tuple(spacing) if spacing else None, DEFAULT_CT_WINDOW)
    save_weights(root / "best.safetensors", model, checkpoint_metadata(model.build_args, preprocess))
    return root


def child(run: str, image: str, precision: str, out: str) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    from medseg.inference import Predictor

    predictor = Predictor(run, device="cpu", precision=precision)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    marks: list[float] = []

    def timed(method):  # record when the network and the mapping back start and end
        def wrapper(*args, **kwargs):
            marks.append(time.perf_counter())
            result = method(*args, **kwargs)
            marks.append(time.perf_counter())
            return result
        return wrapper

    predictor.logits = timed(predictor.logits)
    import medseg.inference.predictor as predictor_module

    predictor_module.to_original = timed(predictor_module.to_original)
    start = time.perf_counter()
    predictor.predict_file(Path(image), Path(out))
    end = time.perf_counter()
    stages = {"read": marks[0] - start, "network": marks[1] - marks[0], "back": marks[3] - marks[2], "write": end - marks[3]}
    print(json.dumps({"precision": str(predictor.precision), "seconds": end - start, "rss_before_kib": before,
                      "threads": __import__("torch").get_num_threads(), "stages": stages}))


def monai_child(run: str, image: str, precision: str, out: str) -> None:
    """MONAI's tutorial pipeline on the same network and weights: LoadImaged … Spacingd, scaling,
    ``sliding_window_inference``, ``Invertd`` (bilinear on the logits), argmax, ``SaveImaged``."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImaged,
        ScaleIntensityRanged,
        Spacingd,
    )

    from medseg import runtime
    from medseg.run import read_checkpoint

    ckpt = read_checkpoint(Path(run), "best")
    model = ckpt.build().eval()
    prep = ckpt.preprocess
    steps = [LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS")]
    if prep.spacing:
        steps.append(Spacingd("image", pixdim=prep.spacing, mode="bilinear"))
    low, high = prep.ct_window or (-160.0, 240.0)
    pre = Compose([*steps, ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    data = pre({"image": image})
    t_net = time.perf_counter()
    cpu = torch.device("cpu")
    with torch.inference_mode(), runtime.autocast(runtime.resolve_precision(precision, cpu), cpu):
        logits = sliding_window_inference(data["image"][None], list(prep.patch_size), 4, model, overlap=0.5,
                                          mode="gaussian")
    data["pred"] = logits[0].float()
    t_back = time.perf_counter()
    post = Compose([Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
                    AsDiscreted("pred", argmax=True),
                    SaveImaged("pred", output_dir=str(Path(out).parent), output_postfix="monai", separate_folder=False,
                               output_dtype="uint8", print_log=False)])
    with torch.inference_mode():
        post(data)
    end = time.perf_counter()
    stages = {"read": t_net - start, "network": t_back - t_net, "back": end - t_back, "write": 0.0}
    print(json.dumps({"precision": f"MONAI tutorial ({precision})", "seconds": end - start, "rss_before_kib": before,
                      "threads": torch.get_num_threads(), "stages": stages}))


def batch_child(run: str, folder: str, precision: str, out: str) -> None:
    """``predict_many`` over a folder (reading ahead, writing behind); the network's share of the wall."""
    from medseg.inference import Predictor
    from medseg.inference.batch import predict_many

    predictor = Predictor(run, device="cpu", precision=precision)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    network: list[float] = []
    logits = predictor.logits

    def timed(image):  # the network part of each case
        t0 = time.perf_counter()
        result = logits(image)
        network.append(time.perf_counter() - t0)
        return result

    predictor.logits = timed
    start = time.perf_counter()
    report = predict_many(predictor, [folder], Path(out))
    seconds = time.perf_counter() - start
    assert not report.failed, report.failed
    print(json.dumps({"precision": str(predictor.precision), "seconds": seconds, "cases": len(report.written),
                      "network": sum(network), "rss_before_kib": before}))


def measure(run: Path, image: Path, precision: str, out: Path, monai: bool = False, batch: bool = False) -> dict:
    """Run :func:`child` (or :func:`monai_child`) in a fresh interpreter; add its own peak RSS (``os.wait4``)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--monai-child" if monai else "--batch-child" if batch else "--child", str(run),
         str(image), precision, str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child for {precision} failed with exit code {proc.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_kib"] = usage.ru_maxrss
    return result


def bf16_logit_error(run: Path, patch: list[int]) -> float:
    """Largest |bf16-autocast − fp32| logit difference on a random patch, relative to the logits' spread."""
    import torch

    from medseg.models import build_model
    from medseg.run import load_weights, read_metadata

    weights = run / "best.safetensors"
    model = build_model(**read_metadata(weights)["build_args"])
    load_weights(weights, model)
    x = torch.rand(1, 1, *patch, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        exact = model.eval()(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            approx = model(x).float()
    return float((approx - exact).abs().max() / exact.std())


NOTES = """Why `auto` is not 2× faster than fp32 here: only the network part gets faster with bf16, and it
cannot get 2× faster on this CPU. AVX512-BF16 doubles the multiply-adds per instruction, and the
measured ceiling, one 3×3×3 conv layer in channels_last_3d, is 1.8-2.0× fp32's (`benchmarks/speed.py
--3d`: 429-466 against 235-239 GFLOP/s); the network part of prediction gets 1.6-1.75× faster. Reading the gzipped
NIfTI, reordering and resampling it, mapping back and writing (about 3.5 s) take the same time in
both precisions. On a CPU with AMX, or on a GPU, the bf16 ceiling is several times fp32's.

What prediction does to be fast on a CPU: channels_last_3d (measured faster in both precisions),
batch norms folded into the convs, glibc's allocator kept from unmapping freed activations while the
network runs (then restored, so the peak stays that of loading), and the NIfTI data reordered to
C order in its own dtype before MONAI casts it. Before these (the previous version of this table),
the same benchmark took 12.6-12.8 s in bf16 and 19.0-21.0 s in fp32, with peaks of 1068 and 1189 MiB.

What the memory added by prediction is: loading (nibabel's int16 array, its C-ordered copy and MONAI's
float32 volume) dominates. The sliding window holds the image, one logit map per class and MONAI's
weight map at *network* resolution, plus the activations of `sw_batch_size` patches. The way back to
the original grid holds only the uint8 label map at full resolution: logits relative to the
background (one channel for two classes) are interpolated slab by slab and the argmax taken per slab;
`Spacingd` resamples in float32 (MONAI's default float64 doubled the resampled copy).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--ct-spacing", type=float, nargs=3, default=[0.8, 0.8, 1.5])
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.6, 1.6, 3.0],
                        help="the run's target spacing (mm); --no-resample for none")
    parser.add_argument("--no-resample", action="store_true", help="run at the CT's own spacing")
    parser.add_argument("--patch", type=int, nargs=3, default=[96, 96, 48])
    parser.add_argument("--precisions", nargs="+", default=["auto", "fp32"])
    parser.add_argument("--markdown", default=None, help="write the table into the '## Prediction' section of this file")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--monai-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--batch-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--cases", type=int, default=3, help="cases of the folder prediction (0: none)")
    parser.add_argument("--many", type=int, default=14, help="classes of the many-class run (0: none)")
    args = parser.parse_args()
    if args.batch_child:
        batch_child(*args.batch_child)
        return
    if args.child:
        child(*args.child)
        return
    if args.monai_child:
        monai_child(*args.monai_child)
        return

    spacing = None if args.no_resample else args.spacing
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="medseg-predict-ct-") as tmp:
        folder = Path(tmp)
        image = folder / "ct.nii.gz"
        start = time.perf_counter()
        synthetic_ct(image, tuple(args.shape), tuple(args.ct_spacing))
        print(f"wrote {image} ({'x'.join(map(str, args.shape))}, {time.perf_counter() - start:.0f} s)", file=sys.stderr)
        run = make_run(folder / "run", args.patch, spacing)
        os.sync()  # the kernel's writeback of the new CT would otherwise run during the first reads
        rows = []
        for precision in args.precisions:
            out = folder / f"ct_seg_{precision}.nii.gz"
            result = measure(run, image, precision, out)
            rows.append(result)
            print(json.dumps(result), file=sys.stderr)
        reference = measure(run, image, args.precisions[0], folder / "ct_seg_monai.nii.gz", monai=True)
        print(json.dumps(reference), file=sys.stderr)
        crowd = None
        if args.many:  # the same CT through a many-class network, both pipelines
            many_run = make_run(folder / "run_many", args.patch, spacing, classes=args.many)
            crowd = (measure(many_run, image, args.precisions[0], folder / "ct_seg_many.nii.gz"),
                     measure(many_run, image, args.precisions[0], folder / "ct_seg_many_monai.nii.gz", monai=True))
            print(json.dumps(crowd), file=sys.stderr)
        many = None
        if args.cases:
            cases = folder / "cases"
            cases.mkdir()
            for k in range(args.cases):
                os.link(image, cases / f"ct_{k}.nii.gz")
            many = measure(run, cases, args.precisions[0], folder / "cases_out", batch=True)
            print(json.dumps(many), file=sys.stderr)
        error = bf16_logit_error(run, args.patch)

    load_after = os.getloadavg()[0]
    base = rows[-1]["seconds"]
    voxels = np.prod(args.shape)
    lines = [
        "| precision | wall time (s) | speed-up vs last row | read + preprocess / network / map back / write (s) "
        "| peak RSS (MiB) | RSS before predict (MiB) | added by predict (MiB) |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        peak, before = r["peak_rss_kib"] / 1024, r["rss_before_kib"] / 1024
        stages = " / ".join(f"{r['stages'][k]:.1f}" for k in ("read", "network", "back", "write"))
        lines.append(f"| {r['precision']} | {r['seconds']:.1f} | {base / r['seconds']:.2f}× | {stages} | {peak:.0f} | "
                     f"{before:.0f} | {peak - before:.0f} |")
    setup = (
        f"Synthetic CT {'×'.join(map(str, args.shape))} int16 ({voxels / 1e6:.1f} M voxels, "
        f"{'×'.join(map(str, args.ct_spacing))} mm, NIfTI .gz, LPS-stored); run: `unet_resnet` resnet18 widths "
        f"16-32-64-128, 2 classes, patch {'×'.join(map(str, args.patch))}, overlap 0.5, Gaussian blending, "
        f"target spacing {'×'.join(map(str, spacing)) + ' mm' if spacing else 'none'}; CPU, "
        f"{rows[0]['threads']} threads, one fresh process per precision (random weights: speed and memory do not depend on them). bf16 "
        f"autocast changes this network's logits on a patch by at most {error:.3f} of their standard deviation. "
        f"Load average {load_before:.1f} before and {load_after:.1f} after (other work shares the CPUs)."
    )
    peak, before = reference["peak_rss_kib"] / 1024, reference["rss_before_kib"] / 1024
    stages = " / ".join(f"{reference['stages'][k]:.1f}" for k in ("read", "network", "back", "write"))
    lines.append(f"| {reference['precision']} | {reference['seconds']:.1f} | {base / reference['seconds']:.2f}× | {stages} "
                 f"| {peak:.0f} | {before:.0f} | {peak - before:.0f} |")
    table = "\n".join(lines)
    first = rows[0]
    overhead = first["seconds"] - first["stages"]["network"]
    verdict = (f"{first['precision']}: everything but the network {overhead:.1f} s = "
               f"{100 * overhead / first['stages']['network']:.0f} % of the network's {first['stages']['network']:.1f} s; "
               f"peak {first['peak_rss_kib'] / 1024:.0f} MiB against MONAI's {peak:.0f} MiB "
               f"({first['peak_rss_kib'] / reference['peak_rss_kib']:.2f}×)")
    if many is not None:
        share = (many["seconds"] - many["network"]) / many["network"]
        verdict += (f". A folder of {many['cases']} such CTs (`predict_many`, the next case read while the network runs, "
                    f"each written behind): {many['seconds'] / many['cases']:.1f} s a case, everything but the network "
                    f"{100 * share:.0f} % of network time; peak {many['peak_rss_kib'] / 1024:.0f} MiB")
    if crowd is not None:
        ours, theirs = (r["peak_rss_kib"] / 1024 for r in crowd)
        verdict += (f". With {args.many} classes: medseg {crowd[0]['seconds']:.1f} s, peak {ours:.0f} MiB; MONAI "
                    f"{crowd[1]['seconds']:.1f} s, peak {theirs:.0f} MiB ({ours / theirs:.2f}×)")
    table += "\n\n" + verdict
    print(setup + "\n\n" + table)
    if args.markdown:
        body = f"`python benchmarks/predict_ct.py` times `Predictor.predict_file` (read, preprocess, sliding window, " \
               f"map back, write) and reads each process's peak resident memory.\n\n{setup}\n\n{table}\n\n{NOTES}"
        write_section(args.markdown, "## Prediction", body)


if __name__ == "__main__":
    main()
