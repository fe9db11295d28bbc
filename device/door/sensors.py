"""What the door reports back: its reed contact, the exit button, and the LEDs and buzzer.

Callbacks (``on_forced_open``, ``on_press``, ...) take no arguments and are called on
gpiozero's pin-event thread or on a ``DeadlineTimer`` thread, never on the caller's: keep
them short and thread-safe (hand the event to a queue). An exception in one is logged and
swallowed, so a broken event sink can never stop the door from re-locking.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gpiozero import LED, Button, Buzzer, DigitalInputDevice
from gpiozero.pins import Factory

from device.door.lock import DoorLock
from device.door.pins import default_pin_factory
from device.door.timer import DeadlineTimer, positive_seconds

log = logging.getLogger(__name__)

Callback = Callable[[], object]


def _call(callback: Callback | None, name: str) -> None:
    if callback is None:
        return
    try:
        callback()
    except Exception:
        log.exception("door callback %s failed", name)


class DoorContact:
    """A reed switch on the door frame, read like a button.

    Wiring: the switch between the GPIO pin and ground with the Pi's pull-up
    (``pull_up=True``), so a closed contact reads low, i.e. "pressed". With the usual
    normally-open reed switch the magnet closes the contact while the door is shut:
    ``closed_is_pressed=True`` (default). Use False for a normally-closed switch.

    It is a gpiozero ``DigitalInputDevice`` rather than a ``Button``: a button's hold-timer
    thread is of no use on a contact that is "held" all day, and closing a held ``Button``
    waits out its hold time (1 s).

    Events, each a no-argument callback attribute:

    - ``on_forced_open``: the door opened while ``lock`` was locked.
    - ``on_held_open``: the door is still open ``held_open_seconds`` (30.0 s by default)
      after it opened; fires at most once per opening.
    - ``on_closed``: the door closed. If ``lock_on_close`` and the door had opened during a
      timed unlock, the lock is re-locked first, so the rest of that unlock cannot let a
      second person in. A lock that is *held open* is left alone.

    ``bounce_time`` (seconds) debounces the reed switch; ``clock`` is as for ``DoorLock``.
    """

    def __init__(
        self,
        pin: int | str,
        *,
        lock: DoorLock,
        pull_up: bool = True,
        closed_is_pressed: bool = True,
        held_open_seconds: float = 30.0,
        lock_on_close: bool = True,
        bounce_time: float | None = 0.05,
        pin_factory: Factory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.held_open_seconds = positive_seconds(held_open_seconds, "held_open_seconds")
        self.lock_on_close = lock_on_close
        self.on_forced_open: Callback | None = None
        self.on_held_open: Callback | None = None
        self.on_closed: Callback | None = None
        self._door_lock = lock
        self._closed_is_pressed = closed_is_pressed
        self._clock = clock
        self._state_lock = threading.Lock()
        self._opened_during_unlock = False
        self._held_timer = DeadlineTimer(
            self._held_expired, clock=clock, name=f"door-contact-{pin}"
        )
        try:
            self._input = DigitalInputDevice(
                pin, pull_up=pull_up, bounce_time=bounce_time,
                pin_factory=default_pin_factory() if pin_factory is None else pin_factory,
            )
        except BaseException:
            self._held_timer.close()
            raise
        opened, closed = self._opened, self._closed
        self._input.when_activated = closed if closed_is_pressed else opened
        self._input.when_deactivated = opened if closed_is_pressed else closed
        if self.is_open:
            # Propped open when the daemon started: still worth a held-open alarm.
            self._held_timer.set(self._clock() + self.held_open_seconds)

    def __enter__(self) -> DoorContact:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        """True while the door is open (the contact says so)."""
        return self._input.is_active != self._closed_is_pressed

    def close(self) -> None:
        """Stop watching the door and release the pin. Idempotent."""
        self._held_timer.close()
        self._input.close()

    def _opened(self) -> None:
        forced = self._door_lock.is_locked
        with self._state_lock:
            self._opened_during_unlock = not forced
        self._held_timer.set(self._clock() + self.held_open_seconds)
        if forced:
            _call(self.on_forced_open, "on_forced_open")

    def _closed(self) -> None:
        self._held_timer.set(None)
        with self._state_lock:
            relock = self.lock_on_close and self._opened_during_unlock
            self._opened_during_unlock = False
        # "unlocked" only: a door held open by an operator must stay unlocked on close.
        if relock and self._door_lock.state == "unlocked":
            self._door_lock.lock()
        _call(self.on_closed, "on_closed")

    def _held_expired(self) -> None:
        if self.is_open:
            _call(self.on_held_open, "on_held_open")


class ExitButton:
    """The request-to-exit button inside the door, read as a gpiozero ``Button``.

    Wiring: between the GPIO pin and ground with the Pi's pull-up (``pull_up=True``).
    ``bounce_time`` is in seconds (0.05 by default). ``on_press`` (no arguments) is called on
    each press; the button does not unlock anything itself, the ``Door`` facade does.
    """

    def __init__(
        self,
        pin: int | str,
        *,
        pull_up: bool = True,
        pin_factory: Factory | None = None,
        bounce_time: float | None = 0.05,
    ) -> None:
        self.on_press: Callback | None = None
        self._button = Button(
            pin, pull_up=pull_up, bounce_time=bounce_time,
            pin_factory=default_pin_factory() if pin_factory is None else pin_factory,
        )
        self._button.when_pressed = self._pressed

    def __enter__(self) -> ExitButton:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def is_pressed(self) -> bool:
        return self._button.is_pressed

    def close(self) -> None:
        """Release the pin. Idempotent."""
        self._button.close()

    def _pressed(self) -> None:
        _call(self.on_press, "on_press")


class Indicators:
    """Optional green LED, red LED and buzzer; any pin left as None is simply absent.

    ``granted()`` lights green for ``seconds`` (1.0 s); ``denied()`` lights red for
    ``seconds`` (1.0 s) and sounds the buzzer for ``buzz_seconds`` (0.2 s). Both return at
    once: gpiozero's blink thread switches them off.
    """

    def __init__(
        self,
        green_pin: int | str | None = None,
        red_pin: int | str | None = None,
        buzzer_pin: int | str | None = None,
        *,
        pin_factory: Factory | None = None,
    ) -> None:
        factory = pin_factory
        if factory is None and any(p is not None for p in (green_pin, red_pin, buzzer_pin)):
            factory = default_pin_factory()
        self.green = None if green_pin is None else LED(green_pin, pin_factory=factory)
        self.red = None if red_pin is None else LED(red_pin, pin_factory=factory)
        self.buzzer = None if buzzer_pin is None else Buzzer(buzzer_pin, pin_factory=factory)

    def __enter__(self) -> Indicators:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def granted(self, seconds: float = 1.0) -> None:
        if self.green is not None:
            self.green.blink(on_time=seconds, off_time=0, n=1)

    def denied(self, seconds: float = 1.0, buzz_seconds: float = 0.2) -> None:
        if self.red is not None:
            self.red.blink(on_time=seconds, off_time=0, n=1)
        if self.buzzer is not None:
            self.buzzer.beep(on_time=buzz_seconds, off_time=0, n=1)

    def close(self) -> None:
        """Switch everything off and release the pins. Idempotent."""
        for device in (self.green, self.red, self.buzzer):
            if device is not None:
                # off() first: closing alone releases the pin wherever it happened to be.
                device.off()
                device.close()
