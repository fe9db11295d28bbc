"""A site of many doors on this machine: the site server (``facegate site serve``, its own
process) on a real PostgreSQL (Debian's, a cluster made here in a temporary folder), and
member doors' replicas kept by their site links (:class:`device.site.member.SiteLink`, one
thread and one SQLite file each, in this process) over HTTP on loopback.

    python bench/bench_site.py [--quick] [--json bench/results/site.json]

- enrolment-to-door and removal-to-door: 10 doors following a site of 10,000 people (one
  template each); one person enrolled (or removed) at the site at a time, and the delay until
  each door's replica has the change, median and p95 over all doors and trials. Doors poll
  every ``--poll`` seconds (60 by default in a real door: its delay is then about half of
  that on average, plus what is measured here beyond the poll);
- ingest: events per second the site stores from doors sending batches of 200 (one door,
  then 10 at once);
- full resync: one door filling an empty replica from a site of 100,000 templates.

Prints a Markdown table and writes JSON with the machine it ran on. Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.config import Places, load_config  # noqa: E402
from device.gallery.migrations import write_transaction  # noqa: E402
from device.gallery.store import Gallery  # noqa: E402
from device.site.client import SiteClient  # noqa: E402
from device.site.doors import add_door  # noqa: E402
from device.site.member import SiteLink, resync  # noqa: E402
from device.site.replica import Replica  # noqa: E402
from device.vision.models import DEFAULT_EMBEDDER  # noqa: E402
from tests.postgres_support import Postgres, postgres_missing  # noqa: E402
from tests.site_support import SiteServer, wait_for  # noqa: E402

MODEL = DEFAULT_EMBEDDER
NOWHERE = Places(system_config=Path("/nonexistent/facegate.toml"),
                 system_data_dir=Path("/nonexistent"), project_dir=None)


def fill(dsn: str, people: int, templates_each: int = 1, seed: int = 0) -> None:
    """``people`` people with random unit embeddings, written in batches (the site's own
    triggers log every row, as an enrolment does)."""
    rng = np.random.default_rng(seed)
    now = "2026-12-01T00:00:00.000Z"
    with Gallery(dsn) as gallery:
        for start in range(0, people, 1000):
            with write_transaction(gallery.db):
                person_rows, template_rows = [], []
                for number in range(start, min(people, start + 1000)):
                    person_id = str(uuid.uuid4())
                    person_rows.append([person_id, f"Person {seed}-{number:06d}", now, now])
                    for k in range(templates_each):
                        vector = rng.standard_normal(128).astype("<f4")
                        vector /= np.linalg.norm(vector)
                        template_rows.append([
                            str(uuid.uuid4()), person_id, MODEL, vector.tobytes(), 128,
                            hashlib.sha256(f"{seed}-{number}-{k}".encode()).hexdigest(),
                            now, now])
                gallery.db.executemany("INSERT INTO people (id, name, created_at, updated_at)"
                                       " VALUES (?, ?, ?, ?)", person_rows)
                gallery.db.executemany(
                    "INSERT INTO templates (id, person_id, model, embedding, dim,"
                    " source_sha256, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    template_rows)
            if gallery.model is None:
                gallery.db.execute("INSERT INTO gallery_meta (key, value, updated_at)"
                                   " VALUES ('model', ?, ?)", [MODEL, now])


def door_config(url: str, token_file: Path, folder: Path, poll: float):
    return load_config(None, {"site.url": url, "site.token_file": str(token_file),
                              "site.poll_seconds": poll, "paths.data_dir": str(folder)},
                       environ={}, places=NOWHERE)


def people_count(database: Path) -> int:
    if not database.exists():
        return 0
    with Gallery(database) as gallery:
        return gallery.counts()["people"]


def has_person(database: Path, name: str) -> bool:
    with Gallery(database) as gallery:
        return gallery.find_person(name) is not None


def follow_delays(dsn: str, doors: list[tuple[Path, SiteLink]], trials: int) -> dict:
    """Enrol then remove one person at a time; seconds until each door's replica agrees."""
    enrolled, removed = [], []
    rng = np.random.default_rng(99)
    for trial in range(trials):
        name = f"Newcomer {trial}"
        vector = rng.standard_normal(128).astype(np.float32)
        with Gallery(dsn) as gallery:
            started = time.monotonic()
            person = gallery.add_person(name)
            gallery.add_template(person.id, vector / np.linalg.norm(vector), MODEL, {}, None,
                                 hashlib.sha256(name.encode()).hexdigest())
        enrolled += _until_all(doors, lambda db, n=name: has_person(db, n), started)
        with Gallery(dsn) as gallery:
            started = time.monotonic()
            gallery.remove_person(name)
        removed += _until_all(doors, lambda db, n=name: not has_person(db, n), started)
    return {"enrolment_to_door_s": _summary(enrolled), "removal_to_door_s": _summary(removed)}


def _until_all(doors, condition, started: float) -> list[float]:
    delays: dict[Path, float] = {}
    while len(delays) < len(doors):
        for database, _ in doors:
            if database not in delays and condition(database):
                delays[database] = time.monotonic() - started
        if time.monotonic() - started > 120:
            raise RuntimeError("a door did not follow the site within 120 s")
        time.sleep(0.02)
    return list(delays.values())


