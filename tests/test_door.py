"""The door hardware layer on gpiozero's mock pins, checked by the relay's timed history.

A MockPin records every change as (seconds since the previous change, new level), so a
history [(0.0, False), (None, True), (0.3, False)] reads "locked, energised at once,
de-energised 0.3 s later". Times are checked to within 0.05 s, as in gpiozero's own tests.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gpiozero import BadPinFactory, Device, DeviceClosed
from gpiozero.pins.mock import MockFactory, MockPin

import device.door.lock as lock_module
import device.door.pins as door_pins
from device.door import (
    Door,
    DoorContact,
    DoorLock,
    DoorSettings,
    ExitButton,
    Indicators,
    default_pin_factory,
)

RELAY, CONTACT, EXIT, GREEN, RED, BUZZER = 17, 27, 22, 5, 6, 13
TOLERANCE = 0.05  # seconds; a shared 2-core CI box is not a real-time system


@pytest.fixture
def no_default_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the process-wide factory choice for one test, and restore it afterwards."""
    monkeypatch.setattr(door_pins, "_default_factory", None)
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    yield
    if door_pins._default_factory is not None:
        door_pins._default_factory.close()


def assert_history(pin: MockPin, expected: list[tuple[float | None, bool]]) -> None:
    """Exactly these levels, each this many seconds after the previous change.

    None is "any time": used for the first change after ``clear_states()``, which measures
    how quickly the test got round to acting, not the code under test.
    """
    assert [bool(s.state) for s in pin.states] == [level for _, level in expected]
    actual = [s.timestamp for s in pin.states]
    wanted = [a if t is None else t for a, (t, _) in zip(actual, expected, strict=True)]
    assert actual == pytest.approx(wanted, abs=TOLERANCE)


def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def make_door(
    factory: MockFactory, events: list, times: list | None = None, **settings: Any
) -> Door:
    """A Door on mock pins whose contact (if fitted) starts shut, with no events yet.

    Each event is appended to ``events`` as (kind, detail), and when it happened (monotonic
    seconds) to ``times`` if given.
    """

    def record(kind: str, detail: dict) -> None:
        events.append((kind, detail))
        if times is not None:
            times.append(time.monotonic())

    door = Door(DoorSettings(**settings), on_event=record, pin_factory=factory)
    if door.contact is not None:
        door_shuts(factory)
    events.clear()
    if times is not None:
        times.clear()
    return door


def door_shuts(factory: MockFactory) -> None:
    factory.pin(CONTACT).drive_low()  # reed contact closed to ground


def door_opens(factory: MockFactory) -> None:
    factory.pin(CONTACT).drive_high()  # the pull-up wins


def kinds(events: list) -> list[str]:
    return [kind for kind, _ in events]


# -- DoorLock ------------------------------------------------------------------------------


def test_lock_is_locked_at_start(factory):
    relay = factory.pin(RELAY)
    with DoorLock(RELAY, pin_factory=factory) as lock:
        assert lock.is_locked
        assert lock.state == "locked"
        assert lock.unlocked_until is None
        assert_history(relay, [(0.0, False)])


def test_unlock_energises_for_the_configured_time_then_locks(factory):
    relay = factory.pin(RELAY)
    with DoorLock(RELAY, unlock_seconds=0.3, pin_factory=factory) as lock:
        relay.clear_states()
        end = lock.unlock()
        assert not lock.is_locked
        assert lock.state == "unlocked"
        assert lock.unlocked_until == end
        assert end == pytest.approx(time.monotonic() + 0.3, abs=TOLERANCE)
        assert wait_for(lambda: lock.is_locked)
        assert lock.unlocked_until is None
        assert_history(relay, [(0.0, False), (None, True), (0.3, False)])


def test_active_low_relay_inverts_the_pin_level(factory):
    relay = factory.pin(RELAY)
    with DoorLock(RELAY, active_high=False, unlock_seconds=0.2, pin_factory=factory) as lock:
        assert relay.state  # high is de-energised on an active-low board
        relay.clear_states()
        lock.unlock()
        assert not relay.state
        assert wait_for(lambda: lock.is_locked)
        assert_history(relay, [(0.0, True), (None, False), (0.2, True)])


def test_unlock_while_unlocked_extends_to_the_later_end(factory):
    relay = factory.pin(RELAY)
    with DoorLock(RELAY, unlock_seconds=0.3, pin_factory=factory) as lock:
        relay.clear_states()
        timer_thread = lock._timer.thread
        first_end = lock.unlock()
        time.sleep(0.1)
        second_end = lock.unlock()
        assert second_end > first_end
        assert lock.unlock(0.05) == second_end  # a shorter unlock never cuts it short
        assert lock._timer.thread is timer_thread  # one timer thread, not one per unlock
        assert wait_for(lambda: lock.is_locked)
        open_for = second_end - first_end + 0.3  # about 0.4 s, more if the sleep overran
        assert_history(relay, [(0.0, False), (None, True), (open_for, False)])


