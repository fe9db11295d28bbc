"""A member door's replica of its site's gallery, kept in the door's own SQLite file.

The door decides from its replica only, so the site being away never delays a grant. The
replica holds the site's rows with the site's ids and versions (nothing is renumbered), which
is what lets a digest compare the two ends (:func:`~device.site.feed.replica_digest`).
Pages of changes are applied in one transaction each, deletions included, and the seq
reached is stored in the same transaction: a crash between pages loses nothing, and a page
applied twice changes nothing. The door's own triggers log every write to its change log, so
the running door reloads its matcher as it does after a local enrolment.

Only this module writes a replica's people and templates: the gallery refuses every other
write to a replica (:meth:`~device.gallery.store.Gallery.refuse_if_replica`), so a member
door's page and CLI never enrol behind the site's back.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from device.gallery.migrations import write_transaction
from device.gallery.store import Gallery
from device.site.feed import ENTITIES, replica_digest

log = logging.getLogger(__name__)

STATE_KEYS = ("site", "seq", "heard_at", "digest_at", "resynced_at")


@dataclass(frozen=True)
class ReplicaState:
    """Where the replica stands: the site it follows, the site's seq it has reached, when
    it last heard from the site, and when the digest last matched."""

    site: str | None
    seq: int
    heard_at: str | None
    digest_at: str | None
    resynced_at: str | None

    def age_seconds(self, now: datetime | None = None) -> float | None:
        """Seconds since the door last heard from the site; None: never."""
        if self.heard_at is None:
            return None
        now = now or datetime.now(UTC)
        return max(0.0, (now - _parse(self.heard_at)).total_seconds())


def read_state(gallery: Gallery) -> ReplicaState:
    values = dict(gallery.db.execute("SELECT key, value FROM site_replica").fetchall())
    return ReplicaState(site=values.get("site"), seq=int(values.get("seq", 0)),
                        heard_at=values.get("heard_at"), digest_at=values.get("digest_at"),
                        resynced_at=values.get("resynced_at"))


class Replica:
    """The replica in ``gallery`` of the site at ``site_url``. A gallery that follows no
    site yet, or another one, starts again from nothing (:meth:`start`)."""

    def __init__(self, gallery: Gallery, site_url: str) -> None:
        self.gallery = gallery
        self.site_url = site_url

    @property
    def state(self) -> ReplicaState:
        return read_state(self.gallery)

    def start(self) -> bool:
        """Make the gallery this site's replica; True when it must be filled from nothing
        (a door's own gallery, or another site's replica, is emptied first: a member door
        knows the site's people only)."""
        state = self.state
        if state.site == self.site_url:
            return False
        with write_transaction(self.gallery.db):
            people = self.gallery.db.execute("SELECT COUNT(*) FROM people").fetchone()[0]
            if people:
                log.warning("this door's own gallery (%d people) is replaced by the site's "
                            "(%s): a member door knows the site's people only", people,
                            self.site_url)
            self.gallery.db.execute("DELETE FROM templates")
            self.gallery.db.execute("DELETE FROM people")
            self.gallery.db.execute("DELETE FROM site_replica")
            self._set({"site": self.site_url, "seq": "0"})
        return True

    def apply_changes(self, page: dict[str, Any]) -> int:
        """Apply one page of :func:`~device.site.feed.changes_since` in one transaction,
        and store its ``next`` seq with it; returns how many rows changed."""
        changed = 0
        # The page is the site as it is now, so the order within it only has to suit the
        # constraints: people before their templates, a person's templates before them.
        steps = (("person", "upsert"), ("template", "delete"), ("template", "upsert"),
                 ("person", "delete"))
        with write_transaction(self.gallery.db):
            for entity, op in steps:
                for change in page["changes"]:
                    if (change["entity"], change["op"]) != (entity, op):
                        continue
                    if op == "delete":
                        changed += self._delete(entity, change["id"])
                    elif entity == "template" and not self._has_person(change["row"]["person_id"]):
                        # Only a replica edited by hand lacks the person: the digest check
                        # finds it and resyncs; the rest of the page goes on.
                        log.warning("template %s names person %s, who is not in this "
                                    "replica: left out", change["id"], change["row"]["person_id"])
                    else:
                        changed += self._upsert(entity, change["row"])
            # Never back: a page asked for twice (a retry) is a page already applied.
            seq = max(int(page["next"]), self.state.seq)
            self._set({"seq": str(seq), "heard_at": _now()})
        return changed

    def apply_rows(self, entity: str, rows: list[dict[str, Any]]) -> None:
        """One page of a full resync (:func:`~device.site.feed.snapshot_page`)."""
        with write_transaction(self.gallery.db):
            for row in rows:
                if entity == "template" and not self._has_person(row["person_id"]):
                    continue  # enrolled after the people pages were read: in the changes
                self._upsert(entity, row)

    def finish_resync(self, seen: dict[str, set[str]], head: int) -> int:
        """After every page of a resync: remove what the site did not send, and stand at
        ``head`` (the changes after it are pulled next). Returns how many rows went."""
        removed = 0
        with write_transaction(self.gallery.db):
            for entity in ("template", "person"):  # templates first: they name their person
                table = ENTITIES[entity][0]
                ids = [row[0] for row in self.gallery.db.execute(f"SELECT id FROM {table}")]
                for row_id in ids:
                    if row_id not in seen[entity]:
                        removed += self._delete(entity, row_id)
            now = _now()
            self._set({"seq": str(int(head)), "heard_at": now, "resynced_at": now})
        return removed

    def follow_model(self, model: str | None) -> bool:
        """Match with ``model`` from now on (the site's, once this replica is at the site's
        head and so holds its whole set, and the door has the model's file); True when it
        changed. The door's matcher reloads on the change, as after a local re-embed."""
        if not model or model == self.gallery.model:
            return False
        with write_transaction(self.gallery.db):
            self._set_model(model)
        log.info("the site moved to the model %s: this door matches with it from now on", model)
        return True

    def heard(self, *, digest_matched: bool = False) -> None:
        """The site answered (and, with ``digest_matched``, the digests agreed)."""
        values = {"heard_at": _now()}
        if digest_matched:
            values["digest_at"] = values["heard_at"]
        with write_transaction(self.gallery.db):
            self._set(values)

    def digest(self) -> str:
        return replica_digest(self.gallery.db)

    # --- rows ------------------------------------------------------------------------------

    def _upsert(self, entity: str, row: dict[str, Any]) -> int:
        table, columns = ENTITIES[entity]
        values = dict(row)
        if entity == "template":
            values["embedding"] = base64.b64decode(values["embedding"])
            self._clear_duplicate_source(values)
        else:
            values["active"] = int(bool(values["active"]))
            self._clear_taken_name(values)
        names = list(columns)
        updates = ", ".join(f"{name} = excluded.{name}" for name in names if name != "id")
        cursor = self.gallery.db.execute(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
            f" ON CONFLICT (id) DO UPDATE SET {updates}"
            f" WHERE {table}.version != excluded.version",
            [values.get(name) for name in names])
        return cursor.rowcount

    def _has_person(self, person_id: str) -> bool:
        return self.gallery.db.execute("SELECT 1 FROM people WHERE id = ?",
                                       [person_id]).fetchone() is not None

    def _delete(self, entity: str, row_id: str) -> int:
        if entity == "person":  # their templates go with them (they may come later, too)
            self.gallery.db.execute("DELETE FROM templates WHERE person_id = ?", [row_id])
        table = ENTITIES[entity][0]
        return self.gallery.db.execute(f"DELETE FROM {table} WHERE id = ?", [row_id]).rowcount

    def _clear_taken_name(self, person: dict[str, Any]) -> None:
        """Names are unique at both ends, but a page can hold a rename that frees a name
        after the rename that takes it: the holder gets a placeholder until its own change
        (in this page or the next) names it."""
        self.gallery.db.execute("UPDATE people SET name = '~' || id WHERE name = ? AND id != ?",
                                [person["name"], person["id"]])

    def _clear_duplicate_source(self, template: dict[str, Any]) -> None:
        """The site holds one template per photo and model; a row here that says otherwise
        is one the site has removed (or one edited by hand): it goes."""
        self.gallery.db.execute(
            "DELETE FROM templates WHERE model = ? AND source_sha256 = ? AND id != ?",
            [template["model"], template["source_sha256"], template["id"]])

    def _set_model(self, model: str | None) -> None:
        if model:
            self.gallery.db.execute(
                "INSERT INTO gallery_meta (key, value, updated_at) VALUES ('model', ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at, version = gallery_meta.version + 1"
                " WHERE gallery_meta.value != excluded.value", [model, _now()])

    def _set(self, values: dict[str, str]) -> None:
        now = _now()
        for key, value in values.items():
            self.gallery.db.execute(
                "INSERT INTO site_replica (key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at", [key, value, now])


def pull(replica: Replica, fetch: Callable[[int], dict[str, Any]]) -> tuple[int, str | None]:
    """Apply pages from ``fetch(since)`` until the site has no more; returns the rows
    changed and the site's model at its head (for :meth:`Replica.follow_model`)."""
    changed = 0
    while True:
        page = fetch(replica.state.seq)
        changed += replica.apply_changes(page)
        if not page["more"]:
            return changed, page.get("model")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
