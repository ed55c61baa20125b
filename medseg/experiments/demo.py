"""``medseg demo``: the whole journey on the embedded demo data, in one call.

1. generate the 2D nuclei demo data (if missing);
2. train ``dual_unet_resnet`` and the three other models briefly, under one wall-clock budget each;
3. compare them on the held-out cases;
4. predict one unseen scan to a file;
5. evaluate the held-out predictions with ``medseg evaluate``'s API (done inside compare);
6. write the report (``report.html``) with all of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.data import datasets, synthetic
from medseg.experiments.compare import DEFAULT_MODELS, Comparison, compare
from medseg.inference import Predictor, output_path


@dataclass
class DemoResult:
    """Where everything went, and how long it took."""

    comparison: Comparison
    prediction: Path
    evaluation_dir: Path
    report: Path
    seconds: float


def run_demo(
    out: Path = Path("runs/demo"),
    models: Sequence[str] = DEFAULT_MODELS,
    minutes_per_model: float = 3.0,
    epochs: int | None = None,
    precision: str = "auto",
    reuse: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the six demo steps into ``out``; every model gets the same budget.

    Each model trains for its config's epochs (12 on the nuclei task) or ``minutes_per_model``,
    whichever ends first.
    """
    say = on_progress or (lambda _m: None)
    t0 = time.perf_counter()
    say("1/6 demo data")
    root = synthetic.ensure_demo_data("nuclei2d")
    say(f"2-3/6 training and comparing {', '.join(models)} ({minutes_per_model} min each)")
    train: dict[str, object] = {"max_minutes": minutes_per_model, "precision": precision}
    if epochs is not None:
        train["epochs"] = epochs
    # no data.path: the demo task's own config (nuclei2d.yaml) applies, as `medseg train` with no --data
    overrides = {"data": {"demo": "nuclei2d"}, "train": train}
    comparison = compare(models, None, overrides, (), out, reuse=reuse, quiet=False, on_progress=say)

    main_model = "dual_unet_resnet" if "dual_unet_resnet" in models else models[0]
    run_dir = out / "runs" / main_model
    predictor = Predictor(run_dir, precision=precision)
    info = datasets.discover(root)
    unseen = (info.test_cases or info.cases)[0].images[0]
    say(f"4/6 predicting unseen scan {unseen.name} with {main_model}")
    prediction = predictor.predict_file(unseen, output_path(unseen, out / "predict", True))

    # compare already ran medseg evaluate's API on the held-out predictions of every model
    eval_dir = out / "evaluation" / main_model
    say(f"5/6 evaluation of {main_model}'s held-out predictions: {eval_dir / 'summary.json'}")
    say(f"6/6 report: {comparison.files['html']}")
    return DemoResult(comparison, prediction, eval_dir, comparison.files["html"], time.perf_counter() - t0)