def ingest_rate(url: str, tokens: dict[str, str], events_each: int, concurrent: int) -> float:
    """Events per second the site stores from ``concurrent`` doors posting batches of 200."""
    names = list(tokens)[:concurrent]

    def send(door_id: str) -> None:
        client = SiteClient(url, tokens[door_id])
        for start in range(0, events_each, 200):
            batch = [{"id": str(uuid.uuid4()), "at": "2026-12-01T10:00:00.000Z",
                      "door": door_id, "kind": "unknown", "reason": "stranger",
                      "score": 0.12, "detail": {"liveness": 0.9}}
                     for _ in range(min(200, events_each - start))]
            client.post("/sync/events", {"events": batch})

    threads = [threading.Thread(target=send, args=(name,)) for name in names]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return round(events_each * len(names) / (time.monotonic() - started), 1)


def full_resync_seconds(url: str, token: str, folder: Path) -> dict:
    database = folder / "resync.db"
    client = SiteClient(url, token)
    started = time.monotonic()
    with Gallery(database) as gallery:
        replica = Replica(gallery, url)
        replica.start()
        resync(replica, client)
        templates = gallery.db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
    return {"seconds": round(time.monotonic() - started, 2), "templates": templates,
            "replica_bytes": database.stat().st_size}


def _summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered), 3),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "max": round(ordered[-1], 3), "samples": len(ordered)}


def run(args: argparse.Namespace, work: Path) -> dict:
    people = 1000 if args.quick else 10_000
    big = 10_000 if args.quick else 100_000
    trials = 3 if args.quick else 10
    postgres = Postgres(work / "postgres").start()
    try:
        dsn = postgres.fresh_database()
        site = SiteServer(work / "site", dsn)
        Gallery(dsn).close()
        started = time.monotonic()
        fill(dsn, people)
        filled_s = time.monotonic() - started
        site.start()
        try:
            tokens = {f"door-{n:02d}": add_door(dsn, f"door-{n:02d}") for n in range(10)}
            links = []
            for door_id, token in tokens.items():
                folder = work / door_id
                folder.mkdir()
                (folder / "token").write_text(token)
                config = door_config(site.url, folder / "token", folder, args.poll)
                link = SiteLink(config.site, folder / "facegate.db", folder / "snapshots")
                links.append((folder / "facegate.db", link))
            started = time.monotonic()
            for _, link in links:
                link.start()
            # Pages come by id, not by name: wait for every door to hold everyone.
            wait_for(lambda: all(people_count(db) == people for db, _ in links), 600,
                     "the first sync of every door")
            first_sync_s = time.monotonic() - started
            delays = follow_delays(dsn, links, trials)
            for _, link in links:
                link.stop()
            ingest = {"one door": ingest_rate(site.url, tokens, 2000 if args.quick else 10_000,
                                              1),
                      "10 doors at once": ingest_rate(site.url, tokens,
                                                      500 if args.quick else 2000, 10)}
            fill(dsn, big - people, seed=1)
            resync_figures = full_resync_seconds(site.url, tokens["door-00"], work)
        finally:
            site.stop()
    finally:
        postgres.remove()
    return {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "doors": 10, "people": people, "poll_seconds": args.poll,
        "site_filled_s": round(filled_s, 1), "first_sync_of_10_doors_s": round(first_sync_s, 1),
        **delays, "ingest_events_per_s": ingest, "full_resync": resync_figures,
    }


def table(report: dict) -> list[str]:
    enrol, remove = report["enrolment_to_door_s"], report["removal_to_door_s"]
    resync_figures = report["full_resync"]
    return [
        f"| site of {report['doors']} doors, {report['people']:,} people, doors polling every "
        f"{report['poll_seconds']:g} s | median | p95 |",
        "|---|---:|---:|",
        f"| enrolled at the site -> in every door's replica, s | {enrol['median']:.2f} | "
        f"{enrol['p95']:.2f} |",
        f"| removed at the site -> gone from every door's replica, s | {remove['median']:.2f} | "
        f"{remove['p95']:.2f} |",
        f"| events the site stores per second, one door sending | "
        f"{report['ingest_events_per_s']['one door']:,.0f} | |",
        f"| events the site stores per second, 10 doors at once | "
        f"{report['ingest_events_per_s']['10 doors at once']:,.0f} | |",
        f"| one door's full resync of {resync_figures['templates']:,} templates, s | "
        f"{resync_figures['seconds']:.1f} | |",
        f"| first sync of 10 empty doors at once ({report['people']:,} people), s | "
        f"{report['first_sync_of_10_doors_s']:.1f} | |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1,000 people, 10,000 templates to resync, 3 trials")
    parser.add_argument("--poll", type=float, default=1.0,
                        help="seconds between a door's polls (default 1)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    missing = postgres_missing()
    if missing:
        print(f"bench_site: {missing}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="facegate-site-bench-") as folder:
        work = Path(folder)
        os.chmod(work, 0o755)  # the postgres user reaches its cluster inside
        report = run(args, work)
    print("\n".join(table(report)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())


