"""Presentation-attack detection at the door: printed photos of enrolled people never open it.

Real models on real pad-dev photos (tests/liveness_support.py, read from ../shared, never
copied into the project), gpiozero's mock pins, a real SQLite file. An admin enrols a person
from the very photo an attacker then holds up (admins enrol from photos; uploads are not
liveness-checked), so identity alone would open the door: only the liveness check stops it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from device.audit import list_audit
from device.camera import ReplayCamera
from device.config import Places, load_config
from device.daemon.loop import DoorLoop, LoopSettings
from device.daemon.run import SiteSettingsWatch, run_daemon
from device.daemon.scenes import demo_scene
from device.door import Door, DoorSettings
from device.door.pins import default_pin_factory
from device.enrolment import Actor, EnrolmentService
from device.errors import FacegateError, PresentationAttack, SettingInvalid
from device.events import EventLog
from device.gallery.store import Gallery
from device.identification import Decision, Identifier
from device.liveness import LivenessCheck, LivenessSettings, liveness_loader
from device.site_settings import write_site_settings
from device.vision.image_io import read_image
from device.vision.liveness import LivenessModel
from tests.conftest import DATA
from tests.door_support import enrol_photo
from tests.liveness_support import BONA_FIDE, PRINT_ATTACKS, needs_pad_dev, pad_dev

RELAY, GREEN, RED = 17, 5, 6
UNLOCK = 0.3
NOWHERE = Places(system_config=Path("/nonexistent/facegate.toml"),
                 system_data_dir=Path("/nonexistent"), project_dir=None)


@pytest.fixture(scope="session")
def liveness_model() -> LivenessModel:
    """The default liveness model, as the daemon loads it."""
    return LivenessModel.by_name("")


class CountingLoader:
    """Loads real liveness models and remembers what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str) -> LivenessModel:
        self.calls.append(name)
        return liveness_loader()(name)


