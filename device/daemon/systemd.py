"""systemd's notify protocol (READY=1, WATCHDOG=1, STATUS=...), without a dependency.

Under ``Type=notify`` systemd passes a datagram socket in ``NOTIFY_SOCKET``; outside systemd
the variable is unset and every call does nothing. The watchdog is pinged from the frame loop
itself, so a wedged loop (a camera read that never returns, a deadlock) stops the pings and
systemd restarts the daemon, which starts with the door locked.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        self._address = address or None
        usec = int(environ.get("WATCHDOG_USEC", "0") or 0)
        # Ping at twice the rate systemd needs, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = usec / 2_000_000 if usec else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(message.encode(), self._address)
            except OSError:
                pass  # systemd gone (shutting down): nothing useful to do about it

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self, now: float | None = None) -> None:
        """Ping the watchdog, at most at the interval systemd asked for."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._last_ping >= self.watchdog_interval:
            self.notify("WATCHDOG=1")
            self._last_ping = now
