"""Events as text: the JSON line journald keeps, the line a person reads, and the ``--since``
a person types."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, time, timedelta, tzinfo

from device.errors import TimeUnreadable
from device.events.event import Event

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_AGE = re.compile(r"(?:\d+[smhdw])+")
_MAX_DIGITS = 12  # more than a trillion weeks is no age; int() also refuses 4,300 digits


def journal_line(event: Event) -> str:
    """The event as one JSON object for stdout (journald): no snapshot bytes, no detail but
    the liveness score of a face judged by the liveness check (``attack`` events always)."""
    line = {
        "event": "access",
        "id": event.id,
        "at": event.at,
        "door": event.door,
        "kind": event.kind,
        "person": event.person_name,
        "person_id": event.person_id,
        "score": None if event.score is None else round(event.score, 4),
        "reason": event.reason,
        "face": event.face_path,
        "frame": event.frame_path,
    }
    if event.detail and "liveness" in event.detail:
        line["liveness"] = event.detail["liveness"]
    return json.dumps(line)


def format_event_line(event: Event, tz: tzinfo | None = None) -> str:
    """One line for a person: time in ``tz`` (local time when None), door, kind, who, score,
    reason and which snapshots are kept, e.g.
    ``2024-06-11 10:02:03  front  granted        Colin Powell  0.612  [face+frame]``."""
    when = event.when.astimezone(tz)
    who = event.person_name or (event.person_id[:8] if event.person_id else "-")
    parts = [f"{when:%Y-%m-%d %H:%M:%S}", event.door, f"{event.kind:<13}", who]
    if event.score is not None:
        parts.append(f"{event.score:.3f}")
    if event.reason:
        parts.append(event.reason)
    kept = [name for name, path in (("face", event.face_path), ("frame", event.frame_path))
            if path]
    if kept:
        parts.append(f"[{'+'.join(kept)}]")
    return "  ".join(parts)


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A time a person typed, as an aware datetime.

    Ages count back from ``now``: ``90s``, ``10m`` (minutes), ``2h``, ``3d``, ``1w``, or
    combined, ``1h30m``. ISO dates and times: ``2024-06-11`` (midnight), ``2024-06-11T14:30``
    or with a space, with an offset or ``Z`` or without; a time alone, ``14:30``, is the
    latest such time not in the future. A time without an offset is in ``now``'s zone, or
    the machine's local time (daylight saving included) when ``now`` is not given.
    Raises :class:`TimeUnreadable`.
    """
    cleaned = str(text).strip()
    zone = None if now is None else now.tzinfo
    now = datetime.now().astimezone() if now is None else now
    compact = cleaned.replace(" ", "").lower()
    try:
        if _AGE.fullmatch(compact):
            when = now - _age(compact)
        else:
            when = _iso(cleaned, now, zone)
        if when is not None:
            when.astimezone(UTC)  # the log compares UTC text: it must have a UTC year too
    except (OverflowError, ValueError):  # a year outside 1..9999, a number beyond reason
        raise TimeUnreadable(
            f"{_shown(text)} is too far in the past or the future to search the log by"
        ) from None
    if when is None:
        raise TimeUnreadable(
            f"cannot read {_shown(text)} as a time: give an ISO date or time (2024-06-11, "
            "2024-06-11T14:30, 14:30) or an age such as 10m, 2h or 3d"
        )
    return when


def _age(compact: str) -> timedelta:
    amounts = re.findall(r"(\d+)([smhdw])", compact)
    if any(len(n) > _MAX_DIGITS for n, _unit in amounts):
        raise OverflowError("too many digits")
    return sum((timedelta(**{_UNITS[unit]: int(n)}) for n, unit in amounts), timedelta())


def _shown(text: str) -> str:
    """The text as quoted in an error: never a page of it."""
    text = str(text)
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _iso(text: str, now: datetime, zone: tzinfo | None) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            clock = time.fromisoformat(text)
        except ValueError:
            return None
        local_now = now.astimezone(clock.tzinfo or zone)
        when = datetime.combine(local_now.date(), clock)
        if when.tzinfo is None:
            when = _local(when, zone)
        return when - timedelta(days=1) if when > now else when
    return when if when.tzinfo is not None else _local(when, zone)


def _local(naive: datetime, zone: tzinfo | None) -> datetime:
    # astimezone() on a naive datetime reads it as the machine's local time, DST included.
    return naive.replace(tzinfo=zone) if zone is not None else naive.astimezone()