def write_frames(folder: Path, photos: list[Path | None], frames_each: int = 6) -> Path:
    """A replay: each photo held for ``frames_each`` frames as it is (None: nobody there)."""
    folder.mkdir(parents=True, exist_ok=True)
    number = 0
    for photo in photos:
        # None: an empty grey hall, the size of pad-dev's photos.
        image = cv2.imread(str(photo)) if photo is not None else np.full((400, 300, 3), 70,
                                                                           np.uint8)
        for _ in range(frames_each):
            cv2.imwrite(str(folder / f"frame-{number:06d}.jpg"), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            number += 1
    return folder


class Rig:
    """A door loop with the liveness check, built from parts (as tests/test_daemon.py's)."""

    def __init__(self, tmp_path: Path, pipeline, factory: MockFactory, scene: Path, *,
                 liveness: LivenessCheck | None, cooldown_seconds: float = 5.0) -> None:
        self.db_path = tmp_path / "facegate.db"
        self.gallery = Gallery(self.db_path)
        self.events = EventLog(self.db_path, tmp_path / "snapshots", door_id="test-door",
                               stdout=io.StringIO())
        self.door = Door(DoorSettings(relay_pin=RELAY, unlock_seconds=UNLOCK,
                                      green_led_pin=GREEN, red_led_pin=RED),
                         pin_factory=factory)
        self.factory = factory
        self.camera = ReplayCamera(scene, fps=0, loop=False)
        self.camera.open()
        self.pipeline = pipeline
        self.liveness = liveness
        self.loop = DoorLoop(
            camera=self.camera,
            identifier=Identifier(pipeline, self.gallery,
                                  Decision.from_card(pipeline.embedder_card.threshold)),
            door=self.door, events=self.events,
            settings=LoopSettings(cooldown_seconds=cooldown_seconds),
            door_events=queue.Queue(), liveness=liveness)

    def enrol(self, name: str, photo: Path) -> str:
        return enrol_photo(self.pipeline, self.gallery, name, photo)

    def run(self) -> None:
        self.loop.run(threading.Event())
        time.sleep(UNLOCK + 0.2)  # let a grant that began at the end run its course

    def lit(self, pin: int) -> bool:
        """Whether the pin was ever driven high."""
        return any(state.state for state in self.factory.pin(pin).states)

    def kinds(self) -> list[str]:
        return [e.kind for e in reversed(self.events.list())]

    def close(self) -> None:
        self.camera.close()
        self.door.close()
        self.events.close()
        self.gallery.close()


@pytest.fixture
def rig_for(tmp_path, pipeline, factory, liveness_model):
    rigs = []

    def make(photos: list[Path | None], *, liveness: LivenessCheck | None | str = "on",
             frames_each: int = 6, **kwargs: Any) -> Rig:
        scene = write_frames(tmp_path / f"scene{len(rigs)}", photos, frames_each)
        check = LivenessCheck.with_model(liveness_model) if liveness == "on" else liveness
        rig = Rig(tmp_path, pipeline, factory, scene, liveness=check, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


# --- At the door -----------------------------------------------------------------------------


@needs_pad_dev
def test_a_printed_photo_of_an_enrolled_person_never_opens_and_is_logged_as_an_attack(
        rig_for, liveness_model):
    attack = pad_dev(PRINT_ATTACKS[0])
    rig = rig_for([attack])
    person_id = rig.enrol("Pat Printed", attack)  # the very photo held up: identity matches
    rig.run()
    assert rig.door.is_locked and not rig.lit(RELAY) and not rig.lit(GREEN)
    assert rig.lit(RED)  # refused, as a denial is
    assert rig.kinds() == ["attack"]  # once for the track, though the photo stays in view
    (event,) = rig.events.list()
    assert (event.person_id, event.person_name) == (person_id, "Pat Printed")
    assert event.score >= 0.9  # the likeness is near perfect
    score = event.detail["liveness"]
    assert 0.0 <= score < liveness_model.threshold
    assert event.detail["liveness_threshold"] == liveness_model.threshold
    assert event.detail["liveness_model"] == liveness_model.name
    assert event.reason == ("looks like a photo or a screen, not a live face "
                            f"(liveness {score:.2f})")
    for path in (event.face_path, event.frame_path):
        assert cv2.imread(str(rig.events.snapshot_file(path))) is not None


@needs_pad_dev
def test_a_printed_photo_of_a_stranger_is_an_attack_resembling_nobody(rig_for):
    rig = rig_for([pad_dev(PRINT_ATTACKS[1])])
    rig.enrol("Someone Live", pad_dev(BONA_FIDE[0]))
    rig.run()
    assert not rig.lit(RELAY) and rig.lit(RED)
    (event,) = rig.events.list()
    assert (event.kind, event.person_id, event.person_name) == ("attack", None, None)
    assert event.face_path is not None


@needs_pad_dev
def test_a_live_enrolled_face_opens_the_door(rig_for, liveness_model):
    live = pad_dev(BONA_FIDE[0])
    rig = rig_for([live])
    rig.enrol("Lee Live", live)
    rig.run()
    assert rig.kinds() == ["granted"]
    (granted,) = rig.events.list()
    assert granted.person_name == "Lee Live"
    assert granted.detail["liveness"] >= liveness_model.threshold
    assert rig.lit(RELAY) and rig.door.is_locked  # opened, and locked again after UNLOCK


@needs_pad_dev
def test_with_liveness_off_the_printed_photo_opens_the_door_and_no_model_is_loaded(rig_for):
    attack = pad_dev(PRINT_ATTACKS[0])
    loader = CountingLoader()
    rig = rig_for([attack], liveness=LivenessCheck(loader, LivenessSettings(enabled=False)))
    rig.enrol("Pat Printed", attack)
    rig.run()
    assert rig.kinds() == ["granted"]  # what the check is there to stop
    assert rig.lit(RELAY)
    assert loader.calls == []
    assert "liveness" not in rig.events.list()[0].detail


@needs_pad_dev
def test_a_photo_shown_again_within_the_cool_down_is_one_attempt(rig_for):
    attack = pad_dev(PRINT_ATTACKS[0])
    rig = rig_for([attack, None, attack], cooldown_seconds=60)
    rig.enrol("Pat Printed", attack)
    rig.run()
    assert rig.kinds() == ["attack"]
    assert not rig.lit(RELAY)


@needs_pad_dev
def test_a_photo_shown_again_after_the_cool_down_is_a_new_attack(rig_for):
    attack = pad_dev(PRINT_ATTACKS[0])
    rig = rig_for([attack, None, attack], cooldown_seconds=0)
    rig.enrol("Pat Printed", attack)
    rig.run()
    assert rig.kinds() == ["attack", "attack"]
    assert not rig.lit(RELAY)


class FailingInterpreter:
    """A real TFLite interpreter whose ``invoke`` fails, as a broken delegate would."""

    def __init__(self, interpreter: Any) -> None:
        self._interpreter = interpreter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._interpreter, name)

    def invoke(self) -> None:
        raise RuntimeError("the delegate failed")


@needs_pad_dev
def test_a_face_that_cannot_be_scored_is_not_live_and_the_error_is_logged(rig_for, caplog):
    from device.vision.interpreter import load_interpreter

    broken = LivenessModel.by_name("", interpreter_factory=lambda path, threads: (
        FailingInterpreter(load_interpreter(path, num_threads=threads))))
    live = pad_dev(BONA_FIDE[0])
    rig = rig_for([live], liveness=LivenessCheck.with_model(broken))
    rig.enrol("Lee Live", live)
    with caplog.at_level(logging.ERROR, logger="device"):
        rig.run()
    assert not rig.lit(RELAY) and rig.kinds() == []  # neither let in nor called an attack
    failures = [r for r in caplog.records if "liveness scoring failed" in r.getMessage()]
    assert len(failures) == 1  # once, not at every frame


# --- Settings, at start and at run time --------------------------------------------------------


def test_the_card_gives_the_threshold_and_votes_unless_they_are_configured(liveness_model):
    from_card = LivenessCheck.with_model(liveness_model)
    assert from_card.threshold == liveness_model.threshold
    assert from_card.votes_needed(3) == min(liveness_model.votes_needed, 3)
    assert from_card.votes_needed(1) == 1  # never more than the window
    configured = LivenessCheck.with_model(liveness_model,
                                          LivenessSettings(threshold=0.8, votes_needed=3))
    assert configured.threshold == 0.8 and configured.votes_needed(3) == 3
    config = load_config(None, {"liveness.threshold": 0.7, "liveness.votes_needed": 1},
                         environ={}, places=NOWHERE)
    assert LivenessSettings.from_config(config.liveness) == LivenessSettings(
        enabled=True, model="", threshold=0.7, votes_needed=1)


def test_liveness_is_on_by_default():
    assert load_config(None, environ={}, places=NOWHERE).liveness.enabled is True


def test_the_settings_page_may_change_the_liveness_keys_within_the_configurations_rules(
        tmp_path):
    db = tmp_path / "facegate.db"
    Gallery(db).close()
    changed = write_site_settings(db, {"liveness.enabled": "false",
                                       "liveness.threshold": "0.9",
                                       "liveness.votes_needed": "3"}, by="admin")
    assert changed == {"liveness.enabled": (None, False), "liveness.threshold": (None, 0.9),
                       "liveness.votes_needed": (None, 3)}
    with pytest.raises(SettingInvalid) as refused:
        write_site_settings(db, {"liveness.votes_needed": 4}, by="admin")
    assert refused.value.key == "liveness.votes_needed"
    assert "cannot be more than recognition.votes_window (3)" in str(refused.value)
    with pytest.raises(SettingInvalid, match="liveness.threshold"):
        write_site_settings(db, {"liveness.threshold": 1.5}, by="admin")


@needs_pad_dev
def test_liveness_turned_on_at_run_time_loads_its_model_once_and_stops_the_photo(
        rig_for, tmp_path):
    attack = pad_dev(PRINT_ATTACKS[0])
    loader = CountingLoader()
    rig = rig_for([attack, None, attack],
                  liveness=LivenessCheck(loader, LivenessSettings(enabled=False)))
    rig.enrol("Pat Printed", attack)
    config = load_config(None, {"paths.data_dir": str(tmp_path), "web.enabled": False,
                                "liveness.enabled": False}, environ={}, places=NOWHERE)
    watch = SiteSettingsWatch(config, rig.loop, rig.door, rig.events)
    write_site_settings(rig.db_path, {"liveness.enabled": True, "liveness.votes_needed": 1},
                        by="admin")
    watch.poll(time.monotonic() + 10)
    assert rig.liveness.enabled and rig.liveness.settings.votes_needed == 1
    assert loader.calls == []  # lazily: on the first frame that needs it
    rig.run()
    assert loader.calls == [""]
    assert rig.loop.tracker.live_needed == 1
    assert "granted" not in rig.kinds() and "attack" in rig.kinds()
    assert not rig.lit(RELAY)

    write_site_settings(rig.db_path, {"liveness.enabled": False}, by="admin")
    watch.poll(time.monotonic() + 20)
    assert not rig.liveness.enabled and rig.loop.tracker.live_needed is None


def test_a_liveness_model_that_cannot_be_loaded_stops_the_daemon_with_the_door_locked(
        tmp_path, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    config = load_config(None, {"paths.data_dir": str(tmp_path / "data"), "web.enabled": False,
                                "liveness.model": "face_landmark"}, environ={}, places=NOWHERE)
    with pytest.raises(FacegateError, match="the liveness model face_landmark cannot be "
                                            "loaded: .*liveness.enabled = false"):
        run_daemon(config, camera_spec=str(DATA / "people"), exit_at_end=True)
    assert not default_pin_factory().pin(RELAY).state
    assert not (config.paths.data_dir / "facegate.running").exists()

    file = tmp_path / "facegate.toml"
    file.write_text('[liveness]\nmodel = "no_such_model"\n')
    ran = subprocess.run(
        [sys.executable, "-m", "device", "run", "--config", str(file), "--data-dir",
         str(tmp_path / "data"), "--camera", str(DATA / "people"), "--exit-at-end",
         "--no-web"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"})
    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith("facegate: the liveness model no_such_model cannot be loaded")


def test_the_demo_runs_with_liveness_on_names_it_at_start_and_says_how_to_turn_it_off(
        tmp_path, monkeypatch, caplog, liveness_model):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    config = load_config(None, {"paths.data_dir": str(tmp_path / "data"), "web.enabled": False,
                                "camera.fps": 120}, environ={}, places=NOWHERE)
    assert config.liveness.enabled  # a door that claims anti-spoofing, out of the box
    config.paths.data_dir.mkdir(parents=True)
    with Gallery(config.paths.database) as gallery:
        from device.vision.pipeline import FacePipeline

        frame, sha256 = read_image(DATA / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg")
        EnrolmentService.with_card_defaults(FacePipeline.from_models_dir(), gallery).enrol(
            "Colin Powell", frame, sha256, Actor(None, "cli"))
    demo = demo_scene(config.paths.data_dir / "demo-replay", DATA)  # as `make run` plays it
    with caplog.at_level(logging.INFO, logger="device"):
        assert run_daemon(config, camera_spec=str(demo), exit_at_end=True) == 0
    messages = [record.getMessage() for record in caplog.records]
    start = next(m for m in messages if m.startswith("facegate running"))
    votes = min(liveness_model.votes_needed, config.recognition.votes_window)
    assert (f"liveness {liveness_model.name} (live at >= {liveness_model.threshold:.3f}, "
            f"{votes} of {config.recognition.votes_window} frames)") in start
    assert any("[liveness]\n  enabled = false" in m and "var/facegate.toml" in m
               for m in messages)
    with EventLog(config.paths.database, config.paths.snapshots,
                  door_id=config.door.id) as events:
        logged = events.list()
    # Whether each of the demo's press photos passes as live is the model's call; what the
    # demo must show is that every decision on an enrolled face went through the check.
    decided = [e for e in logged if e.kind in ("granted", "denied", "attack")]
    assert decided and all("liveness" in e.detail for e in decided)


# --- Enrolment from the door camera -----------------------------------------------------------


@pytest.fixture
def service(tmp_path, pipeline, liveness_model):
    gallery = Gallery(tmp_path / "facegate.db")
    yield EnrolmentService.with_card_defaults(
        pipeline, gallery, liveness=LivenessCheck.with_model(liveness_model))
    gallery.close()


@needs_pad_dev
def test_capture_refuses_a_frame_of_a_printed_photo_in_one_sentence(service, tmp_path):
    frame, sha256 = read_image(pad_dev(PRINT_ATTACKS[0]))
    person = service.gallery.add_person("Pat Printed")
    capture = service.capture(person, Actor("ann", "capture"))
    with pytest.raises(PresentationAttack) as refused:
        capture.take(frame, sha256, "frame 1")
    error = refused.value
    assert error.code == "presentation_attack" and error.score is not None
    assert str(error) == ("frame 1: looks like a photo or a screen, not a live face "
                          f"(liveness {error.score:.2f})")
    assert service.gallery.list_templates(person.id) == []
    (row,) = [r for r in list_audit(tmp_path / "facegate.db") if r["action"] == "enrol_refused"]
    assert row["detail"]["code"] == "presentation_attack" and row["user"] == "ann"


@needs_pad_dev
def test_capture_takes_a_live_face(service):
    frame, sha256 = read_image(pad_dev(BONA_FIDE[0]))
    person = service.gallery.add_person("Lee Live")
    enrolled = service.capture(person, Actor("ann", "capture")).take(frame, sha256, "frame 1")
    assert enrolled.template.source == "capture"


@needs_pad_dev
def test_photos_given_by_an_admin_are_not_liveness_checked(service):
    frame, sha256 = read_image(pad_dev(PRINT_ATTACKS[0]))
    enrolled = service.enrol("Pat Printed", frame, sha256, Actor("ann", "upload"))
    assert enrolled.template.source == "upload"


@needs_pad_dev
def test_the_admin_pages_enrolment_checks_captures_only_while_liveness_is_on(
        make_app, services):
    from dataclasses import replace

    from device.config import Config
    from device.web.db import enrolment

    frame, sha256 = read_image(pad_dev(PRINT_ATTACKS[0]))
    services.config = Config()  # the defaults: liveness on
    app = make_app(services=services)
    with app.test_request_context():
        service, actor = enrolment("capture")
        assert service.liveness is not None and service.liveness.enabled
        person = service.gallery.add_person("Pat Printed")
        with pytest.raises(PresentationAttack, match="frame 1: looks like a photo"):
            service.capture(person, actor).take(frame, sha256, "frame 1")
    services.config = replace(Config(), liveness=replace(Config().liveness, enabled=False))
    with app.test_request_context():
        service, actor = enrolment("capture")
        assert service.liveness is None
        person = service.gallery.find_person("Pat Printed")
        assert service.capture(person, actor).take(frame, sha256, "frame 1").template


# --- The access log ----------------------------------------------------------------------------


def test_an_attack_reads_in_the_log_with_its_likeness_and_liveness_and_is_erased_with_them(
        tmp_path):
    from datetime import UTC

    from device.events import KINDS, format_event_line

    out = io.StringIO()
    log = EventLog(tmp_path / "facegate.db", tmp_path / "snapshots", door_id="front",
                   stdout=out)
    face = np.full((120, 100, 3), 128, np.uint8)
    event = log.record("attack", person_id="p-pat", person_name="Pat Printed", score=0.9987,
                       reason="looks like a photo or a screen, not a live face (liveness 0.03)",
                       face_crop=face, detail={"liveness": 0.0312, "liveness_threshold": 0.5})
    assert "attack" in KINDS and log.list(kind="attack") == [event]
    assert len(event.id) == 36 and event.version == 1  # a UUID, replicable like the others
    line = json.loads(out.getvalue())
    assert (line["kind"], line["person"], line["score"], line["liveness"]) == \
        ("attack", "Pat Printed", 0.9987, 0.0312)
    assert format_event_line(event, tz=UTC).endswith(
        f"  front  {'attack':<13}  Pat Printed  0.999  looks like a photo or a screen, not a "
        "live face (liveness 0.03)  [face]")
    assert log.delete_person("p-pat") == 1
    (erased,) = log.list()
    assert erased.person_id is None and erased.person_name is None and erased.face_path is None
    log.close()
