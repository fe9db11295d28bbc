"""A single background thread that runs one action when a deadline passes.

The lock uses it to re-lock, the door contact to notice a door held open. Setting a new
deadline replaces the old one, so repeated unlocks move one deadline instead of stacking
timers, and a door that sees a hundred grants a day still has exactly one timer thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class DeadlineTimer:
    """Run ``action`` once, on a background thread, when ``clock()`` reaches a deadline.

    ``clock`` returns seconds and must tick at real speed (``time.monotonic`` by default): the
    thread sleeps real seconds until the deadline and then checks the clock again. The thread
    is a daemon, started at construction and restarted by a later ``set`` if it died.

    If ``action`` or ``clock`` raises, the exception is logged, ``on_crash`` is called on the
    timer thread (the lock uses it to de-energise the relay) and the thread ends.
    """

    def __init__(
        self,
        action: Callable[[], object],
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "deadline",
        on_crash: Callable[[], object] | None = None,
    ) -> None:
        self._action = action
        self._clock = clock
        self._name = name
        self._on_crash = on_crash
        # Re-entrant so that close() from a signal handler, which runs on the main thread
        # perhaps in the middle of set(), cannot deadlock against its own thread.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._when: float | None = None
        self._closed = False
        self._crashed = False
        self._thread: threading.Thread
        # Started now, not on the first set(): starting a thread on a busy Pi can take tens of
        # milliseconds, and that would be added to every first unlock.
        self._start_thread()

    @property
    def when(self) -> float | None:
        """The pending deadline on ``clock``'s scale, or None."""
        return self._when

    @property
    def thread(self) -> threading.Thread:
        """The timer thread (for tests and diagnostics)."""
        return self._thread

    def set(self, when: float | None) -> None:
        """Replace the pending deadline with ``when`` (None cancels). No-op once closed."""
        with self._lock:
            if self._closed:
                return
            self._when = when
            if when is not None and (self._crashed or not self._thread.is_alive()):
                self._crashed = False
                self._start_thread()  # the last one crashed, or is still busy crashing
        self._wake.set()

    def close(self, timeout: float = 1.0) -> None:
        """Cancel the deadline and end the thread, waiting at most ``timeout`` seconds.

        The wait is bounded because a signal handler may call this while the main thread
        holds a lock the timer thread is waiting for; the thread is a daemon either way.
        """
        with self._lock:
            self._closed = True
            self._when = None
            thread = self._thread
        self._wake.set()
        if thread is not threading.current_thread():
            thread.join(timeout)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except Exception:
            log.exception("%s: timer failed", self._name)
            with self._lock:
                # Marked before on_crash runs: a set() from now on must start a new thread,
                # since this one will not look at the deadline again.
                self._crashed = True
            if self._on_crash is not None:
                try:
                    self._on_crash()
                except Exception:
                    log.exception("%s: crash handler failed too", self._name)

    def _step(self) -> bool:
        # Clearing before reading the deadline means a set() that lands after the read
        # leaves the event set, so the wait below returns at once instead of missing it.
        self._wake.clear()
        with self._lock:
            if self._closed:
                return False
            when = self._when
        if when is None:
            self._wake.wait()
            return True
        remaining = when - self._clock()
        if remaining > 0:
            self._wake.wait(remaining)
            return True
        with self._lock:
            if self._closed or self._when != when:
                return True  # moved or cancelled while we slept
            self._when = None
        self._action()
        return True


def positive_seconds(value: float, name: str = "seconds") -> float:
    """``value`` as a float, or ValueError unless it is a finite number of seconds > 0."""
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return value
