"""The door: relay-driven strike, reed contact, exit button, LEDs and buzzer.

``Door`` composes the parts from one ``DoorSettings`` and reports what happens at the door
through a single ``on_event(kind, detail)`` callback. The parts (``DoorLock``,
``DoorContact``, ``ExitButton``, ``Indicators``) can be used alone; each takes a gpiozero
``pin_factory`` keyword, and ``default_pin_factory()`` is the one place that picks it.

Hazard: the relay is energised while unlocked; on power loss a fail-secure strike stays
locked.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory

from device.door.lock import DoorLock, LockState
from device.door.pins import default_pin_factory
from device.door.sensors import DoorContact, ExitButton, Indicators
from device.door.timer import positive_seconds

__all__ = [
    "EVENT_KINDS",
    "Door",
    "DoorContact",
    "DoorLock",
    "DoorSettings",
    "EventCallback",
    "ExitButton",
    "Indicators",
    "LockState",
    "default_pin_factory",
]

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], object]
EVENT_KINDS = ("forced_open", "held_open", "exit_button", "door_closed", "manual_unlock")

_PIN_FIELDS = ("relay_pin", "contact_pin", "exit_button_pin", "green_led_pin", "red_led_pin",
               "buzzer_pin")


@dataclass(frozen=True)
class DoorSettings:
    """How the door is wired. Pins are BCM GPIO numbers; None means "not fitted".

    - ``relay_pin`` (17): the strike relay. ``relay_active_high`` (True): False for relay
      boards that energise on a low input.
    - ``unlock_seconds`` (3.0): how long a grant, exit-button press or manual unlock opens.
    - ``contact_pin`` (None): the door's reed contact, switched to ground.
      ``contact_closed_is_pressed`` (True): the contact is closed while the door is shut
      (normally-open reed switch); False for a normally-closed one.
    - ``held_open_seconds`` (30.0): an open door raises "held_open" after this long.
    - ``lock_on_close`` (True): re-lock as soon as the door closes after a timed unlock.
    - ``exit_button_pin`` (None): request-to-exit button, switched to ground.
    - ``green_led_pin``, ``red_led_pin``, ``buzzer_pin`` (None): optional indicators.
    """

    relay_pin: int = 17
    relay_active_high: bool = True
    unlock_seconds: float = 3.0
    contact_pin: int | None = None
    contact_closed_is_pressed: bool = True
    held_open_seconds: float = 30.0
    lock_on_close: bool = True
    exit_button_pin: int | None = None
    green_led_pin: int | None = None
    red_led_pin: int | None = None
    buzzer_pin: int | None = None

    def __post_init__(self) -> None:
        positive_seconds(self.unlock_seconds, "unlock_seconds")
        positive_seconds(self.held_open_seconds, "held_open_seconds")
        used = [(name, getattr(self, name)) for name in _PIN_FIELDS]
        pins = [pin for _, pin in used if pin is not None]
        if len(pins) != len(set(pins)):
            shared = ", ".join(f"{name}={pin}" for name, pin in used if pins.count(pin) > 1)
            raise ValueError(f"two door parts are wired to the same pin: {shared}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DoorSettings:
        """Build from a plain dict (a config file's ``[door]`` table); unknown keys are errors."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown door setting(s): {', '.join(unknown)}")
        return cls(**values)


class Door:
    """The door as the daemon sees it: grant, deny, manual unlock, events.

    ``on_event(kind, detail)`` is called for each kind in ``EVENT_KINDS``:

    - ``"forced_open"`` ``{}``: the door opened while locked.
    - ``"held_open"`` ``{"seconds": held_open_seconds}``: still open after that long.
    - ``"exit_button"`` ``{"until": end}``: the exit button was pressed; the door is unlocked
      until ``end`` (``clock``'s scale).
    - ``"door_closed"`` ``{"state": lock state after closing}``.
    - ``"manual_unlock"`` ``{"by": who, "seconds": s, "until": end}``.

    It is called on gpiozero's pin thread or a timer thread, so it must be thread-safe and
    quick (put the event on a ``queue.Queue``); an exception in it is logged and swallowed.
    Face-recognition grants are not events here: the daemon knows who was granted and logs
    that itself around ``grant()``.
    """

    def __init__(
        self,
        settings: DoorSettings | Mapping[str, Any] | None = None,
        *,
        on_event: EventCallback | None = None,
        pin_factory: Factory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(settings, DoorSettings):
            settings = DoorSettings.from_mapping(settings or {})
        self.settings = settings
        self.on_event = on_event
        factory = default_pin_factory() if pin_factory is None else pin_factory
        self.pin_factory = factory
        self.lock = DoorLock(
            settings.relay_pin, active_high=settings.relay_active_high,
            unlock_seconds=settings.unlock_seconds, pin_factory=factory, clock=clock,
        )
        self.contact: DoorContact | None = None
        self.exit_button: ExitButton | None = None
        self.indicators: Indicators | None = None
        try:
            self._build_parts(factory, clock)
        except BaseException:
            self.close()  # a half-built door must not leave the relay pin claimed
            raise

    @property
    def has_real_pins(self) -> bool:
        """True when the door switches real GPIO pins, not gpiozero's mock pins."""
        return not isinstance(self.pin_factory, MockFactory)

    def _build_parts(self, factory: Factory, clock: Callable[[], float]) -> None:
        s = self.settings
        if s.contact_pin is not None:
            self.contact = DoorContact(
                s.contact_pin, lock=self.lock, closed_is_pressed=s.contact_closed_is_pressed,
                held_open_seconds=s.held_open_seconds, lock_on_close=s.lock_on_close,
                pin_factory=factory, clock=clock,
            )
            self.contact.on_forced_open = self._forced_open
            self.contact.on_held_open = self._held_open
            self.contact.on_closed = self._door_closed
        if s.exit_button_pin is not None:
            self.exit_button = ExitButton(s.exit_button_pin, pin_factory=factory)
            self.exit_button.on_press = self._exit_pressed
        self.indicators = Indicators(
            s.green_led_pin, s.red_led_pin, s.buzzer_pin, pin_factory=factory
        )

    def __enter__(self) -> Door:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state -------------------------------------------------------------------------------

    @property
    def is_locked(self) -> bool:
        return self.lock.is_locked

    @property
    def state(self) -> LockState:
        return self.lock.state

    @property
    def unlocked_until(self) -> float | None:
        return self.lock.unlocked_until

    @property
    def is_open(self) -> bool | None:
        """True/False from the reed contact; None when no contact is fitted."""
        return None if self.contact is None else self.contact.is_open

    # -- actions -----------------------------------------------------------------------------

    def grant(self, seconds: float | None = None) -> float:
        """A recognised face: unlock (default ``unlock_seconds``), light green; return end."""
        end = self.lock.unlock(seconds)
        if self.indicators is not None:
            self.indicators.granted()
        return end

    def deny(self) -> None:
        """An unknown face: red light and a short buzz. The lock is not touched."""
        if self.indicators is not None:
            self.indicators.denied()

    def manual_unlock(self, seconds: float | None = None, by: str | None = None) -> float:
        """Unlock on an operator's request (web page, CLI); emits "manual_unlock"."""
        end = self.lock.unlock(seconds)
        seconds = self.settings.unlock_seconds if seconds is None else seconds
        self._emit("manual_unlock", {"by": by, "seconds": seconds, "until": end})
        return end

    def hold_open_until(self, when: float) -> None:
        """Keep the door unlocked until ``when`` (``clock``'s scale, monotonic)."""
        self.lock.hold_open_until(when)

    def relock(self) -> None:
        """Re-lock at once (also ends a hold-open). Safe from a signal handler."""
        self.lock.lock()

    def close(self) -> None:
        """Leave everything locked and off, and release every pin. Idempotent.

        The relay goes first; a part that fails to close is logged and the rest still close.
        Safe from a SIGTERM handler (see ``DoorLock.close``).
        """
        self.lock.close()
        for part in (self.exit_button, self.contact, self.indicators):
            if part is None:
                continue
            try:
                part.close()
            except Exception:
                log.exception("could not close %r", part)

    # -- events ------------------------------------------------------------------------------

    def _emit(self, kind: str, detail: dict[str, Any]) -> None:
        log.info("door event %s %s", kind, detail)
        if self.on_event is None:
            return
        try:
            self.on_event(kind, detail)
        except Exception:
            log.exception("door event handler failed on %s", kind)

    def _forced_open(self) -> None:
        self._emit("forced_open", {})

    def _held_open(self) -> None:
        self._emit("held_open", {"seconds": self.settings.held_open_seconds})

    def _door_closed(self) -> None:
        self._emit("door_closed", {"state": self.lock.state})

    def _exit_pressed(self) -> None:
        end = self.lock.unlock()
        self._emit("exit_button", {"until": end})
