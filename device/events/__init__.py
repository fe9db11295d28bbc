"""Events: the access log, the last stage of a frame's journey through the door.

Every door decision is an :class:`Event`: a row in the gallery's SQLite file (one file, so one
backup is one consistent copy), its snapshots as JPEG files in the data folder, and a JSON
line on stdout for journald. :class:`EventLog` records, lists and erases them and applies the
:class:`Retention` policy; ``text`` turns them into lines for the command line; ``outbox``
queues each event, in the same transaction as its row, for the site's MQTT broker.
"""

from device.events.event import KINDS, Event
from device.events.log import EventLog
from device.events.retention import Retention
from device.events.text import format_event_line, journal_line, parse_since

__all__ = [
    "KINDS",
    "Event",
    "EventLog",
    "Retention",
    "format_event_line",
    "journal_line",
    "parse_since",
]
