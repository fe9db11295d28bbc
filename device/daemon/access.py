"""Who may open the door when: the active flag, a validity window and a weekly schedule.

A schedule is JSON stored on the person: a list of windows in the door's local time, e.g.
``[{"days": "mon-fri", "from": "07:00", "until": "19:00"}, {"days": "sat", "from": "08:00",
"until": "12:00"}]``. ``days`` is a day, a range (``mon-fri``) or a comma list
(``mon,wed,fri``); ``until`` is exclusive; a window that ends before it starts runs past
midnight (``"from": "22:00", "until": "06:00"`` is a night shift starting on the listed days).
No schedule means any time.

The door's local time is the system's: ``$TZ`` when set, else ``/etc/localtime`` (on a Pi,
``sudo timedatectl set-timezone Europe/Paris``); :func:`door_time_zone` says which is in force.
"""

from __future__ import annotations

import json
import logging
import os
import re
import reprlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from device.errors import FacegateError
from device.gallery.store import Person

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

log = logging.getLogger(__name__)

LOCALTIME = Path("/etc/localtime")


def door_time_zone(now: datetime | None = None, *, environ: dict[str, str] | None = None,
                   localtime: Path = LOCALTIME) -> dict[str, str | None]:
    """The time zone schedules are read in: ``name`` (such as "Europe/Paris"; None when the
    system does not say), ``utc_offset`` now ("+01:00"), ``abbreviation`` ("CET") and
    ``source`` ("$TZ", the ``/etc/localtime`` link, or "unset": then UTC)."""
    environ = os.environ if environ is None else environ
    now = (now or datetime.now()).astimezone()
    name, source = None, "unset"
    if environ.get("TZ"):
        name, source = environ["TZ"].lstrip(":"), "$TZ"
    elif localtime.is_symlink():
        target = str(localtime.resolve())
        name = target.partition("/zoneinfo/")[2] or None
        source = str(localtime)
    elif localtime.exists():
        source = str(localtime)
    offset = now.strftime("%z")
    return {"name": name, "utc_offset": f"{offset[:3]}:{offset[3:]}" if offset else None,
            "abbreviation": now.tzname(), "source": source}


class ScheduleInvalid(FacegateError):
    """A weekly schedule that cannot be read; the message says which part."""


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time

    def contains(self, when: datetime) -> bool:
        moment = when.time()
        if self.start < self.end:
            return when.weekday() in self.days and self.start <= moment < self.end
        # Past midnight: the evening part on a listed day, or the morning after one.
        yesterday = (when - timedelta(days=1)).weekday()
        return (when.weekday() in self.days and moment >= self.start) or (
            yesterday in self.days and moment < self.end)


def parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ScheduleInvalid(f"schedule days {reprlib.repr(text)}: use mon..sun, ranges "
                                  "like mon-fri or lists like mon,wed")
        start, stop = DAYS.index(first), DAYS.index(last or first)
        # A range may wrap over the weekend: fri-mon is Friday to Monday.
        days.update((start + k) % 7 for k in range((stop - start) % 7 + 1))
    return frozenset(days)


def parse_clock(text: str) -> time:
    match = _CLOCK.match(text.strip())
    if not match:
        raise ScheduleInvalid(f"schedule time {reprlib.repr(text)}: use HH:MM, 24-hour")
    return time(int(match.group(1)), int(match.group(2)))


def parse_schedule(value: str | list | None) -> list[Window]:
    """Windows from the stored JSON (or the parsed list); an empty list means any time."""
    if value is None or value == "":
        return []
    entries = json.loads(value) if isinstance(value, str) else value
    if not isinstance(entries, list):
        raise ScheduleInvalid("a schedule is a list of {days, from, until} windows")
    windows = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"days", "from", "until"}:
            raise ScheduleInvalid(f"schedule window {reprlib.repr(entry)}: needs exactly days, "
                                  "from, until")
        start, end = parse_clock(entry["from"]), parse_clock(entry["until"])
        if start == end:
            raise ScheduleInvalid(f"schedule window {reprlib.repr(entry)}: from and until are "
                                  "equal")
        windows.append(Window(parse_days(entry["days"]), start, end))
    return windows


def schedule_from_text(text: str) -> list[dict[str, str]]:
    """The command-line form, ``"mon-fri 07:00-19:00; sat 08:00-12:00"``, as stored JSON."""
    entries = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        days, _, hours = part.partition(" ")
        start, _, end = hours.strip().partition("-")
        entries.append({"days": days, "from": start.strip(), "until": end.strip()})
    parse_schedule(entries)  # refuse it now, with the reason, not at the door
    return entries


def door_time(text: str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO date or time as an aware datetime; one without an offset is the door's local
    time (how an admin at the door means it). Blank or None: None. Raises ``ValueError``,
    also for a time that is within the years 1 to 9999 only in its own zone (it is stored
    in UTC): "0001-01-01T00:00+01:00".

    A date alone is the start of that day, or with ``end_of_day`` (an end of access, "valid
    until 2027-06-30") its last millisecond, 23:59:59.999 local (the store keeps
    milliseconds): the whole day is allowed.
    The CLI, the page and the API all read ``valid_until`` through here, so they agree."""
    if text is None or not text.strip():
        return None
    try:
        when = datetime.fromisoformat(text.strip())
        if end_of_day and _is_date_alone(text.strip()):
            when = datetime.combine(when.date(), time(23, 59, 59, 999_000))
        when = when if when.tzinfo else when.astimezone()
        when.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{reprlib.repr(text)} is beyond the years 1 to 9999 in UTC") from None
    return when


def _is_date_alone(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def access_refusal(person: Person, now: datetime) -> str | None:
    """Why ``person`` may not enter at ``now`` (timezone-aware, local), or None if they may.

    Rules that cannot be read (a row edited by hand: a time without a zone, a schedule that
    is not the shape above) refuse with "unreadable access rules" and are logged: the door
    stays locked for that person and goes on serving everyone else.
    """
    if not person.active:
        return "inactive"
    try:
        return _rules_refusal(person, now)
    except (ScheduleInvalid, ValueError, TypeError, AttributeError, RecursionError) as error:
        log.error("refusing %s (%s): their access rules cannot be read (%s)",
                  person.name, person.id, error)
        return "unreadable access rules"


def _rules_refusal(person: Person, now: datetime) -> str | None:
    if person.valid_from and now < datetime.fromisoformat(person.valid_from):
        return "not yet valid"
    if person.valid_until and now >= datetime.fromisoformat(person.valid_until):
        return "no longer valid"
    windows = parse_schedule(person.schedule)
    if windows and not any(window.contains(now.replace(tzinfo=None)) for window in windows):
        return "outside schedule"
    return None
