"""The door strike, driven through a relay: fail-secure by construction.

Hazard: the relay is energised while unlocked; on power loss a fail-secure strike stays
locked. Everything here errs the same way: the relay is de-energised at construction, by
``lock()``, by ``close()``, at interpreter exit, and whenever the re-lock timer fails.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Literal

from gpiozero import DeviceClosed, OutputDevice
from gpiozero.pins import Factory

from device.door.pins import default_pin_factory
from device.door.timer import DeadlineTimer, positive_seconds

log = logging.getLogger(__name__)

LockState = Literal["locked", "unlocked", "held_open"]

# Locks still open at interpreter exit are closed (de-energised) by _close_all_at_exit.
_open_locks: weakref.WeakSet[DoorLock] = weakref.WeakSet()


class DoorLock:
    """A fail-secure electric strike or maglock relay on one GPIO pin (BCM numbering).

    Hazard: the relay is energised while unlocked; on power loss a fail-secure strike stays
    locked. A fail-safe maglock does the opposite (it *opens* on power loss) and needs its
    own risk assessment; this class only ever errs towards de-energising the relay.

    ``pin``: BCM number (17) or any name gpiozero accepts ("GPIO17", "BOARD11").
    ``active_high``: False for the common opto-isolated relay boards that energise on a low
    pin. ``unlock_seconds``: how long ``unlock()`` opens the door, 3.0 s by default.
    ``pin_factory``: gpiozero pin factory, default ``default_pin_factory()``.
    ``clock``: seconds, monotonic and ticking at real speed; every time this class takes or
    returns (``hold_open_until``, ``unlocked_until``) is on this clock.

    Threading: unlocking energises the relay on the caller's thread; one daemon timer thread
    per lock re-locks it. All methods may be called from any thread. If the process is
    killed outright (SIGKILL, a crash in C) nothing here runs, and the relay stays as it was:
    wire the relay board so that a released (input, floating) pin leaves it de-energised.
    """

    def __init__(
        self,
        pin: int | str,
        *,
        active_high: bool = True,
        unlock_seconds: float = 3.0,
        pin_factory: Factory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unlock_seconds = positive_seconds(unlock_seconds, "unlock_seconds")
        self._clock = clock
        # Re-entrant: close() must work from a SIGTERM handler, which runs on the main thread
        # and may interrupt that same thread inside unlock() while it holds this lock.
        self._lock = threading.RLock()
        self._until: float | None = None
        self._held = False
        self._closed = False
        # Bumped by every lock(); see _open_until for why.
        self._lock_count = 0
        self._relay = OutputDevice(
            pin,
            active_high=active_high,
            initial_value=False,
            pin_factory=default_pin_factory() if pin_factory is None else pin_factory,
        )
        try:
            self._timer = DeadlineTimer(
                self._expire, clock=clock, name=f"door-lock-{pin}", on_crash=self._fail_secure
            )
        except BaseException:
            self._relay.close()
            raise
        _open_locks.add(self)

    def __repr__(self) -> str:
        if self._closed:
            return "<DoorLock closed>"
        return f"<DoorLock pin={self._relay.pin} state={self.state}>"

    def __enter__(self) -> DoorLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state -------------------------------------------------------------------------------

    @property
    def is_locked(self) -> bool:
        """True while the relay is de-energised (read back from the pin, not remembered)."""
        if self._closed:
            return True
        return not self._relay.is_active

    @property
    def unlocked_until(self) -> float | None:
        """When the lock will re-lock, on ``clock``'s scale, or None while locked."""
        return self._until

    @property
    def state(self) -> LockState:
        """``"locked"``, ``"unlocked"`` (a timed unlock) or ``"held_open"``."""
        if self.is_locked:
            return "locked"
        return "held_open" if self._held else "unlocked"

    @property
    def clock(self) -> Callable[[], float]:
        """The clock this lock's times are on."""
        return self._clock

    # -- actions -----------------------------------------------------------------------------

    def unlock(self, seconds: float | None = None) -> float:
        """Energise the relay for ``seconds`` (default ``unlock_seconds``); return the end.

        While already unlocked, the door stays open until the *later* of the two end times: a
        second face in the doorway extends the opening, it never shortens it or stacks a
        second timer. Raises ``gpiozero.DeviceClosed`` after ``close()``.
        """
        seconds = self.unlock_seconds if seconds is None else positive_seconds(seconds)
        with self._lock:
            self._check_open()
            end = self._clock() + seconds
            if self._until is not None and self._until >= end:
                return self._until
            self._open_until(end, held=False)
            return end

    def hold_open_until(self, when: float) -> None:
        """Keep the door unlocked until ``when`` (``clock``'s scale), then re-lock.

        For an operator's "hold open until": it replaces any pending end time, earlier or
        later, and while held open ``DoorContact`` does not re-lock on close. Raises
        ValueError if ``when`` has passed.
        """
        with self._lock:
            self._check_open()
            if not when > self._clock():
                raise ValueError("hold_open_until: that time has already passed")
            self._open_until(when, held=True)

    def lock(self) -> None:
        """De-energise the relay now and cancel any pending re-lock. No-op after close().

        Safe to call from a signal handler, even one that interrupts an ``unlock()``.
        """
        self._lock_count += 1
        try:
            self._relay.off()  # first: nothing below may stand between a lock() and the pin
        except DeviceClosed:
            return  # closed is locked
        with self._lock:
            self._until = None
            self._held = False
            self._timer.set(None)
            # Again under the lock: an unlock() on another thread may have energised the
            # relay after the first off, and its re-lock has just been cancelled.
            self._deenergise_quietly()

    def close(self) -> None:
        """De-energise the relay, stop the timer thread and release the pin. Idempotent.

        Safe to call from a SIGTERM handler: the relay is switched off before any lock is
        taken, the locks it then takes are re-entrant, and the timer thread is waited for
        at most one second. After close() the pin is released as an input, so the relay
        board's own pull resistor must hold it de-energised (most boards have one).
        """
        self._deenergise_quietly()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._until = None
            self._held = False
            # Again under the lock: an unlock() on another thread may have energised the
            # relay between the first off and here.
            self._deenergise_quietly()
        self._timer.close()
        self._relay.close()
        _open_locks.discard(self)

    # -- internals ---------------------------------------------------------------------------

    def _open_until(self, end: float, *, held: bool) -> None:
        locks_before = self._lock_count
        self._until = end
        self._held = held
        # The timer is armed before the relay is energised, so a timer that cannot start
        # raises here with the door still locked.
        self._timer.set(end)
        self._relay.on()
        if self._lock_count != locks_before:
            # lock() ran in the middle of this, on this very thread (other threads wait for
            # self._lock): a signal handler. The handler's lock wins, or the relay would
            # stay energised with its re-lock already cancelled.
            self._until = None
            self._held = False
            self._timer.set(None)
            self._relay.off()

    def _expire(self) -> None:
        # Runs on the timer thread. Re-checked under the lock: an unlock() may have moved
        # the end time after the timer decided to fire.
        with self._lock:
            if self._closed or self._until is None or self._until > self._clock():
                return
            self._relay.off()
            self._until = None
            self._held = False

    def _fail_secure(self) -> None:
        # The timer thread died: lock now rather than leave the relay energised forever.
        self._deenergise_quietly()
        with self._lock:
            self._until = None
            self._held = False
            self._deenergise_quietly()  # again, in case an unlock() slipped in between
        log.error("door lock timer failed; the door has been locked")

    def _deenergise_quietly(self) -> None:
        try:
            self._relay.off()
        except DeviceClosed:
            pass
        except Exception:
            log.exception("could not de-energise the door relay")

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosed("the door lock is closed")


@atexit.register
def _close_all_at_exit() -> None:
    # Registered after gpiozero's own exit hook, so it runs first (atexit is LIFO) and
    # de-energises every relay even on a factory gpiozero's hook does not know about.
    for door_lock in list(_open_locks):
        door_lock.close()
