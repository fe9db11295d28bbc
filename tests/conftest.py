"""Shared fixtures: real models on the real images in tests/data (see tests/data/SOURCES.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from device.vision.pipeline import FacePipeline
from tests.web_support import (  # noqa: F401 (fixtures for the web page's tests)
    fixture_admin,
    fixture_app,
    fixture_client,
    fixture_db_path,
    fixture_door,
    fixture_make_app,
    fixture_pin_factory,
    fixture_services,
    fixture_store,
    fixture_viewer,
)

DATA = Path(__file__).parent / "data"

# The training tests need TensorFlow and JAX, which the device never installs: `make test`
# runs them a second time round in the training environment (.venv-train).
collect_ignore = [] if importlib.util.find_spec("keras") else ["training"]


@pytest.fixture
def factory() -> MockFactory:
    """gpiozero's own mock pins, fresh for each test (the sanctioned stand-in for GPIO)."""
    factory = MockFactory(pin_class=MockPin)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    return FacePipeline.from_models_dir()


@pytest.fixture(scope="session")
def people() -> dict[str, list[Path]]:
    """Name -> sorted image paths of the two test people (three photos each)."""
    return {folder.name: sorted(folder.glob("*.jpg"))
            for folder in sorted((DATA / "people").iterdir())}


def load(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


# A settings table edited by hand (daemon and settings-page tests).
HAND_EDITED_SETTINGS = [  # (key, value as stored): what an editor of the file may leave
    ("door.unlock_seconds", "not json"),
    ("recognition.threshold", '"high"'),  # JSON, of the wrong type
    ("door.held_open_seconds", b"\xff\xfe"),  # a blob, not UTF-8 text
]


def hand_edit_settings(db_path: Path, rows=HAND_EDITED_SETTINGS) -> None:
    import sqlite3

    with sqlite3.connect(db_path) as db:
        db.executemany("INSERT OR REPLACE INTO settings (key, value, updated_at, version)"
                       " VALUES (?, ?, '2026-01-01T00:00:00.000Z', 7)", rows)
    db.close()


# --- PostgreSQL: one server per test session, a new database per test --------------------


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL (tests/postgres_support.py), started once for the session; skipped
    where it cannot run, failed on CI."""
    from tests.e2e.browser import require
    from tests.postgres_support import Postgres, postgres_missing

    require(postgres_missing(), "PostgreSQL")
    server = Postgres().start()
    yield server
    server.remove()


@pytest.fixture
def postgres_dsn(postgres_server):
    """The connection string of a new, empty database, dropped after the test."""
    dsn = postgres_server.fresh_database()
    yield dsn
    postgres_server.drop_database(dsn)
