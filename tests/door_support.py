"""Pieces the door-loop test rigs share (tests/test_daemon.py, test_liveness_door.py,
test_mqtt.py): enrolling as an admin would, and reading the relay's mock pin back."""

from __future__ import annotations

from pathlib import Path

from device.enrolment import Actor, EnrolmentService
from device.vision.image_io import read_image


def enrol_photo(pipeline, gallery, name: str, photo: Path) -> str:
    """Enrol ``name`` from one photo through the enrolment service, as the CLI does (no
    liveness check: admins enrol from photos); returns the person's id."""
    frame, sha256 = read_image(photo)
    return EnrolmentService.with_card_defaults(pipeline, gallery).enrol(
        name, frame, sha256, Actor(None, "cli")).person.id


def energised_periods(pin) -> list[float]:
    """Seconds a gpiozero mock pin was driven high, one entry per unlock; fails if the
    relay was left energised."""
    periods, elapsed, since = [], 0.0, None
    for state in pin.states:
        elapsed += state.timestamp or 0.0
        if state.state and since is None:
            since = elapsed
        elif not state.state and since is not None:
            periods.append(elapsed - since)
            since = None
    assert since is None, "the relay was left energised"
    return periods
