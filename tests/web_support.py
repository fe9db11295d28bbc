"""Fixtures and helpers shared by the admin page's tests (tests/test_web_*.py import them).

Fixtures are named with ``name=`` and defined as ``fixture_<name>`` so that a test module
imports ``fixture_admin`` and its tests take ``admin`` (pytest's advice, and no shadowing).

The app is built as the daemon builds it: a real SQLite file (migrated by Gallery), a real
``device.door.Door`` on gpiozero's mock pins, a live view fed from the test photos, and the
session's one FacePipeline.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import replace
from itertools import cycle
from pathlib import Path

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from gpiozero.pins.mock import MockFactory, MockPin

from device.config import Config, LivenessConfig
from device.door import Door, DoorSettings
from device.gallery.store import Gallery
from device.web import create_app
from device.web.auth import add_user
from device.web.services import Services

DATA = Path(__file__).parent / "data"
COLIN = sorted((DATA / "people" / "Colin_Powell").glob("*.jpg"))
SERENA = sorted((DATA / "people" / "Serena_Williams").glob("*.jpg"))
STRANGERS = sorted((DATA / "strangers").glob("*.jpg"))
COUPLE = DATA / "couple.jpg"
PAGE = DATA / "page.png"
RELAY_PIN = 17
PASSWORD = "correct horse"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class PhotoLiveView:
    """A live view that hands out the given photos in turn (a person at the door)."""

    def __init__(self, photos: list[Path]) -> None:
        self._frames = cycle([cv2.imread(str(path)) for path in photos])
        self.frames_taken = 0
        self.frame_age_seconds: float | None = 0.0  # a test sets it to stop the camera

    def latest_frame(self) -> np.ndarray | None:
        self.frames_taken += 1
        return next(self._frames).copy()

    def latest_jpeg(self) -> bytes | None:
        ok, encoded = cv2.imencode(".jpg", next(self._frames))
        return encoded.tobytes() if ok else None


@pytest.fixture(name="pin_factory")
def fixture_pin_factory() -> Iterator[MockFactory]:
    factory = MockFactory(pin_class=MockPin)
    yield factory
    factory.close()


@pytest.fixture(name="door")
def fixture_door(pin_factory: MockFactory) -> Iterator[Door]:
    door = Door(DoorSettings(relay_pin=RELAY_PIN, unlock_seconds=3.0), pin_factory=pin_factory)
    yield door
    door.close()


@pytest.fixture(name="db_path")
def fixture_db_path(tmp_path: Path) -> Path:
    path = tmp_path / "facegate.db"
    Gallery(path).close()  # migrated, as the daemon leaves it
    return path


@pytest.fixture(name="store", params=["sqlite", "postgresql"])
def fixture_store(request, db_path: Path) -> str | Path:
    """Where the accounts, sessions, tokens and audit rows live, on each engine: a door's
    file (``db_path``) and a site's PostgreSQL. For the services' own tests."""
    if request.param == "sqlite":
        return db_path
    return request.getfixturevalue("postgres_dsn")


# The capture tests hold LFW press photos up to the "camera", which the liveness check rightly
# takes for photos: it is off for the page's tests (tests/test_liveness_door.py has it on).
WITHOUT_LIVENESS = replace(Config(), liveness=LivenessConfig(enabled=False))


@pytest.fixture(name="services")
def fixture_services(tmp_path: Path, db_path: Path, door: Door, pipeline) -> Services:
    return Services(database=db_path, snapshots=tmp_path / "snapshots", door=door,
                    live=PhotoLiveView(COLIN), pipeline_factory=lambda: pipeline,
                    config=WITHOUT_LIVENESS)


@pytest.fixture(name="make_app")
def fixture_make_app(tmp_path: Path, db_path: Path, services: Services):
    """Build the app with extra config (``make_app(MAX_CONTENT_LENGTH=1000)``)."""
    def make(services: Services = services, **config: object) -> Flask:
        base = {"TESTING": True, "SECRET_KEY": "test", "DATABASE": db_path,
                "SNAPSHOTS_DIR": tmp_path / "snapshots", "CAPTURE_INTERVAL_SECONDS": 0.0,
                "CAPTURE_TIMEOUT_SECONDS": 5.0}
        return create_app({**base, **config}, services=services)

    return make


@pytest.fixture(name="app")
def fixture_app(make_app) -> Flask:
    return make_app()


@pytest.fixture(name="client")
def fixture_client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(name="admin")
def fixture_admin(app: Flask) -> FlaskClient:
    """A client signed in as the admin "ann"."""
    return signed_in(app, "ann", "admin")


@pytest.fixture(name="viewer")
def fixture_viewer(app: Flask) -> FlaskClient:
    """A client signed in as the viewer "vic"."""
    return signed_in(app, "vic", "viewer")


def signed_in(app: Flask, name: str, role: str) -> FlaskClient:
    """A new account with ``role`` and a client signed in as it."""
    add_user(app.config["DATABASE"], name, PASSWORD, role=role)
    client = app.test_client()
    assert sign_in(client, name, PASSWORD).status_code == 302
    return client


def csrf_from(client: FlaskClient, url: str = "/login") -> str:
    """The CSRF token of a form on the page at ``url``, as a browser would find it."""
    response = client.get(url)
    match = _CSRF.search(response.get_data(as_text=True))
    assert match, f"no CSRF field on {url} ({response.status_code})"
    return match[1]


def sign_in(client: FlaskClient, name: str, password: str, **kwargs: object):
    token = csrf_from(client, "/login")
    return client.post("/login", data={"username": name, "password": password,
                                       "csrf_token": token}, **kwargs)


def post(client: FlaskClient, url: str, data: dict | None = None, *, page: str = "/",
         **kwargs: object):
    """POST a form with the CSRF token taken from ``page``."""
    return client.post(url, data={**(data or {}), "csrf_token": csrf_from(client, page)},
                       **kwargs)


def upload(client: FlaskClient, person_id: str, photos: list[tuple[bytes, str]]):
    token = csrf_from(client, f"/people/{person_id}")
    files = [(io.BytesIO(data), name) for data, name in photos]
    return client.post(f"/people/{person_id}/photos",
                       data={"photos": files, "csrf_token": token},
                       content_type="multipart/form-data")


def add_person(client: FlaskClient, name: str, external_id: str = "") -> str:
    response = post(client, "/people/new", {"name": name, "external_id": external_id},
                    page="/people/new")
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.location.rsplit("/", 1)[1]


def photo(path: Path) -> tuple[bytes, str]:
    return path.read_bytes(), path.name


def results(response) -> list[tuple[str, str]]:
    """``(status, reason)`` of each ``ul#enrol-results li``."""
    text = response.get_data(as_text=True)
    return re.findall(r'<li class="(accepted|refused|pending)">.*?<span class="reason">(.*?)'
                      r'</span>', text, re.S)


def audit_actions(db_path: Path) -> list[str]:
    with Gallery(db_path) as gallery:
        return [row[0] for row in gallery.db.execute(
            "SELECT action FROM audit_log ORDER BY at, rowid")]


def relay_on(pin_factory: MockFactory) -> bool:
    return bool(pin_factory.pin(RELAY_PIN).state)

