"""The ``medseg`` command: a thin typer app over the Python API.

Each verb lives in its own module of this package and registers itself on ``app``;
``main`` turns :class:`~medseg.errors.MedsegError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from medseg.errors import MedsegError

app = typer.Typer(
    name="medseg",
    help="Medical image segmentation: ResNet encoders, U-Net / Unet_Resnet / Dual U-Net / FCN models, "
    "training, prediction, evaluation and comparison.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    """Import the verb modules; each one adds its commands to ``app``."""
    import importlib

    for name in ("models", "data", "plan", "train", "cv", "predict", "evaluate", "compare", "experiment", "export", "demo"):
        importlib.import_module(f"medseg.cli.{name}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except MedsegError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
