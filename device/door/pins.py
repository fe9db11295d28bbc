"""The one place that picks the GPIO pins the door is wired to.

Every door device (``DoorLock``, ``DoorContact``, ``ExitButton``, ``Indicators``) takes a
``pin_factory`` keyword; when it is not given, the factory chosen here is used. The choice is
made once per process and is also installed as gpiozero's own ``Device.pin_factory``, so any
other gpiozero device in the process agrees with it and gpiozero's exit hook closes them all.

``GPIOZERO_PIN_FACTORY`` (``lgpio``, ``rpigpio``, ``pigpio``, ``native`` or ``mock``) overrides
the choice exactly as it does for gpiozero; a factory named there that cannot be loaded is an
error, never a silent fall-back. Set it to ``lgpio`` in the appliance's service file so that a
broken GPIO set-up on the Pi stops the daemon instead of running it on mock pins.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings

from gpiozero import Device
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory

log = logging.getLogger(__name__)

_default_factory: Factory | None = None
_choosing = threading.Lock()


def default_pin_factory() -> Factory:
    """Return the process-wide pin factory, choosing it on first use.

    Without ``GPIOZERO_PIN_FACTORY``, gpiozero's own order is tried (lgpio, RPi.GPIO, pigpio,
    native). When none of them loads (not a Raspberry Pi, or no GPIO library installed),
    gpiozero's ``MockFactory`` is used and a WARNING is logged: the daemon then runs, but
    nothing is switched. gpiozero reports each failed attempt as a ``PinFactoryFallback``
    *Python warning*; those are caught here and logged instead, because the choice is
    deliberate and a test run with ``filterwarnings = error`` must not fail on it.

    Raises ``gpiozero.BadPinFactory`` when ``GPIOZERO_PIN_FACTORY`` names a factory that
    cannot be loaded.
    """
    global _default_factory
    with _choosing:
        if _default_factory is None:
            _default_factory = _choose()
        return _default_factory


def _choose() -> Factory:
    # catch_warnings swaps the process-wide warning filters, which is not thread-safe; it is
    # only done here, once, under _choosing, normally before any other thread is started.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            Device.ensure_pin_factory()
        except Exception as exc:
            if os.environ.get("GPIOZERO_PIN_FACTORY"):
                raise  # a factory was asked for by name: failing loudly is the point
            reasons = [str(w.message) for w in caught] + [str(exc)]
            log.warning(
                "no GPIO found: using gpiozero's mock pins (nothing is switched); %s",
                "; ".join(reasons),
            )
            Device.pin_factory = MockFactory()
        else:
            for w in caught:
                log.info("gpiozero: %s", w.message)
    log.info("GPIO pins: %s", type(Device.pin_factory).__name__)
    return Device.pin_factory