def test_lock_cuts_an_unlock_short(factory):
    relay = factory.pin(RELAY)
    with DoorLock(RELAY, pin_factory=factory) as lock:
        relay.clear_states()
        start = time.monotonic()
        lock.unlock(5.0)
        time.sleep(0.1)
        lock.lock()
        open_for = time.monotonic() - start
        assert lock.is_locked
        assert lock.unlocked_until is None
        time.sleep(0.1)  # and the cancelled timer does nothing later
        assert_history(relay, [(0.0, False), (None, True), (open_for, False)])


def test_hold_open_until_keeps_the_door_unlocked_until_then(factory):
    relay = factory.pin(RELAY)
    with DoorLock(RELAY, pin_factory=factory) as lock:
        relay.clear_states()
        until = time.monotonic() + 0.3
        lock.hold_open_until(until)
        assert lock.state == "held_open"
        assert lock.unlock(0.05) == until  # a grant during a hold-open changes nothing
        assert lock.state == "held_open"
        assert lock.unlocked_until == until
        assert wait_for(lambda: lock.is_locked)
        assert lock.state == "locked"
        assert_history(relay, [(0.0, False), (None, True), (0.3, False)])
        with pytest.raises(ValueError, match="already passed"):
            lock.hold_open_until(time.monotonic() - 1)


@pytest.mark.parametrize("seconds", [0, -1, math.nan, math.inf])
def test_unlock_rejects_a_nonsense_duration(factory, seconds):
    with DoorLock(RELAY, pin_factory=factory) as lock:
        with pytest.raises(ValueError, match="positive number of seconds"):
            lock.unlock(seconds)
        assert lock.is_locked


def test_close_during_an_unlock_deenergises_at_once_and_ends_the_timer(factory):
    relay = factory.pin(RELAY)
    lock = DoorLock(RELAY, pin_factory=factory)
    relay.clear_states()
    start = time.monotonic()
    lock.unlock(5.0)
    timer_thread = lock._timer.thread
    time.sleep(0.1)
    lock.close()
    open_for = time.monotonic() - start
    assert_history(relay, [(0.0, False), (None, True), (open_for, False)])
    assert not timer_thread.is_alive()
    assert lock.is_locked and lock.state == "locked"
    lock.close()  # idempotent
    lock.lock()  # closed is locked: a no-op, not an error
    with pytest.raises(DeviceClosed):
        lock.unlock()


def test_close_from_a_sigterm_handler_locks_even_mid_call(factory):
    relay = factory.pin(RELAY)
    lock = DoorLock(RELAY, pin_factory=factory)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: lock.close())
    try:
        lock.unlock(5.0)
        # The handler runs on this thread while it holds the lock's own lock, as it would
        # if SIGTERM arrived in the middle of unlock(): it must not deadlock.
        with lock._lock:
            os.kill(os.getpid(), signal.SIGTERM)
        assert not relay.state
        assert not lock._timer.thread.is_alive()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_lock_from_a_signal_handler_in_the_middle_of_unlock_wins(factory, monkeypatch):
    relay = factory.pin(RELAY)
    with DoorLock(RELAY, pin_factory=factory) as lock:
        arm = lock._timer.set

        def arm_then_signal(when: float | None) -> None:
            arm(when)
            if when is not None:  # the worst moment: re-lock armed, relay not yet on
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(lock._timer, "set", arm_then_signal)
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: lock.lock())
        try:
            lock.unlock(5.0)
        finally:
            signal.signal(signal.SIGTERM, previous)
        assert not relay.state
        assert lock.is_locked
        assert lock.unlocked_until is None
        assert lock._timer.when is None


def test_a_failing_timer_locks_the_door(factory, caplog):
    calls = itertools.count()

    def clock_that_fails_once() -> float:
        if next(calls) == 1:  # the timer thread's first reading
            raise OSError("clock source lost")
        return time.monotonic()

    relay = factory.pin(RELAY)
    with DoorLock(RELAY, pin_factory=factory, clock=clock_that_fails_once) as lock:
        relay.clear_states()
        lock.unlock(5.0)
        crashed_thread = lock._timer.thread
        assert wait_for(lambda: lock.is_locked, timeout=0.5)
        assert wait_for(lambda: not crashed_thread.is_alive())
        assert lock.unlocked_until is None
        assert "the door has been locked" in caplog.text
        lock.unlock(0.2)  # and the lock still works, on a fresh timer thread
        assert wait_for(lambda: lock.is_locked)
        assert_history(
            relay, [(0.0, False), (None, True), (None, False), (None, True), (0.2, False)]
        )


