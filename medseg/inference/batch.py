"""Many inputs to files: one failing case is recorded with its reason and the rest go on."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.data import io
from medseg.errors import MedsegError
from medseg.inference.formats import with_format
from medseg.inference.paths import Source, expand_inputs, first_file, output_path, user_error
from medseg.inference.predictor import Prediction, Predictor, Prepared, Stitched
from medseg.inference.statistics import statistics_path
from medseg.utils import remove_stale_temporaries


@dataclass
class BatchReport:
    """What ``predict_many`` did: written outputs, outputs kept from an earlier call, failures with reasons."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    kept: list[tuple[Path, Path]] = field(default_factory=list)
    #: per-structure rows of every case written, when the predictor computes statistics
    statistics: list[dict[str, Any]] = field(default_factory=list)


def predict_many(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out: Path | None = None,
    on_progress: Callable[[Path, int, int], None] | None = None,
    prefetch: bool = True,
    resume: bool = False,
    fmt: str = "same",
) -> BatchReport:
    """Segment many inputs to files; a file that fails is recorded with its reason and the rest go on.

    For a run of several channels, a case's files (``case_0000``, ``case_0001``, …) are one input.
    With ``prefetch`` the next input is read and preprocessed in a thread while the network segments
    the current one; each case is mapped back to its grid and written in another thread while the
    next one runs (gzip, the readers and the writers release the GIL), so at most three cases are
    in memory at once. With
    ``resume`` a case whose output exists is kept, not predicted again (outputs are written under a
    temporary name and renamed, so an existing one is complete), and the temporary files a killed
    call left are removed. ``fmt`` (:data:`~medseg.inference.formats.FORMATS`) sets the masks' format.
    """
    sources = expand_inputs(inputs, predictor.preprocess.in_channels)
    multiple = len(sources) > 1 or any(Path(i).is_dir() and not io.is_dicom_series(Path(i)) for i in inputs)
    report = BatchReport()
    targets = [with_format(output_path(source, out, multiple), fmt) for source in sources]
    todo = _still_to_do(sources, targets, resume, report)
    if predictor.statistics:  # a kept case's statistics come from the JSON written beside it
        report.statistics.extend(row for _, target in report.kept for row in _saved_statistics(target))
    with ThreadPoolExecutor(1, "medseg-read") as reader, ThreadPoolExecutor(1, "medseg-write") as writer:
        def read(k: int) -> Future[Prepared]:
            if prefetch:
                return reader.submit(predictor.prepare, todo[k][0])
            future: Future[Prepared] = Future()
            _settle(future, predictor.prepare, todo[k][0])
            return future

        upcoming = read(0) if todo else None
        writing: tuple[Path, Path, Future[Prediction]] | None = None
        for i, (source, target) in enumerate(todo):
            current, upcoming = upcoming, (read(i + 1) if prefetch and i + 1 < len(todo) else None)
            assert current is not None
            try:
                prepared = current.result()
                job = writer.submit(_finish_and_write, predictor, prepared, predictor.network(prepared), target)
            except Exception as err:  # a corrupt file must not stop the others
                job = _failed(err)
            if writing is not None:
                _finish(report, *writing)
            writing = (first_file(source), target, job)
            if not prefetch and i + 1 < len(todo):
                upcoming = read(i + 1)
            if on_progress is not None:
                on_progress(first_file(source), len(report.kept) + i + 1, len(sources))
        if writing is not None:
            _finish(report, *writing)
    return report


def _still_to_do(sources: list[Source], targets: list[Path], resume: bool, report: BatchReport) -> list[tuple[Source, Path]]:
    """Every case, or with ``resume`` those without an output (the others go to ``report.kept``)."""
    if not resume:
        return list(zip(sources, targets, strict=True))
    for folder in {target.parent for target in targets if target.parent.is_dir()}:
        remove_stale_temporaries(folder)  # what a killed call was writing: never complete, never an output
    todo = []
    for source, target in zip(sources, targets, strict=True):
        if target.is_file():
            report.kept.append((first_file(source), target))
        else:
            todo.append((source, target))
    return todo


def _saved_statistics(mask: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(statistics_path(mask).read_text(encoding="utf-8"))["structures"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _settle(future: Future[Any], fn: Callable[..., Any], *args: Any) -> None:
    try:
        future.set_result(fn(*args))
    except Exception as err:
        future.set_exception(err)


def _finish_and_write(predictor: Predictor, prepared: Prepared, stitched: Stitched, target: Path) -> Prediction:
    """The way back to the input's grid and the writing, off the network's thread."""
    result = predictor.finish(prepared, stitched)
    predictor.write(result, target)
    return result


def _failed(err: Exception) -> Future[Prediction]:
    future: Future[Prediction] = Future()
    future.set_exception(err)
    return future


def _finish(report: BatchReport, source: Path, target: Path, job: Future[Prediction]) -> None:
    """Record a case once its label map is written (or why it failed)."""
    try:
        result = job.result()
    except MedsegError as err:
        report.failed.append((source, str(err)))
        return
    except Exception as err:
        report.failed.append((source, str(user_error(source, err))))
        return
    report.written.append((source, target))
    report.warnings.extend((source, w) for w in result.warnings)
    report.statistics.extend(result.statistics or [])
