"""Many inputs to files: one failing case is recorded with its reason and the rest go on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.data import io
from medseg.errors import MedsegError
from medseg.inference.paths import expand_inputs, output_path, user_error
from medseg.inference.predictor import Predictor, Prepared


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
    prefetch: bool = True,
) -> BatchReport:
    """Segment many inputs to files; a file that fails is recorded with its reason and the rest go on.

    With ``prefetch`` the next input is read and preprocessed in a thread while the network segments
    the current one, and each label map is written in another while the next case runs (gzip, the
    readers and the writers release the GIL): at most three cases are in memory at once.
    """
    sources = expand_inputs(inputs)
    multiple = len(sources) > 1 or any(Path(i).is_dir() and not io.is_dicom_series(Path(i)) for i in inputs)
    report = BatchReport()
    with ThreadPoolExecutor(1, "medseg-read") as reader, ThreadPoolExecutor(1, "medseg-write") as writer:
        def read(k: int) -> Future[Prepared]:
            if prefetch:
                return reader.submit(predictor.prepare, sources[k])
            done: Future[Prepared] = Future()
            _settle(done, predictor.prepare, sources[k])
            return done

        upcoming = read(0) if sources else None
        writing: tuple[Path, Path, Future[Path], list[str]] | None = None
        for i, source in enumerate(sources):
            current, upcoming = upcoming, (read(i + 1) if prefetch and i + 1 < len(sources) else None)
            assert current is not None
            target = output_path(source, out, multiple)
            try:
                result = predictor.segment(current.result())
                job = writer.submit(predictor.write, result, target)
            except Exception as err:  # a corrupt file must not stop the others
                job, result = _failed(err), None
            if writing is not None:
                _finish(report, *writing)
            writing = (source, target, job, result.warnings if result is not None else [])
            if not prefetch and i + 1 < len(sources):
                upcoming = read(i + 1)
            if on_progress is not None:
                on_progress(source, i + 1, len(sources))
        if writing is not None:
            _finish(report, *writing)
    return report


def _settle(future: Future[Any], fn: Callable[..., Any], *args: Any) -> None:
    try:
        future.set_result(fn(*args))
    except Exception as err:
        future.set_exception(err)


def _failed(err: Exception) -> Future[Path]:
    future: Future[Path] = Future()
    future.set_exception(err)
    return future


def _finish(report: BatchReport, source: Path, target: Path, job: Future[Path], warnings: list[str]) -> None:
    """Record a case once its label map is written (or why it failed)."""
    try:
        job.result()
    except MedsegError as err:
        report.failed.append((source, str(err)))
        return
    except Exception as err:
        report.failed.append((source, str(user_error(source, err))))
        return
    report.written.append((source, target))
    report.warnings.extend((source, w) for w in warnings)