def test_racing_unlocks_and_locks_always_end_locked(factory):
    with DoorLock(RELAY, pin_factory=factory) as lock:

        def hammer(seed: int) -> None:
            for i in range(300):
                if (i + seed) % 3:
                    lock.unlock(0.05)
                else:
                    lock.lock()

        threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Whatever the interleaving, every energised period has a re-lock pending.
        assert wait_for(lambda: lock.is_locked, timeout=1.0)
        assert lock.unlocked_until is None


def test_interpreter_exit_locks_every_open_lock(factory):
    relay = factory.pin(RELAY)
    lock = DoorLock(RELAY, pin_factory=factory)
    lock.unlock(5.0)
    lock_module._close_all_at_exit()  # what atexit runs
    assert not relay.state
    assert lock.is_locked


# -- DoorContact, ExitButton, Indicators ---------------------------------------------------


def test_forced_open_when_the_door_opens_while_locked(factory):
    events = []
    with make_door(factory, events, contact_pin=CONTACT) as door:
        door_opens(factory)
        assert door.is_open
        assert kinds(events) == ["forced_open"]
        door_shuts(factory)
        assert kinds(events) == ["forced_open", "door_closed"]


def test_no_forced_open_when_the_door_opens_during_an_unlock(factory):
    events = []
    with make_door(factory, events, contact_pin=CONTACT, lock_on_close=False) as door:
        door.grant(0.3)
        door_opens(factory)
        assert events == []


def test_held_open_fires_once_per_opening_after_n_seconds(factory):
    events, times = [], []
    with make_door(factory, events, times, contact_pin=CONTACT, held_open_seconds=0.2) as door:
        door.grant(5.0)
        opened = time.monotonic()
        door_opens(factory)
        assert wait_for(lambda: events)
        assert times[0] - opened == pytest.approx(0.2, abs=TOLERANCE)
        time.sleep(0.3)
        assert events == [("held_open", {"seconds": 0.2})]
        door_shuts(factory)
        door_opens(factory)  # forced, since closing re-locked
        assert wait_for(lambda: len(events) == 4)
        assert kinds(events) == ["held_open", "door_closed", "forced_open", "held_open"]


def test_no_held_open_when_the_door_shuts_in_time(factory):
    events = []
    with make_door(factory, events, contact_pin=CONTACT, held_open_seconds=0.2) as door:
        door.grant(5.0)
        door_opens(factory)
        time.sleep(0.1)
        door_shuts(factory)
        time.sleep(0.2)
        assert kinds(events) == ["door_closed"]


def test_closing_the_door_after_a_grant_relocks_it(factory):
    relay = factory.pin(RELAY)
    events = []
    with make_door(factory, events, contact_pin=CONTACT) as door:
        relay.clear_states()
        start = time.monotonic()
        door.grant(5.0)
        door_opens(factory)
        time.sleep(0.1)
        door_shuts(factory)
        open_for = time.monotonic() - start
        assert door.is_locked
        assert events == [("door_closed", {"state": "locked"})]
        assert_history(relay, [(0.0, False), (None, True), (open_for, False)])


def test_closing_the_door_does_not_relock_without_lock_on_close(factory):
    events = []
    with make_door(factory, events, contact_pin=CONTACT, lock_on_close=False) as door:
        door.grant(5.0)
        door_opens(factory)
        door_shuts(factory)
        assert door.state == "unlocked"


def test_closing_the_door_leaves_a_hold_open_alone(factory):
    events = []
    with make_door(factory, events, contact_pin=CONTACT) as door:
        door.hold_open_until(time.monotonic() + 5.0)
        door_opens(factory)
        door_shuts(factory)
        assert door.state == "held_open"
        assert events == [("door_closed", {"state": "held_open"})]


def test_contact_polarity_is_configurable(factory):
    contact_pin = factory.pin(CONTACT)
    with DoorLock(RELAY, pin_factory=factory) as lock, DoorContact(
        CONTACT, lock=lock, closed_is_pressed=False, pin_factory=factory
    ) as contact:
        forced = []
        contact.on_forced_open = lambda: forced.append(True)
        assert not contact.is_open  # normally-closed switch: pulled high while shut
        contact_pin.drive_low()
        assert contact.is_open
        assert forced == [True]


def test_exit_button_press_unlocks_and_reports(factory):
    relay = factory.pin(RELAY)
    button = factory.pin(EXIT)
    events = []
    with make_door(factory, events, exit_button_pin=EXIT, unlock_seconds=0.2) as door:
        relay.clear_states()
        button.drive_low()
        button.drive_high()
        assert kinds(events) == ["exit_button"]
        assert events[0][1]["until"] == door.unlocked_until
        assert wait_for(lambda: door.is_locked)
        assert_history(relay, [(0.0, False), (None, True), (0.2, False)])


