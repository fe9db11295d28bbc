"""A member door's link to its site, run beside the door loop in its own thread.

Each round (every ``site.poll_seconds``, or at once when :meth:`SiteLink.nudge` is called,
as a retained MQTT message of the site's head does): pull the gallery's changes into the
replica, send the events waiting in the uplink, report the replica's seq and the events
pending. Every ``site.digest_minutes``: compare the replica's digest with the site's at the
same seq, and resync fully on a mismatch (a replica edited by hand, a lost page). The door
never waits for any of it: it decides from the replica, and a site that is away only makes
the replica older (:func:`stale_refusal` says what the door does then).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.config import SiteConfig
from device.errors import FacegateError, SiteUnreachable
from device.events import EventLog
from device.events.snapshots import Snapshots
from device.gallery.engines import DATABASE_ERRORS
from device.gallery.store import Gallery
from device.site import uplink
from device.site.client import SiteClient
from device.site.replica import Replica, ReplicaState, pull, read_state

log = logging.getLogger(__name__)

PAGE = 1000


@dataclass(frozen=True)
class SyncReport:
    """What one round did."""

    changed: int
    sent: int
    resynced: bool
    digest_matched: bool | None  # None: not checked this round


def sync_once(gallery: Gallery, snapshots: Snapshots, client: Any, site_url: str, *,
              check_digest: bool = False, models_dir: Path | None = None) -> SyncReport:
    """One round: fill or follow the replica, follow the site's model once the replica holds
    its whole set (fetching the model into ``models_dir`` when the door lacks it), send the
    uplink, and (``check_digest``) compare digests, resyncing on a mismatch. Raises
    :class:`SiteUnreachable`."""
    replica = Replica(gallery, site_url)
    resynced = replica.start()
    if resynced:
        resync(replica, client)
    changed, model = _pull(replica, client)
    matched = None
    if check_digest:
        matched = _digest_matches(replica, client)
        if matched is False:
            log.warning("this door's replica differs from the site's at seq %d: resyncing",
                        replica.state.seq)
            resync(replica, client)
            more, model = _pull(replica, client)
            changed += more
            resynced = True
    if model and model != gallery.model and ensure_model(client, model, models_dir):
        replica.follow_model(model)
    erase_departed(gallery, snapshots)
    sent = uplink.send_pending(gallery, snapshots, client)
    state = replica.state
    client.post("/sync/status", {"replica_seq": state.seq, "replica_model": gallery.model,
                                 "pending_events": uplink.pending_count(gallery)})
    replica.heard(digest_matched=bool(matched))
    return SyncReport(changed, sent, resynced, matched)


def _pull(replica: Replica, client: Any) -> tuple[int, str | None]:
    return pull(replica, lambda since: client.get("/sync/changes", since=since, limit=PAGE))


def ensure_model(client: Any, name: str, models_dir: Path | None) -> bool:
    """Whether the door has the model ``name`` (its card and a file whose SHA-256 is the
    card's), fetching both from the site into ``models_dir`` when it has not. False, with
    a warning, when it cannot: the door then stays on its current set, which the site keeps
    until every door has moved."""
    from device.errors import ModelNotFound
    from device.vision.models import default_models_dir, load_card

    folder = Path(models_dir) if models_dir else default_models_dir()
    try:
        if load_card(name, folder).verify_sha256():
            return True
    except ModelNotFound:
        pass
    try:
        card = client.get(f"/sync/models/{name}")["card"]
        data = client.get_bytes(f"/sync/models/{name}/file")
    except (SiteUnreachable, KeyError) as error:
        log.warning("the site moved to %s, which this door cannot fetch (%s): it stays on "
                    "its current model", name, error)
        return False
    if hashlib.sha256(data).hexdigest() != card.get("sha256"):
        log.warning("the file of %s fetched from the site does not match its card's SHA-256: "
                    "not used", name)
        return False
    try:
        for path, content in ((folder / f"{name}.tflite", data),
                              (folder / f"{name}.json", json.dumps(card, indent=2).encode())):
            partial = path.with_name(f".{path.name}.partial")
            partial.write_bytes(content)
            os.replace(partial, path)  # the card last: a card always has its whole file
    except OSError as error:
        log.warning("cannot save %s into %s (%s): this door stays on its current model",
                    name, folder, error.strerror or error)
        return False
    log.info("fetched the model %s from the site into %s", name, folder)
    return True


def erase_departed(gallery: Gallery, snapshots: Snapshots) -> int:
    """Erase from this door's access log everyone the site has removed (their name and
    snapshots, as a removal at the door does): found from the log itself, so a crash after a
    page and before this step only delays it to the next round."""
    departed = [row[0] for row in gallery.db.execute(
        "SELECT DISTINCT person_id FROM events WHERE person_id IS NOT NULL"
        " AND person_id NOT IN (SELECT id FROM people)")]
    if not departed:
        return 0
    with EventLog(gallery.location, snapshots.root, door_id="site-sync") as events:
        for person_id in departed:
            events.delete_person(person_id)
    log.info("erased %d people the site removed from this door's access log", len(departed))
    return len(departed)


def resync(replica: Replica, client: Any) -> None:
    """Rebuild the replica from the site's full pages, then stand at the head read first
    (the changes after it come by :func:`pull`)."""
    started = time.monotonic()
    top = client.get("/sync/head")
    seen: dict[str, set[str]] = {"person": set(), "template": set()}
    for entity in ("person", "template"):
        after = ""
        while True:
            page = client.get("/sync/snapshot", entity=entity, after=after, limit=PAGE)
            replica.apply_rows(entity, page["rows"])
            seen[entity].update(row["id"] for row in page["rows"])
            if not page["rows"] or not page["more"]:
                break
            after = page["rows"][-1]["id"]
    removed = replica.finish_resync(seen, top["head"])
    log.info("replica rebuilt from the site: %d people, %d templates (%d rows removed) in "
             "%.1f s", len(seen["person"]), len(seen["template"]), removed,
             time.monotonic() - started)


def _digest_matches(replica: Replica, client: Any) -> bool | None:
    """True or False when the site's head is the replica's seq; None when the site has
    moved on meanwhile (compared at the next round)."""
    answer = client.get("/sync/digest")
    if answer["head"] != replica.state.seq:
        return None
    return answer["digest"] == replica.digest()


def stale_refusal(state: ReplicaState, site: SiteConfig, person_name: str | None,
                  now_seconds: float | None = None) -> str | None:
    """Why a member door refuses ``person_name`` because it has not heard from its site for
    longer than ``site.max_replica_age`` (None: no refusal). ``keep`` never refuses;
    ``deny`` refuses everyone; ``allow-list`` all but the names in ``site.stale_allow``."""
    limit = site.max_replica_age_seconds
    if not site.is_member or not limit or site.when_stale == "keep":
        return None
    age = state.age_seconds()
    if age is not None and age <= limit:
        return None
    if site.when_stale == "allow-list" and person_name in site.stale_allowed_names:
        return None
    since = "never heard from the site" if age is None else \
        f"no word from the site for {age / 3600:.1f} h"
    return f"this door's copy of the site's gallery is too old ({since}; policy {site.when_stale})"


class SiteLink:
    """The thread that keeps a member door's replica and uplink current."""

    def __init__(self, site: SiteConfig, database: Path, snapshots: Path, *,
                 models_dir: Path | None = None, client: Any | None = None) -> None:
        self.site = site
        self.models_dir = models_dir
        self.database = database
        self.snapshots = Snapshots(snapshots)
        self._client = client
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_digest = 0.0
        self.last_error: str | None = None
        self.last_report: SyncReport | None = None
        self._state: ReplicaState | None = None  # as of the last round (read at the first)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="site-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def nudge(self) -> None:
        """Sync now (the site's head moved, or an event is waiting)."""
        self._wake.set()

    def state(self) -> ReplicaState:
        """The replica's state as stored (kept for :meth:`refusal` until the next round)."""
        with Gallery(self.database) as gallery:
            self._state = read_state(gallery)
        return self._state

    def refusal(self, person: Any) -> str | None:
        """The door loop's extra rule (:func:`stale_refusal`) for ``person``, from the
        state of the last round: no database read while someone waits at the door."""
        state = self._state if self._state is not None else self.state()
        return stale_refusal(state, self.site, getattr(person, "name", None))

    def run_once(self) -> SyncReport | None:
        """One round now, in the caller's thread; None when the site could not be reached
        (``last_error`` says why; the door goes on from its replica)."""
        check = time.monotonic() - self._last_digest >= self.site.digest_minutes * 60
        try:
            client = self._client or SiteClient.from_config(self.site)
            with Gallery(self.database) as gallery:
                report = sync_once(gallery, self.snapshots, client, self.site.url,
                                   check_digest=check, models_dir=self.models_dir)
                self._state = read_state(gallery)
        except (FacegateError, *DATABASE_ERRORS) as error:
            if str(error) != self.last_error:
                log.warning("site sync: %s (the door decides from its replica meanwhile)",
                            error)
            self.last_error = str(error)
            return None
        if self.last_error is not None:
            log.info("site sync works again (%s)", self.site.url)
        self.last_error = None
        if check and report.digest_matched is not None:
            self._last_digest = time.monotonic()
        self.last_report = report
        return report

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(self.site.poll_seconds)
            self._wake.clear()


__all__ = ["SiteLink", "SiteUnreachable", "stale_refusal", "sync_once"]
