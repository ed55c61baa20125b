"""Many inputs to files: one failing case is recorded with its reason and the rest go on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medseg.data import io
from medseg.errors import MedsegError
from medseg.inference.paths import expand_inputs, output_path, user_error
from medseg.inference.predictor import Predictor


@dataclass
class BatchReport:
    """What ``predict_many`` did: written outputs and failures with their reasons."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)


def predict_many(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out: Path | None = None,
    on_progress: Callable[[Path, int, int], None] | None = None,
) -> BatchReport:
    """Segment many inputs to files; a file that fails is recorded with its reason and the rest go on."""
    sources = expand_inputs(inputs)
    multiple = len(sources) > 1 or any(Path(i).is_dir() and not io.is_dicom_series(Path(i)) for i in inputs)
    report = BatchReport()
    for i, source in enumerate(sources):
        target = output_path(source, out, multiple)
        try:
            result = predictor.predict(source)
            predictor.write(result, target)
            report.written.append((source, target))
            report.warnings.extend((source, w) for w in result.warnings)
        except MedsegError as err:
            report.failed.append((source, str(err)))
        except Exception as err:  # a corrupt file must not stop the others
            report.failed.append((source, str(user_error(source, err))))
        if on_progress is not None:
            on_progress(source, i + 1, len(sources))
    return report
