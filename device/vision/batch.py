"""Many still photos through the pipeline at once, one pipeline per core.

The door runs one pipeline on one camera, each interpreter on every core. For a batch of
photos (``facegate embed``, ``identify``) that wastes most of the cores: the models are
small, so two interpreters of one thread each, working on two photos at a time, get through
about 1.7 times as many photos on two cores as one interpreter of two threads
(``bench/compare.py``, "still photos"). TFLite and OpenCV release the GIL while they work,
so threads are enough; each worker has its own pipeline (interpreters are not thread-safe),
reads and decodes its own files, and results come back in the order the files were given.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from device.errors import ImageUnreadable
from device.vision.image_io import read_image
from device.vision.interpreter import InterpreterFactory, default_interpreter_factory
from device.vision.pipeline import Face, FacePipeline

PipelineMaker = Callable[[InterpreterFactory | None], FacePipeline]
# Files read ahead of the one being written out: enough to keep every worker busy, few
# enough that a batch of thousands never holds more than a handful of decoded photos.
AHEAD_PER_WORKER = 4


def default_workers(files: int) -> int:
    """One worker per core, at most one per file; ``FACEGATE_WORKERS`` overrides."""
    wanted = int(os.environ.get("FACEGATE_WORKERS", os.cpu_count() or 1))
    return max(1, min(wanted, files))


def single_thread_factory() -> InterpreterFactory:
    """Interpreters of one thread each: the workers are the parallelism."""
    base = default_interpreter_factory()
    return lambda model_path, _threads: base(model_path, 1)


def process_files(paths: Iterable[Path], make_pipeline: PipelineMaker, *, workers: int,
                  **process: Any) -> Iterator[tuple[Path, list[Face] | ImageUnreadable]]:
    """``(path, faces)`` for each file in order, or ``(path, error)`` for one that cannot be
    read; ``process`` goes to :meth:`FacePipeline.process` (``thorough=True`` for stills).
    With one worker, one pipeline with the interpreters' default threads."""
    paths = list(paths)
    if workers <= 1:
        pipeline = make_pipeline(None)
        for path in paths:
            yield path, _one(pipeline, path, process)
        return
    factory = single_thread_factory()
    pipelines: queue.SimpleQueue[FacePipeline] = queue.SimpleQueue()
    for _ in range(workers):
        pipelines.put(make_pipeline(factory))
    local = threading.local()

    def work(path: Path) -> list[Face] | ImageUnreadable:
        if not hasattr(local, "pipeline"):
            local.pipeline = pipelines.get()
        return _one(local.pipeline, path, process)

    with ThreadPoolExecutor(workers, thread_name_prefix="still") as pool:
        pending: list[tuple[Path, Future]] = []
        for path in paths:
            pending.append((path, pool.submit(work, path)))
            if len(pending) >= workers * AHEAD_PER_WORKER:
                done, future = pending.pop(0)
                yield done, future.result()
        for done, future in pending:
            yield done, future.result()


def _one(pipeline: FacePipeline, path: Path,
         process: dict[str, Any]) -> list[Face] | ImageUnreadable:
    try:
        frame, _ = read_image(path)
    except ImageUnreadable as error:
        return error
    return pipeline.process(frame, **process)
