"""The one place that picks the TFLite interpreter.

Every model wrapper takes an ``interpreter_factory`` keyword; when it is not given, the
default chosen here is used. ``FACEGATE_TFLITE`` (``ai_edge_litert`` or ``tflite_runtime``)
overrides the choice, the way ``GPIOZERO_PIN_FACTORY`` picks gpiozero's pins.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

InterpreterFactory = Callable[[Path, int], Any]

# ai-edge-litert is the maintained successor of tflite-runtime; tflite-runtime 2.14 (its last
# release) still works where it is installed, but only with numpy < 2.
_CANDIDATES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
_default_factory: InterpreterFactory | None = None


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
            interpreter = interpreter_class(model_path=str(model_path), num_threads=num_threads)
            interpreter.allocate_tensors()
            return interpreter

        _default_factory = factory
    return _default_factory


def default_num_threads() -> int:
    """Threads per interpreter: ``FACEGATE_THREADS`` or every core (a Pi 4 has four)."""
    return int(os.environ.get("FACEGATE_THREADS", os.cpu_count() or 1))


def load_interpreter(model_path: Path, interpreter_factory: InterpreterFactory | None = None,
                     num_threads: int | None = None) -> Any:
    """An allocated interpreter for one model: the injected factory, or the default one."""
    factory = interpreter_factory or default_interpreter_factory()
    return factory(Path(model_path), num_threads or default_num_threads())
