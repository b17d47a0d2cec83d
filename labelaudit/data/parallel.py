"""Per-field work over worker processes, with the input errors kept intact.

The image cache, the cell cache and segmentation all do one independent job per
field (decode, segment, crop). :func:`map_fields` runs such jobs in order, in
``spawn`` processes when it pays (fork would copy the parent's torch/OpenMP
threads), and turns a :class:`~labelaudit.errors.DatasetError` raised in a worker
back into one naming the field: exceptions are returned rather than raised across
the process boundary, because pickling an exception loses its fields.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from labelaudit.errors import DatasetError


def _guarded(job: Callable[[tuple], Any], args: tuple) -> tuple[int, Any, Any]:
    try:
        return args[0], job(args), None
    except DatasetError as exc:
        return args[0], None, (exc.message, str(exc.path) if exc.path else None)


def map_fields(
    job: Callable[[tuple], Any],
    jobs: Sequence[tuple],
    ids: Sequence[str],
    workers: int,
    *,
    min_parallel: int = 2,
    max_chunk: int = 1,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(i, job(args))`` for each ``args`` of ``jobs``, in order.

    Parameters
    ----------
    job
        A module-level function (picklable) taking one tuple whose first item is
        the field's index ``i`` into ``ids``.
    jobs
        The argument tuples.
    ids
        Field ids, for the error message.
    workers
        Processes; 1 (or fewer than ``min_parallel`` jobs) runs them here.
    min_parallel
        Fewer jobs than this are not worth starting processes for.
    max_chunk
        Largest number of jobs sent to a worker at once.

    Raises
    ------
    DatasetError
        What a job raised, naming the field.
    """
    guarded = functools.partial(_guarded, job)
    if workers <= 1 or len(jobs) < min_parallel:
        results: Iterator[tuple[int, Any, Any]] = map(guarded, jobs)
        yield from _raise_errors(results, ids)
        return
    chunk = max(1, min(max_chunk, len(jobs) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        yield from _raise_errors(pool.map(guarded, jobs, chunksize=chunk), ids)


def _raise_errors(
    results: Iterator[tuple[int, Any, Any]], ids: Sequence[str]
) -> Iterator[tuple[int, Any]]:
    for i, result, error in results:
        if error is not None:
            message, path = error
            raise DatasetError(message, path=path, image=ids[i])
        yield i, result