def test_exit_button_calls_on_press(factory):
    button = factory.pin(EXIT)
    with ExitButton(EXIT, pin_factory=factory) as exit_button:
        presses = []
        exit_button.on_press = lambda: presses.append(True)
        button.drive_low()
        assert exit_button.is_pressed
        button.drive_high()
        button.drive_low()
        assert presses == [True, True]


def test_a_failing_event_handler_neither_stops_the_door_nor_leaves_it_open(factory, caplog):
    def broken_handler(kind: str, detail: dict) -> None:
        raise RuntimeError("event log is full")

    door = Door(
        DoorSettings(contact_pin=CONTACT, exit_button_pin=EXIT, unlock_seconds=0.2),
        on_event=broken_handler,
        pin_factory=factory,
    )
    with door:
        door_shuts(factory)
        factory.pin(EXIT).drive_low()
        assert not door.is_locked  # the unlock happened before the handler failed
        assert wait_for(lambda: door.is_locked)  # and the relock does not depend on it
        door.grant(5.0)
        door_opens(factory)
        door_shuts(factory)
        assert door.is_locked  # lock_on_close ran although on_event raised
        assert caplog.text.count("door event handler failed") == 3


def test_manual_unlock_reports_who_and_how_long(factory):
    events = []
    with make_door(factory, events, unlock_seconds=0.2) as door:
        end = door.manual_unlock(by="alice")
        assert events == [("manual_unlock", {"by": "alice", "seconds": 0.2, "until": end})]
        assert wait_for(lambda: door.is_locked)


def test_indicators_blink_green_for_granted_and_red_with_a_buzz_for_denied(factory):
    green, red, buzzer = factory.pin(GREEN), factory.pin(RED), factory.pin(BUZZER)
    with Indicators(GREEN, RED, BUZZER, pin_factory=factory) as indicators:
        indicators.granted(0.2)
        indicators.denied(0.2, buzz_seconds=0.1)
        assert wait_for(lambda: not (green.state or red.state or buzzer.state))
        assert_history(green, [(0.0, False), (None, True), (0.2, False)])
        assert_history(red, [(0.0, False), (None, True), (0.2, False)])
        assert_history(buzzer, [(0.0, False), (None, True), (0.1, False)])


def test_indicators_are_optional(factory):
    with Indicators(pin_factory=factory) as indicators:
        indicators.granted()
        indicators.denied()
    assert factory.pins == {}  # nothing claimed, nothing switched
    events = []
    with make_door(factory, events, unlock_seconds=0.2) as door:
        door.grant()
        door.deny()
        assert not door.is_locked
        assert door.is_open is None  # no contact fitted


def test_door_close_leaves_everything_locked_and_off(factory):
    settings = DoorSettings(
        contact_pin=CONTACT, exit_button_pin=EXIT,
        green_led_pin=GREEN, red_led_pin=RED, buzzer_pin=BUZZER,
    )
    door = Door(settings, pin_factory=factory)
    door.grant(5.0)
    door.deny()
    door.close()
    assert door.is_locked
    assert not any(factory.pin(p).state for p in (RELAY, GREEN, RED, BUZZER))
    door.close()  # idempotent


# -- settings and pin choice ---------------------------------------------------------------


def test_door_settings_defaults_and_errors():
    assert DoorSettings() == DoorSettings.from_mapping({})
    assert DoorSettings().relay_pin == 17
    assert DoorSettings.from_mapping({"contact_pin": 27}).contact_pin == 27
    with pytest.raises(ValueError, match="unknown door setting"):
        DoorSettings.from_mapping({"relay": 17})
    with pytest.raises(ValueError, match="same pin: relay_pin=17, exit_button_pin=17"):
        DoorSettings(exit_button_pin=17)
    with pytest.raises(ValueError, match="unlock_seconds"):
        DoorSettings(unlock_seconds=0)


@pytest.mark.skipif(Path("/proc/device-tree/model").exists(), reason="this machine has GPIO")
def test_default_pin_factory_falls_back_to_mock_pins_without_a_warning(
    no_default_factory, caplog
):
    with warnings.catch_warnings(record=True) as escaped, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        chosen = default_pin_factory()
    assert escaped == []
    assert isinstance(chosen, MockFactory)
    assert "no GPIO found: using gpiozero's mock pins (nothing is switched)" in caplog.text
    assert default_pin_factory() is chosen  # resolved once per process
    assert Device.pin_factory is chosen  # and gpiozero agrees
    with DoorLock(RELAY) as lock:  # devices default to it
        assert lock._relay.pin_factory is chosen


def test_gpiozero_pin_factory_env_var_is_honoured(no_default_factory, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    assert isinstance(default_pin_factory(), MockFactory)


def test_a_misnamed_pin_factory_fails_loudly(no_default_factory, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "foobarbaz")
    with pytest.raises(BadPinFactory):
        default_pin_factory()
