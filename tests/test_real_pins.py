"""Click the real door relay once. Opt-in, on the Pi with the relay board attached.

    FACEGATE_REAL_PINS=17 pytest tests/test_real_pins.py

``FACEGATE_REAL_PINS`` names the relay's pin (BCM number, or a gpiozero name such as
"BOARD11"); set ``FACEGATE_REAL_PINS_ACTIVE_LOW=1`` for a board that energises on a low pin.
Hazard: this really energises the relay, so the strike unlocks the door for half a second.
"""

from __future__ import annotations

import os
import time

import pytest
from gpiozero.pins.mock import MockFactory

from device.door import DoorLock, default_pin_factory

RELAY_PIN = os.environ.get("FACEGATE_REAL_PINS", "")
ACTIVE_LOW = os.environ.get("FACEGATE_REAL_PINS_ACTIVE_LOW", "") not in ("", "0")

pytestmark = pytest.mark.skipif(
    not RELAY_PIN, reason="set FACEGATE_REAL_PINS to the relay's pin to click the real relay"
)


def test_the_real_relay_clicks_once():
    factory = default_pin_factory()
    assert not isinstance(factory, MockFactory), "FACEGATE_REAL_PINS is set but no GPIO found"
    pin = int(RELAY_PIN) if RELAY_PIN.isdigit() else RELAY_PIN
    with DoorLock(pin, active_high=not ACTIVE_LOW, unlock_seconds=0.5) as lock:
        assert lock.is_locked
        start = time.monotonic()
        lock.unlock()
        assert not lock.is_locked
        while not lock.is_locked and time.monotonic() - start < 2.0:
            time.sleep(0.01)
        assert lock.is_locked
        assert time.monotonic() - start == pytest.approx(0.5, abs=0.1)
