"""Keeps the daemon running through camera outages: reopen with back-off, never raise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import TracebackType

from device.camera.base import Camera, Frame
from device.errors import CameraError, EndOfStream

log = logging.getLogger(__name__)


class ResilientCamera:
    """Wraps a camera made by ``factory``; while it is down, ``read()`` returns None.

    On a ``CameraError`` (other than ``EndOfStream``, which is passed on: a replay has
    ended) from making, opening or reading the camera, it is closed and made again after
    ``backoff[0]`` seconds, then ``backoff[1]`` after another failure and so on, staying
    at the last step (defaults: 0.5, 1, 2, 5 then every 10 s). Meanwhile ``read()`` sleeps
    at most ``poll`` seconds and returns None, so the caller's loop keeps turning: it keeps
    the door locked and its watchdog fed. Each outage is logged once when it starts
    ("camera lost: ...") and once when it ends ("camera back after N s").

    Frames are numbered by this wrapper, so ``index`` keeps counting across reopens (a
    reopened camera would start again from 0). ``clock`` and ``sleep`` are injected so tests
    can run outages in no time. Not a ``Camera`` itself: its ``read()`` may return None.
    """

    def __init__(self, factory: Callable[[], Camera],
                 backoff: Sequence[float] = (0.5, 1, 2, 5, 10), *,
                 poll: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not backoff or min(backoff) < 0:
            raise ValueError("backoff needs at least one delay, none negative")
        self.factory = factory
        self.backoff = tuple(float(delay) for delay in backoff)
        self.poll = poll
        self._clock = clock
        self._sleep = sleep
        self._camera: Camera | None = None
        self._started = False
        self._failures = 0  # failed reopen attempts in this outage
        self._down_since = 0.0
        self._retry_at = 0.0
        self._count = 0  # frames delivered, across reopens
        self.outages = 0  # how many times the camera has gone down (a failed start counts)
        self.name = "camera"  # the wrapped camera's name once it has opened
        self.last_error: CameraError | None = None  # why the camera last went down

    @property
    def is_up(self) -> bool:
        """True while a camera is open and delivering."""
        return self._camera is not None

    def open(self) -> None:
        """Make and open the camera; a failure starts an outage instead of raising."""
        if self._started:
            return
        self._started = True
        self._connect(first=True)

    def read(self) -> Frame | None:
        """The next frame, or None while the camera is down (after waiting up to ``poll``).

        Raises ``EndOfStream`` when a replay has ended, and nothing else for camera faults.
        """
        if not self._started:
            self.open()
        if self._camera is None and not self._retry_when_due():
            return None
        assert self._camera is not None
        try:
            frame = self._camera.read()
        except EndOfStream:
            raise
        except CameraError as exc:
            self._lose(exc)
            return None
        self._count += 1
        return replace(frame, index=self._count - 1)

    def close(self) -> None:
        """Close the camera; a later ``open()`` or ``read()`` starts it again."""
        self._release()
        self._started = False

    def __enter__(self) -> ResilientCamera:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _retry_when_due(self) -> bool:
        wait = self._retry_at - self._clock()
        if wait > 0:
            self._sleep(min(wait, self.poll))
            if self._clock() < self._retry_at:
                return False
        return self._connect(first=False)

    def _connect(self, first: bool) -> bool:
        camera = None
        try:
            camera = self.factory()
            camera.open()
        except EndOfStream:
            raise
        except CameraError as exc:
            if camera is not None:
                _close_quietly(camera)
            if first:
                self._lose(exc)
            else:
                self._failures += 1
                step = self.backoff[min(self._failures, len(self.backoff) - 1)]
                self._retry_at = self._clock() + step
                log.debug("camera still down, next try in %.1f s: %s", step, exc)
            return False
        self._camera = camera
        self.name = camera.name
        if not first:
            log.warning("camera back after %.1f s: %s", self._clock() - self._down_since,
                        camera.name)
        return True

    def _lose(self, error: CameraError) -> None:
        self._release()
        self.last_error = error
        self.outages += 1
        self._failures = 0
        self._down_since = self._clock()
        self._retry_at = self._down_since + self.backoff[0]
        log.warning("camera lost: %s", error)

    def _release(self) -> None:
        if self._camera is not None:
            _close_quietly(self._camera)
            self._camera = None


def _close_quietly(camera: Camera) -> None:
    # Closing a camera that has just failed can fail too; the outage is already reported.
    try:
        camera.close()
    except Exception as exc:  # any driver error: closing is best effort here
        log.debug("closing %s failed: %s", camera.name, exc)
