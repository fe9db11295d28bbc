"""The one place that picks the TFLite interpreter.

Every model wrapper takes an ``interpreter_factory`` keyword; when it is not given, the
default chosen here is used. ``FACEGATE_TFLITE`` (``ai_edge_litert`` or ``tflite_runtime``)
overrides the choice, the way ``GPIOZERO_PIN_FACTORY`` picks gpiozero's pins.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

InterpreterFactory = Callable[[Path, int], Any]

# ai-edge-litert is the maintained successor of tflite-runtime; tflite-runtime 2.14 (its last
# release) still works where it is installed, but only with numpy < 2.
_CANDIDATES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
_default_factory: InterpreterFactory | None = None
# What the runtime's C++ logger writes to stderr (fd 2) for every interpreter, on every
# command: news to nobody. TF_CPP_MIN_LOG_LEVEL does not reach this logger in
# ai-edge-litert 2.3 (tried: 1, 2, 3), so it is filtered from fd 2 instead.
_NOISE = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)
# fd 2 is one per process: two loads at once would each restore the other's stand-in.
_stderr_held = threading.Lock()


def _load_interpreter_class() -> type:
    wanted = os.environ.get("FACEGATE_TFLITE")
    modules = [f"{wanted}.interpreter"] if wanted else list(_CANDIDATES)
    errors = []
    for name in modules:
        try:
            return importlib.import_module(name).Interpreter
        except ImportError as exc:  # try the next one, report all if none works
            errors.append(f"{name}: {exc}")
    raise ImportError("no TFLite interpreter could be imported (" + "; ".join(errors) + ")")


def default_interpreter_factory() -> InterpreterFactory:
    """Return the process-wide default factory, resolving it on first use."""
    global _default_factory
    if _default_factory is None:
        interpreter_class = _load_interpreter_class()

        def factory(model_path: Path, num_threads: int) -> Any:
            with _without_runtime_chatter():
                interpreter = interpreter_class(model_path=str(model_path),
                                                num_threads=num_threads)
                interpreter.allocate_tensors()
            return interpreter

        _default_factory = factory
    return _default_factory


@contextlib.contextmanager
def _without_runtime_chatter() -> Iterator[None]:
    """Hold what native code writes to fd 2 while the interpreter is made, then pass it all
    on except the runtime's routine INFO lines: a real error or warning stays visible (late
    by the milliseconds of the load, as is anything another thread wrote meanwhile)."""
    with _stderr_held:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon started without one): nothing to filter
            yield
            return
        with _held_in(saved):
            yield


@contextlib.contextmanager
def _held_in(saved: int) -> Iterator[None]:
    """fd 2 into a temporary file for the block, then back to ``saved`` (closed after)."""
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True)
                    if line.strip() not in _NOISE]
            if kept:
                os.write(2, b"".join(kept))


def default_num_threads() -> int:
    """Threads per interpreter: ``FACEGATE_THREADS`` or every core (a Pi 4 has four)."""
    return int(os.environ.get("FACEGATE_THREADS", os.cpu_count() or 1))


def load_interpreter(model_path: Path, interpreter_factory: InterpreterFactory | None = None,
                     num_threads: int | None = None) -> Any:
    """An allocated interpreter for one model: the injected factory, or the default one."""
    factory = interpreter_factory or default_interpreter_factory()
    return factory(Path(model_path), num_threads or default_num_threads())
