"""How much of the access log a door keeps: the policy that ``EventLog.enforce`` applies.

Snapshots are the expendable part and go first: the oldest snapshot files are deleted (their
rows stay, with the paths cleared) until the snapshots fit in ``max_snapshot_bytes`` and the
disk has ``min_free_bytes`` free. Rows themselves go when older than ``max_age_days`` or
beyond the newest ``max_events``, each with its files. The configuration's ``[events]``
section gives the limits (``config.events.max_snapshot_bytes`` and so on).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Retention:
    """Limits on the access log. Hazard: ``min_free_bytes`` guards the whole disk, so when
    something else fills it, every snapshot may be removed (the rows stay)."""

    max_age_days: float = 90
    max_events: int = 100_000
    max_snapshot_bytes: int = 1_000_000_000
    min_free_bytes: int = 200_000_000

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"Retention.{field.name} must be a number >= 0, got {value!r}")
