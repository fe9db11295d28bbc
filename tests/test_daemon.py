"""The door's decision loop: real faces replayed from files, gpiozero's mock pins, real SQLite.

The relay is judged by the mock pin's timed history, as gpiozero's own tests do: energised
once, for the configured time, and never for a stranger.

These tests are about identity, votes, rules and failing safe: they replay LFW press photos,
which the liveness check rightly takes for photos, so it is off here (the rig's loop has no
liveness check; the daemons started from a configuration get ``liveness.enabled = false``).
tests/test_liveness_door.py has it on.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from device.camera import ReplayCamera, ResilientCamera
from device.camera.base import Camera
from device.config import load_config
from device.daemon.access import access_refusal, parse_schedule, schedule_from_text
from device.daemon.loop import DoorLoop, LoopSettings
from device.daemon.run import run_daemon
from device.daemon.scenes import write_scene
from device.door import Door, DoorSettings
from device.door.pins import default_pin_factory
from device.enrolment import Actor, EnrolmentService
from device.errors import CameraError
from device.events import EventLog
from device.gallery.store import Gallery
from device.identification import Decision, Identification, Identifier
from device.vision.image_io import read_image
from tests.conftest import DATA, hand_edit_settings
from tests.door_support import energised_periods, enrol_photo

RELAY, CONTACT, EXIT_BUTTON = 17, 27, 22
UNLOCK = 0.3
TOLERANCE = 0.05
STRANGERS = sorted((DATA / "strangers").glob("*.jpg"))
MONDAY_NOON = datetime(2026, 11, 30, 12, 0).astimezone()
WITHOUT_LIVENESS = "[liveness]\nenabled = false\n"


@pytest.fixture(autouse=True)
def without_liveness(tmp_path, monkeypatch):
    """Daemons and commands started here read a configuration file with liveness off."""
    config = tmp_path / "without-liveness.toml"
    config.write_text(WITHOUT_LIVENESS)
    monkeypatch.setenv("FACEGATE_CONFIG", str(config))


class Rig:
    """A door loop built from parts, the way tests hand them in."""

    def __init__(self, tmp_path: Path, pipeline, factory: MockFactory, scene: Path, *,
                 camera: Camera | ResilientCamera | None = None,
                 local_time=lambda: MONDAY_NOON) -> None:
        self.db_path = tmp_path / "facegate.db"
        self.gallery = Gallery(self.db_path)
        self.log_lines = io.StringIO()
        self.events = EventLog(tmp_path / "facegate.db", tmp_path / "snapshots",
                               door_id="test-door", stdout=self.log_lines)
        self.door_events: queue.Queue = queue.Queue()
        self.door = Door(DoorSettings(relay_pin=RELAY, unlock_seconds=UNLOCK,
                                      contact_pin=CONTACT, exit_button_pin=EXIT_BUTTON),
                         pin_factory=factory,
                         on_event=lambda kind, detail: self.door_events.put((kind, detail)))
        self.factory = factory
        self.pin = factory.pin(RELAY)
        self.camera = camera or ReplayCamera(scene, fps=0, loop=False)
        self.camera.open()
        self.pipeline = pipeline
        decision = Decision.from_card(pipeline.embedder_card.threshold)
        self.loop = DoorLoop(camera=self.camera,
                             identifier=Identifier(pipeline, self.gallery, decision),
                             door=self.door, events=self.events, settings=LoopSettings(),
                             door_events=self.door_events, local_time=local_time,
                             liveness=None)  # no liveness check (see the module's docstring)

    def enrol(self, name: str, photo: Path) -> str:
        return enrol_photo(self.pipeline, self.gallery, name, photo)

    def run(self) -> None:
        self.loop.run(threading.Event())
        time.sleep(UNLOCK + 0.2)  # let a grant that began at the end run its course

    def energised_periods(self) -> list[float]:
        """Seconds the relay was energised, one entry per unlock."""
        return energised_periods(self.pin)

    def kinds(self) -> list[str]:
        return [e.kind for e in reversed(self.events.list())]

    def close(self) -> None:
        self.camera.close()
        self.door.close()
        self.events.close()
        self.gallery.close()


@pytest.fixture
def rig_for(tmp_path, pipeline, factory):
    rigs = []

    def make(photos, **kwargs) -> Rig:
        scene = tmp_path / f"scene{len(rigs)}"
        write_scene(scene, photos, frames_each=kwargs.pop("frames_each", 8))
        rig = Rig(tmp_path, pipeline, factory, scene, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def test_an_enrolled_person_opens_the_door_once_for_the_configured_time(rig_for, people):
    colin = people["Colin_Powell"]
    rig = rig_for([None, colin[1], colin[2], None])
    rig.enrol("Colin Powell", colin[0])
    rig.run()
    (period,) = rig.energised_periods()  # two photos, one grant: the cool-down holds
    assert abs(period - UNLOCK) <= TOLERANCE
    assert rig.kinds() == ["granted"]
    (granted,) = rig.events.list()
    assert granted.person_name == "Colin Powell" and granted.score >= 0.5
    snapshots = rig.events.snapshot_file(granted.face_path), \
        rig.events.snapshot_file(granted.frame_path)
    assert all(path.is_file() and cv2.imread(str(path)) is not None for path in snapshots)
    line = json.loads(rig.log_lines.getvalue().splitlines()[0])
    assert line["kind"] == "granted" and line["person"] == "Colin Powell"


def test_a_stranger_never_opens_the_door_and_is_logged_once(rig_for, people):
    rig = rig_for([STRANGERS[0], None, STRANGERS[1]])
    rig.enrol("Colin Powell", people["Colin_Powell"][0])
    rig.run()
    assert rig.energised_periods() == []
    assert rig.kinds() == ["unknown", "unknown"]
    assert all(e.person_id is None and e.reason == "stranger" for e in rig.events.list())


def test_a_person_outside_their_schedule_is_denied(rig_for, people):
    serena = people["Serena_Williams"]
    rig = rig_for([serena[1]])
    person_id = rig.enrol("Serena Williams", serena[0])
    rig.gallery.update_person(person_id, schedule=schedule_from_text("sat-sun 08:00-12:00"))
    rig.run()
    assert rig.energised_periods() == []
    (denied,) = rig.events.list()
    assert (denied.kind, denied.reason, denied.person_name) == \
        ("denied", "outside schedule", "Serena Williams")


def test_an_inactive_person_is_recognised_and_denied(rig_for, people):
    serena = people["Serena_Williams"]
    rig = rig_for([serena[2]])
    person_id = rig.enrol("Serena Williams", serena[0])
    rig.gallery.update_person(person_id, active=False)
    rig.run()
    assert rig.energised_periods() == []
    assert [(e.kind, e.reason) for e in rig.events.list()] == [("denied", "inactive")]


def test_a_face_that_changes_identity_midway_does_not_open(rig_for, people):
    colin, serena = people["Colin_Powell"], people["Serena_Williams"]
    # One frame each, alternating, in the same place: never two votes in a row for one.
    rig = rig_for([colin[1], serena[1]] * 4, frames_each=1)
    rig.enrol("Colin Powell", colin[0])
    rig.enrol("Serena Williams", serena[0])
    rig.run()
    assert rig.energised_periods() == []
    assert "granted" not in rig.kinds()


def test_people_enrolled_while_running_are_recognised_without_a_restart(rig_for, people):
    colin = people["Colin_Powell"]
    rig = rig_for([colin[1]] * 3, frames_each=10)
    for _ in range(10):
        assert rig.loop.step()
    assert rig.energised_periods() == []
    with Gallery(rig.db_path) as other:  # as the CLI or the web page would, meanwhile
        frame, sha256 = read_image(colin[0])
        EnrolmentService.with_card_defaults(rig.pipeline, other).enrol(
            "Colin Powell", frame, sha256, Actor(None, "cli"))
    for _ in range(5):
        rig.loop.step()
    time.sleep(UNLOCK + 0.2)
    assert len(rig.energised_periods()) == 1


def test_door_sensor_events_reach_the_access_log(rig_for):
    rig = rig_for([None])
    rig.factory.pin(CONTACT).drive_low()  # the reed closes: the door is shut
    time.sleep(0.1)
    rig.factory.pin(CONTACT).drive_high()  # and opens while the door is locked: forced
    time.sleep(0.1)
    rig.factory.pin(EXIT_BUTTON).drive_low()  # someone inside presses the exit button
    deadline = time.monotonic() + 5
    while rig.door_events.qsize() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    rig.loop.step()
    assert {"forced_open", "exit_button"} <= set(rig.kinds())


class FlakyCamera(Camera):
    """A replay whose device 'vanishes' for a few reads, then comes back."""

    failures_left = 0

    def __init__(self, scene: Path) -> None:
        super().__init__(f"flaky:{scene}")
        self.replay = ReplayCamera(scene, fps=0, loop=False)

    def open(self) -> None:
        self.replay.open()

    def read(self):
        if FlakyCamera.failures_left > 0:
            FlakyCamera.failures_left -= 1
            raise CameraError("the camera stopped answering")
        return self.replay.read()

    def close(self) -> None:
        self.replay.close()


def test_a_camera_that_vanishes_and_returns_keeps_the_door_locked_meanwhile(
        tmp_path, pipeline, factory, people):
    scene = tmp_path / "scene"
    write_scene(scene, [people["Colin_Powell"][1]], frames_each=10)
    FlakyCamera.failures_left = 3
    camera = ResilientCamera(lambda: FlakyCamera(scene), backoff=(0.01,), poll=0.01)
    rig = Rig(tmp_path, pipeline, factory, scene, camera=camera)
    rig.enrol("Colin Powell", people["Colin_Powell"][0])
    try:
        outage_steps = 0
        while camera.outages == 0 or not camera.is_up:
            rig.loop.step()
            outage_steps += 1
            assert rig.door.is_locked
            assert outage_steps < 500
        rig.run()
        assert camera.outages >= 1
        assert len(rig.energised_periods()) == 1
    finally:
        rig.close()


def test_a_replay_folder_emptied_while_playing_keeps_the_door_locked(
        tmp_path, pipeline, factory, people, caplog):
    scene = tmp_path / "scene"
    write_scene(scene, [people["Colin_Powell"][1]], frames_each=6)
    camera = ResilientCamera(lambda: ReplayCamera(scene, fps=0), backoff=(0.01,), poll=0.01)
    rig = Rig(tmp_path, pipeline, factory, scene, camera=camera)
    try:
        for _ in range(6):  # one pass: every frame of Colin is cached by the replay
            rig.loop.step()
        for frame in scene.iterdir():
            frame.unlink()
        rig.enrol("Colin Powell", people["Colin_Powell"][0])  # cached frames would now grant
        with caplog.at_level(logging.WARNING, logger="device.camera"):
            for _ in range(20):
                rig.loop.step()
                assert rig.door.is_locked
        assert not camera.is_up and camera.outages == 1
        assert rig.energised_periods() == [] and "granted" not in rig.kinds()
        assert any("is empty: its files were removed" in r.getMessage() for r in caplog.records)
    finally:
        rig.close()


def test_schedules_are_read_in_the_doors_local_time():
    windows = parse_schedule(json.dumps(schedule_from_text("mon-fri 07:00-19:00; "
                                                           "sat 22:00-06:00")))
    weekday = [w for w in windows if 0 in w.days][0]
    assert weekday.contains(datetime(2026, 11, 30, 7, 0))  # Monday 07:00
    assert not weekday.contains(datetime(2026, 11, 30, 19, 0))  # until is exclusive
    night = windows[1]
    assert night.contains(datetime(2026, 12, 5, 23, 0))  # Saturday night
    assert night.contains(datetime(2026, 12, 6, 5, 59))  # early Sunday, same shift
    assert not night.contains(datetime(2026, 12, 6, 23, 0))  # Sunday night


def test_bad_schedules_are_refused_with_the_reason():
    from device.daemon.access import ScheduleInvalid

    with pytest.raises(ScheduleInvalid, match="days"):
        schedule_from_text("moonday 07:00-19:00")
    with pytest.raises(ScheduleInvalid, match="HH:MM"):
        schedule_from_text("mon 7-19")


def test_validity_windows_bound_access(tmp_path):
    with Gallery(tmp_path / "g.db") as gallery:
        person = gallery.add_person("Temp Worker")
        person = gallery.update_person(person.id, valid_from="2026-12-01T00:00:00+00:00",
                                       valid_until="2026-12-31T00:00:00+00:00")
    assert access_refusal(person, datetime.fromisoformat("2026-11-30T12:00+00:00")) == \
        "not yet valid"
    assert access_refusal(person, datetime.fromisoformat("2026-12-15T12:00+00:00")) is None
    assert access_refusal(person, datetime.fromisoformat("2027-01-01T12:00+00:00")) == \
        "no longer valid"


def test_sigterm_during_an_unlock_leaves_the_relay_locked(tmp_path, people, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    scene = tmp_path / "scene"
    write_scene(scene, [people["Colin_Powell"][1]], frames_each=5)
    config = load_config(None, {"paths.data_dir": str(tmp_path / "data"),
                                "door.unlock_seconds": 30, "camera.fps": 30,
                                "web.enabled": False, "liveness.enabled": False})
    config.paths.data_dir.mkdir(parents=True)
    with Gallery(config.paths.database) as gallery:
        from device.vision.pipeline import FacePipeline
        frame, sha256 = read_image(people["Colin_Powell"][0])
        EnrolmentService.with_card_defaults(FacePipeline.from_models_dir(), gallery).enrol(
            "Colin Powell", frame, sha256, Actor(None, "cli"))
    pin = default_pin_factory().pin(RELAY)
    killed_at: list[float] = []

    def kill_when_unlocked() -> None:
        deadline = time.monotonic() + 60
        while not pin.state and time.monotonic() < deadline:
            time.sleep(0.01)
        killed_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=kill_when_unlocked)
    watcher.start()
    assert run_daemon(config, camera_spec=str(scene)) == 0
    stopped_at = time.monotonic()
    watcher.join()
    assert killed_at and not pin.state
    assert stopped_at - killed_at[0] < 5  # long before the 30 s unlock would have ended


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_enrol_run_and_read_the_log_as_a_script(tmp_path, people):
    data = tmp_path / "data"
    scene = tmp_path / "scene"
    write_scene(scene, [people["Serena_Williams"][1], None, STRANGERS[0]])
    enrolled = cli("enroll", "--data-dir", str(data), "--name", "Serena Williams",
                   str(people["Serena_Williams"][0]))
    assert enrolled.returncode == 0, enrolled.stderr
    ran = cli("run", "--data-dir", str(data), "--camera", str(scene), "--exit-at-end",
              "--no-web")
    assert ran.returncode == 0, ran.stderr
    assert "replay" in ran.stderr
    events = cli("events", "--data-dir", str(data), "--json")
    kinds = [(e["kind"], e["person_name"]) for e in map(json.loads, events.stdout.splitlines())]
    assert kinds == [("granted", "Serena Williams"), ("unknown", None)]
    granted, unknown = map(json.loads, events.stdout.splitlines())
    snapshots = data / "snapshots"
    assert (snapshots / granted["face_path"]).is_file()
    removed = cli("people", "remove", "Serena Williams", "--data-dir", str(data))
    assert removed.returncode == 0, removed.stderr
    # Privacy: her snapshots are gone, the stranger's stay; the event no longer names her.
    assert not (snapshots / granted["face_path"]).exists()
    assert not (snapshots / granted["frame_path"]).exists()
    assert (snapshots / unknown["face_path"]).is_file()
    after = [json.loads(line) for line in cli("events", "--data-dir", str(data),
                                              "--json").stdout.splitlines()]
    assert after[0]["person_id"] is None and after[0]["person_name"] is None


def test_a_bad_configuration_value_stops_the_daemon_with_one_line(tmp_path):
    config = tmp_path / "facegate.toml"
    config.write_text("[door]\nunlock_secs = 3\n")
    result = cli("run", "--config", str(config), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "door.unlock_secs" in result.stderr and "unlock_seconds" in result.stderr


def test_the_daemon_tells_systemd_it_is_ready_and_feeds_the_watchdog(tmp_path, people):
    import socket

    scene = tmp_path / "scene"
    write_scene(scene, [None, people["Colin_Powell"][1]], frames_each=15)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(60)
        env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock", "NOTIFY_SOCKET": address,
               "WATCHDOG_USEC": "200000"}
        process = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--data-dir", str(tmp_path / "data"),
             "--camera", str(scene), "--exit-at-end", "--no-web"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        messages = []
        while not any("STOPPING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert process.wait(timeout=60) == 0
    assert any(m.startswith("READY=1") for m in messages)
    assert sum("WATCHDOG=1" in m for m in messages) >= 2


def test_settings_changed_on_the_admin_page_reach_the_running_door(rig_for, people, tmp_path):
    from device.daemon.run import SiteSettingsWatch
    from device.site_settings import write_site_settings

    colin = people["Colin_Powell"]
    rig = rig_for([colin[1]], frames_each=6)
    rig.enrol("Colin Powell", colin[0])
    config = load_config(None, {"paths.data_dir": str(tmp_path), "web.enabled": False})
    assert config.paths.database == rig.db_path
    watch = SiteSettingsWatch(config, rig.loop, rig.door, rig.events)
    write_site_settings(rig.db_path, {"door.unlock_seconds": 1.5,
                                      "recognition.threshold": 0.995}, by="admin")
    watch.poll(time.monotonic() + 10)
    assert rig.door.lock.unlock_seconds == 1.5
    assert rig.loop.identifier.decision.threshold == 0.995
    rig.run()
    assert rig.energised_periods() == []  # nobody reaches a cosine of 0.995


def test_a_hand_edited_settings_row_does_not_stop_the_daemon_from_starting(tmp_path, people):
    data = tmp_path / "data"
    scene = tmp_path / "scene"
    write_scene(scene, [people["Serena_Williams"][1], None])
    enrolled = cli("enroll", "--data-dir", str(data), "--name", "Serena Williams",
                   str(people["Serena_Williams"][0]))
    assert enrolled.returncode == 0, enrolled.stderr
    hand_edit_settings(data / "facegate.db")
    ran = cli("run", "--data-dir", str(data), "--camera", str(scene), "--exit-at-end",
              "--no-web")
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert "door.unlock_seconds ignored" in ran.stderr
    assert "recognition.threshold ignored" in ran.stderr
    events = cli("events", "--data-dir", str(data), "--json")
    kinds = [(e["kind"], e["person_name"]) for e in map(json.loads, events.stdout.splitlines())]
    assert kinds == [("granted", "Serena Williams")]


def test_a_hand_edited_settings_row_is_skipped_by_the_running_doors_watch(rig_for, people,
                                                                         tmp_path, caplog):
    from device.daemon.run import SiteSettingsWatch
    from device.site_settings import write_site_settings

    colin = people["Colin_Powell"]
    rig = rig_for([colin[1]], frames_each=6)
    rig.enrol("Colin Powell", colin[0])
    config = load_config(None, {"paths.data_dir": str(tmp_path), "web.enabled": False})
    watch = SiteSettingsWatch(config, rig.loop, rig.door, rig.events)
    write_site_settings(rig.db_path, {"recognition.votes_needed": 1}, by="admin")
    hand_edit_settings(rig.db_path)
    with caplog.at_level(logging.ERROR, logger="device"):
        watch.poll(time.monotonic() + 10)
    assert rig.door.lock.unlock_seconds == config.door.unlock_seconds  # the file's
    assert rig.loop.settings.votes_needed == 1  # the sound row still applies
    assert any("recognition.threshold ignored" in r.getMessage() for r in caplog.records)
    rig.run()
    assert rig.kinds() == ["granted"]


def test_the_live_view_serves_the_latest_frame_with_faces_labelled(pipeline, people):
    from device.daemon.live import LiveFrames
    from device.daemon.scenes import compose_frame

    live = LiveFrames()
    assert live.latest_jpeg() is None and live.latest_frame() is None
    frame = compose_frame(cv2.imread(str(people["Colin_Powell"][0])))
    faces = pipeline.process(frame)
    live.publish(frame, [Identification(faces[0], "id", "Colin Powell", True, 0.8, 0.1,
                                        "match")])
    picture = cv2.imdecode(np.frombuffer(live.latest_jpeg(), np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == frame.shape
    x1, y1, _, _ = (int(v) for v in faces[0].box)
    assert not np.array_equal(picture[y1 - 5, x1 + 5], frame[y1 - 5, x1 + 5])  # the label
    assert live.latest_jpeg() is live.latest_jpeg()  # encoded once per frame


def test_a_run_killed_outright_is_an_unclean_shutdown_in_the_log_at_the_next_start(
        tmp_path, people):
    data = tmp_path / "data"
    scene = tmp_path / "scene"
    write_scene(scene, [None, STRANGERS[0]], frames_each=5)
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "device", "run", "--data-dir", str(data), "--camera",
         str(scene), "--no-web"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = data / "facegate.running"
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and daemon.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), daemon.stderr.read().decode() if daemon.poll() else "slow"
    finally:
        daemon.kill()  # SIGKILL: no shutdown code runs, the marker stays
        daemon.wait(timeout=30)
        daemon.stderr.close()
    assert marker.exists()
    ran = cli("run", "--data-dir", str(data), "--camera", str(scene), "--exit-at-end",
              "--no-web")
    assert ran.returncode == 0, ran.stderr
    assert "did not stop cleanly" in ran.stderr
    assert not marker.exists()  # this run stopped cleanly
    events = [json.loads(line) for line in
              cli("events", "--data-dir", str(data), "--json").stdout.splitlines()]
    unclean = [event for event in events if event["kind"] == "unclean_shutdown"]
    assert len(unclean) == 1 and unclean[0]["detail"]["pid"] == daemon.pid
    again = cli("run", "--data-dir", str(data), "--camera", str(scene), "--exit-at-end",
                "--no-web")
    assert again.returncode == 0 and "did not stop cleanly" not in again.stderr


def test_under_systemd_a_missing_camera_is_an_error_and_never_the_demo(tmp_path, monkeypatch,
                                                                       caplog):
    if Path("/dev/video0").exists():
        pytest.skip("this machine has a webcam: auto would choose it")
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")  # what systemd sets for a unit
    monkeypatch.delenv("FACEGATE_CAMERA", raising=False)
    config = load_config(None, {"paths.data_dir": str(tmp_path / "data"),
                                "camera.source": "auto", "web.enabled": False})
    pin = default_pin_factory().pin(RELAY)
    before = len(pin.states)
    stop = threading.Event()
    stopper = threading.Timer(2.0, stop.set)
    stopper.start()
    with caplog.at_level(logging.INFO):
        assert run_daemon(config, stop=stop) == 0
    stopper.join()
    if any("camera picamera2" in r.getMessage() for r in caplog.records):
        pytest.skip("this machine has a Pi camera")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(m.startswith("no camera: the door stays locked") and "cable" in m
               for m in errors), errors
    assert not (config.paths.data_dir / "demo-replay").exists()
    assert not any(state.state for state in pin.states[before:])


def test_a_second_daemon_on_the_same_data_folder_refuses_naming_the_first(tmp_path, people):
    scene = tmp_path / "scene"
    write_scene(scene, [people["Colin_Powell"][1]], frames_each=5)
    data = tmp_path / "data"
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    command = [sys.executable, "-m", "device", "run", "--data-dir", str(data),
               "--camera", str(scene), "--no-web"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        lock = data / "facegate.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert second.stderr.strip().count("\n") == 0, second.stderr
        assert f"another facegate (pid {first.pid}) is already running on" in second.stderr
        assert first.poll() is None  # the first door runs on
    finally:
        first.terminate()
        assert first.wait(timeout=60) == 0
    again = subprocess.run([*command, "--exit-at-end"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # the lock went with the first process


def test_the_doors_time_zone_is_named_with_where_it_comes_from(tmp_path, capsys):
    from device.cli import main
    from device.daemon.access import door_time_zone

    zoneinfo = tmp_path / "usr" / "share" / "zoneinfo" / "Europe"
    zoneinfo.mkdir(parents=True)
    (zoneinfo / "Paris").write_bytes(b"TZif")
    link = tmp_path / "localtime"
    link.symlink_to(zoneinfo / "Paris")
    zone = door_time_zone(environ={}, localtime=link)
    assert zone["name"] == "Europe/Paris" and zone["source"] == str(link)
    assert door_time_zone(environ={"TZ": ":Asia/Tokyo"}, localtime=link)["source"] == "$TZ"
    assert door_time_zone(environ={}, localtime=tmp_path / "none")["source"] == "unset"
    (tmp_path / "data").mkdir()
    Gallery(tmp_path / "data" / "facegate.db").close()
    assert main(["info", "--json", "--data-dir", str(tmp_path / "data")]) == 0
    shown = json.loads(capsys.readouterr().out)["time_zone"]
    assert set(shown) == {"name", "utc_offset", "abbreviation", "source"}
    assert shown["utc_offset"] == datetime.now().astimezone().strftime("%z")[:3] + ":" + \
        datetime.now().astimezone().strftime("%z")[3:]


def test_the_demo_shows_someone_most_of_the_time_and_a_corridor_between(tmp_path):
    from device.daemon.scenes import DEMO_RECIPE, demo_scene

    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "frame-999999.jpg").write_bytes(b"from an older recipe")
    (folder / ".complete").write_text("an older recipe")
    demo_scene(folder, DATA)
    assert (folder / ".complete").read_text() == DEMO_RECIPE
    frames = sorted(folder.glob("frame-*.jpg"))
    assert folder / "frame-999999.jpg" not in frames  # written again, not mixed
    spreads = [float(cv2.imread(str(f)).std()) for f in frames]
    photos = len(list((DATA / "people").glob("*/*.jpg"))) + len(STRANGERS)
    empty = len(frames) - photos * 24
    assert 0 < empty <= len(frames) / 3  # the live view was grey half of the time
    # An empty hall is a picture of a corridor (a lit wall, a door frame), not a flat grey.
    assert min(spreads) > 10
