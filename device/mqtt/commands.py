"""Commands to the door over MQTT: off unless ``mqtt.accept_commands`` (TLS and the door's own
account required, device/config.py), and then only fresh ones.

A command is a JSON object on ``<prefix>/<door>/command``::

    {"action": "unlock", "seconds": 5, "at": "2026-11-30T12:00:00Z", "nonce": "8d1c..."}

``action`` is ``unlock`` (``seconds`` optional, 0.5 to 60, default ``door.unlock_seconds``)
or ``lock``. ``at`` is when it was sent (ISO 8601 with a zone, or Unix seconds) and must be
within :data:`MAX_AGE_SECONDS` of the door's clock; ``nonce`` (8 to 128 printable
characters) must not have been seen in that time. Why: Double Take once re-sent an old
match, and a user's automation unlocked their door from it. An event is never a command
here, a retained message is refused (it may be any age), and a command replayed a minute
later is stale.

An accepted unlock is audited before the relay moves, like the page's "Unlock now"
(audit action ``unlock`` with ``"via": "mqtt"``, then a ``manual_unlock`` event by
``mqtt``); when its audit row cannot be written, it is refused and the door stays locked.
Each command is answered on ``<prefix>/<door>/command/result``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from device import audit
from device.errors import CommandRefused

MAX_AGE_SECONDS = 30.0  # either way: a sender's clock a little ahead is not refused
UNLOCK_SECONDS = (0.5, 60.0)  # the range door.unlock_seconds (and the API) allow
MAX_NONCES = 10_000  # nonces remembered at once; more commands in MAX_AGE_SECONDS: refused
_FIELDS = {"action", "seconds", "at", "nonce", "by"}


@dataclass(frozen=True)
class Command:
    action: str  # "unlock" or "lock"
    at: str
    nonce: str
    seconds: float | None = None
    by: str | None = None  # who the sender says it is (not verified: the broker's ACL is)


class CommandGate:
    """Turns a command's payload into a :class:`Command`, or raises
    :class:`CommandRefused` with one sentence. ``now``: the door's wall clock, aware UTC;
    ``monotonic``: for forgetting nonces."""

    def __init__(self, *, max_age_seconds: float = MAX_AGE_SECONDS,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_age_seconds = max_age_seconds
        self._now = now
        self._monotonic = monotonic
        self._nonces: dict[str, float] = {}  # nonce -> when it may be forgotten

    def check(self, payload: bytes, *, retained: bool = False) -> Command:
        if retained:
            raise CommandRefused("a retained command is refused: it may be of any age "
                                 "(publish commands with retain off)")
        data = _json_object(payload)
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise CommandRefused(f"unknown field {unknown[0]!r}; a command has "
                                 f"{', '.join(sorted(_FIELDS))}")
        action = data.get("action")
        if action not in ("unlock", "lock"):
            raise CommandRefused('"action" must be "unlock" or "lock"')
        nonce = data.get("nonce")
        if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128 or not nonce.isprintable():
            raise CommandRefused('"nonce" must be 8 to 128 printable characters, new for each '
                                 "command")
        at = self._fresh(data.get("at"))
        seconds = _seconds(data.get("seconds")) if action == "unlock" else None
        by = data.get("by")
        if by is not None and (not isinstance(by, str) or not by.isprintable()
                               or len(by) > 64):
            raise CommandRefused('"by" must be up to 64 printable characters')
        self._use(nonce)
        return Command(action=action, at=at, nonce=nonce, seconds=seconds, by=by)

    def _fresh(self, value: Any) -> str:
        when = _time(value)
        age = (self._now() - when).total_seconds()
        if abs(age) > self.max_age_seconds:
            said = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
            raise CommandRefused(f"a stale command is refused: its time is {said}, more than "
                                 f"{self.max_age_seconds:g} s from the door's clock")
        return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _use(self, nonce: str) -> None:
        now = self._monotonic()
        self._nonces = {seen: until for seen, until in self._nonces.items() if until > now}
        if nonce in self._nonces:
            raise CommandRefused("a replayed command is refused: its nonce was used already")
        if len(self._nonces) >= MAX_NONCES:
            raise CommandRefused(f"more than {MAX_NONCES} commands in "
                                 f"{self.max_age_seconds:g} s: refused")
        # Kept a little longer than a command stays fresh, both ways.
        self._nonces[nonce] = now + 2 * self.max_age_seconds + 1


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CommandRefused("a command must be a JSON object such as "
                             '{"action": "unlock", "at": "...", "nonce": "..."}') from None
    if not isinstance(data, dict):
        raise CommandRefused("a command must be a JSON object")
    return data


def _time(value: Any) -> datetime:
    need = '"at" must be when the command was sent: ISO 8601 with a time zone, or Unix seconds'
    if isinstance(value, bool):
        raise CommandRefused(need)
    try:
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise ValueError(value)
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            when = datetime.fromisoformat(value)
            if when.tzinfo is not None:
                return when
    except (ValueError, OverflowError, OSError):
        pass
    raise CommandRefused(need)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    low, high = UNLOCK_SECONDS
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not low <= value <= high:
        raise CommandRefused(f'"seconds" must be a number from {low:g} to {high:g}')
    return float(value)


class Unlockable(Protocol):
    def manual_unlock(self, seconds: float | None = None, by: str | None = None) -> float: ...

    def relock(self) -> None: ...


def run_command(command: Command, door: Unlockable, db_path: str | Path,
                address: str | None = None) -> str:
    """Do ``command`` at ``door``, audited in ``db_path``; return what was done. An unlock is
    on record before the relay moves; :class:`CommandRefused` when its row cannot be
    written (the door stays locked)."""
    detail = {"via": "mqtt", "at": command.at, "nonce": command.nonce, "by": command.by}
    if command.action == "lock":
        door.relock()
        try:
            audit.record(db_path, "lock", detail, "mqtt", address)
        except (sqlite3.Error, OSError):  # locking is never refused for want of a record
            pass
        return "locked"
    try:
        audit.record(db_path, "unlock", {**detail, "seconds": command.seconds}, "mqtt",
                     address)
    except (sqlite3.Error, OSError) as error:
        raise CommandRefused(f"not unlocked: the record of it could not be written ({error})"
                             ) from None
    door.manual_unlock(command.seconds, by="mqtt")
    return "unlocked"
