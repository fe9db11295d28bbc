"""The door on a real MQTT broker (Mosquitto, tests/mqtt_support.py): events from the door
loop reach a subscriber with their ids, state and availability are retained, the last will
marks a killed door offline, Home Assistant discovery is there, nothing is lost while the
broker is away (nor across a door restart), the outbox is written with its event or not at
all, and commands are refused unless on, over TLS, fresh and audited.

Like tests/test_daemon.py these replay LFW press photos, so liveness is off (the loops here
have no liveness check; the daemons read a configuration with ``liveness.enabled = false``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device.audit import list_audit
from device.camera import ReplayCamera
from device.cli import main
from device.config import Places, load_config
from device.daemon.loop import DoorLoop, LoopSettings
from device.daemon.run import open_event_log
from device.daemon.scenes import write_scene
from device.door import Door, DoorSettings
from device.errors import CommandRefused
from device.events import EventLog
from device.events.event import utc_text
from device.events.outbox import Outbox, OutboxFeed
from device.events.retention import Retention
from device.gallery.store import Gallery
from device.identification import Decision, Identifier
from device.mqtt.commands import CommandGate
from device.mqtt.publisher import MqttPublisher
from device.mqtt.settings import MqttSettings
from tests.conftest import DATA
from tests.door_support import energised_periods, enrol_photo
from tests.e2e.browser import require
from tests.mqtt_support import Listener, Mosquitto, TestCA, mosquitto_missing

DOOR = "test-door"
EVENTS = f"facegate/{DOOR}/event"
STATE = f"facegate/{DOOR}/state"
AVAILABILITY = f"facegate/{DOOR}/availability"
COMMAND = f"facegate/{DOOR}/command"
RESULT = f"facegate/{DOOR}/command/result"
RELAY, CONTACT = 17, 27
UNLOCK = 0.3
TOLERANCE = 0.05
FAST = (0.2, 0.5)  # the publisher's reconnection back-off in these tests, seconds
MONDAY_NOON = datetime(2026, 11, 30, 12, 0).astimezone()
STRANGERS = sorted((DATA / "strangers").glob("*.jpg"))
DOCS = Path(__file__).resolve().parents[1] / "docs" / "mqtt.md"
PASSWORDS = {DOOR: "door secret 1", "other-door": "door secret 2",
             "homeassistant": "ha secret 3"}


@pytest.fixture
def mosquitto_present():
    require(mosquitto_missing(), "MQTT broker")


@pytest.fixture(autouse=True)
def without_liveness(tmp_path, monkeypatch):
    """Daemons and commands started here read a configuration file with liveness off."""
    config = tmp_path / "without-liveness.toml"
    config.write_text("[liveness]\nenabled = false\n")
    monkeypatch.setenv("FACEGATE_CONFIG", str(config))


@pytest.fixture
def broker(tmp_path, mosquitto_present):
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory) -> TestCA:
    return TestCA.make(tmp_path_factory.mktemp("ca"))


def documented_acl() -> str:
    """The ACL of docs/mqtt.md, which the TLS broker here runs with."""
    section = DOCS.read_text().split("## A Mosquitto ACL", 1)[1]
    return re.search(r"```text\n(.*?)```", section, re.S)[1]


@pytest.fixture
def tls_broker(tmp_path, mosquitto_present, test_ca):
    with Mosquitto(tmp_path / "tls-broker", tls=test_ca, accounts=PASSWORDS,
                   acl=documented_acl()) as running:
        yield running


def config_for(tmp_path: Path, broker: Mosquitto | None, **mqtt_keys):
    """A configuration of the door ``DOOR`` on ``broker``, nothing from this machine."""
    overrides = {"door.id": DOOR, "door.contact_pin": CONTACT, "paths.data_dir": str(tmp_path),
                 "web.enabled": False,
                 "mqtt.url": broker.url if broker is not None else None}
    overrides.update({f"mqtt.{key}": value for key, value in mqtt_keys.items()})
    places = Places(system_config=tmp_path / "no.toml", system_data_dir=tmp_path / "none",
                    project_dir=None)
    return load_config(None, overrides, environ={}, places=places)


def door_account(tmp_path: Path, broker: Mosquitto, name: str = DOOR, password: str | None = None,
                 **mqtt_keys):
    """The configuration of a door signing in to the TLS broker with its own account."""
    secret = tmp_path / f"{name}-password"
    secret.write_text((password or PASSWORDS[name]) + "\n")
    return config_for(tmp_path, broker, username=name, password_file=str(secret),
                      ca_file=str(broker.tls.ca), **mqtt_keys)


class Rig:
    """The door loop of tests/test_daemon.py, with its events going to the broker: real
    models, gpiozero's mock pins, a replay camera, the real SQLite file."""

    def __init__(self, tmp_path: Path, pipeline, factory, settings: MqttSettings,
                 photos=(None,), *, frames_each: int = 8, **publisher_options) -> None:
        self.tmp_path = tmp_path
        self.settings = settings
        self.db_path = tmp_path / "facegate.db"
        self.gallery = Gallery(self.db_path)
        self.door_events: queue.Queue = queue.Queue()
        self.door = Door(DoorSettings(relay_pin=RELAY, unlock_seconds=UNLOCK,
                                      contact_pin=CONTACT), pin_factory=factory,
                         on_event=lambda kind, detail: self.door_events.put((kind, detail)))
        self.pin = factory.pin(RELAY)
        self.factory = factory
        self.pipeline = pipeline
        self.publisher_options = {"reconnect_delay": FAST, **publisher_options}
        self.publisher = self.events = None
        self.restart()
        scene = tmp_path / f"scene-{uuid.uuid4().hex[:6]}"
        write_scene(scene, list(photos), frames_each=frames_each)
        self.camera = ReplayCamera(scene, fps=0, loop=False)
        self.camera.open()
        decision = Decision.from_card(pipeline.embedder_card.threshold)
        self.loop = DoorLoop(camera=self.camera,
                             identifier=Identifier(pipeline, self.gallery, decision),
                             door=self.door, events=self.events, settings=LoopSettings(),
                             door_events=self.door_events, local_time=lambda: MONDAY_NOON,
                             liveness=None)

    def restart(self) -> None:
        """What a restart of the door does to MQTT: a new publisher and event log on the
        same file (started: call ``publisher.start()``)."""
        if self.publisher is not None:
            self.publisher.close()
            self.events.close()
        self.publisher = MqttPublisher(self.settings, self.db_path, door=self.door,
                                       **self.publisher_options)
        self.events = EventLog(self.db_path, self.tmp_path / "snapshots", door_id=DOOR,
                               stdout=io.StringIO(),
                               outbox=self.settings.outbox_feed(self.publisher.wake))
        if hasattr(self, "loop"):
            self.loop.events = self.events

    def enrol(self, name: str, photo: Path) -> str:
        return enrol_photo(self.pipeline, self.gallery, name, photo)

    def run(self) -> None:
        self.loop.run(threading.Event())
        time.sleep(UNLOCK + 0.2)

    def ids(self) -> list[str]:
        """Every event's id, in the order recorded."""
        return [row[0] for row in self.events.db.execute("SELECT id FROM events ORDER BY rowid")]

    def waiting(self) -> int:
        return self.events.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def energised_periods(self) -> list[float]:
        """Seconds the relay was energised, one entry per unlock."""
        return energised_periods(self.pin)

    def close(self) -> None:
        self.camera.close()
        self.door.close()
        self.publisher.close()
        self.events.close()
        self.gallery.close()


@pytest.fixture
def rig_for(tmp_path, pipeline, factory):
    rigs = []

    def make(settings: MqttSettings, photos=(None,), **kwargs) -> Rig:
        rig = Rig(tmp_path, pipeline, factory, settings, photos, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def wait_until(ready, timeout: float = 10.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout:g} s"
        time.sleep(0.02)


def ids_on(listener: Listener, topic: str = EVENTS) -> list[str]:
    return [message.json["id"] for message in listener.on(topic)]


# --- Events, state, availability, discovery --------------------------------------------


def test_a_grant_through_the_door_loop_reaches_a_subscriber_with_the_event_id(
        tmp_path, broker, rig_for, people):
    colin = people["Colin_Powell"]
    settings = MqttSettings.from_config(config_for(
        tmp_path, broker, snapshot_base_url="http://door.example:8080/"))
    rig = rig_for(settings, [None, colin[1], None, STRANGERS[0]])
    rig.enrol("Colin Powell", colin[0])
    listener = Listener(broker, [EVENTS, STATE])
    rig.publisher.start()
    rig.run()
    granted = rig.events.list(kind="granted")[0]
    listener.wait_for(lambda got: len(got.on(EVENTS)) == 2, what="the grant and the stranger")
    grant, stranger = (message.json for message in listener.on(EVENTS))
    assert grant["id"] == granted.id and grant["kind"] == grant["event_type"] == "granted"
    assert grant["person_name"] == "Colin Powell" and grant["score"] == granted.score
    assert grant["person_id"] == granted.person_id and grant["at"] == granted.at
    assert grant["door"] == DOOR and grant["version"] == 1
    base = f"http://door.example:8080/api/events/{granted.id}"
    assert grant["snapshots"] == {"face": f"{base}/face.jpg", "frame": f"{base}/frame.jpg"}
    assert (stranger["kind"], stranger["person_id"], stranger["reason"]) == \
        ("unknown", None, "stranger")
    assert not any(message.retain for message in listener.on(EVENTS))
    # The strike: locked at connection, unlocked by the grant, locked again.
    listener.wait_for(lambda got: [m.json["lock"] for m in got.on(STATE)][-1:] == ["locked"]
                      and len(got.on(STATE)) >= 3, what="the state after the grant")
    locks = [message.json["lock"] for message in listener.on(STATE)]
    assert locks[0] == "locked" and "unlocked" in locks
    assert all(message.json["door"] in ("open", "closed") for message in listener.on(STATE))
    wait_until(lambda: rig.waiting() == 0, what="the outbox emptying")


def test_discovery_is_retained_grouped_as_one_device_and_sent_again_for_home_assistant(
        tmp_path, broker, rig_for):
    rig = rig_for(MqttSettings.from_config(config_for(tmp_path, broker)))
    rig.publisher.start()
    wait_until(lambda: rig.publisher.connected, what="connecting")
    time.sleep(0.3)
    late = Listener(broker, ["homeassistant/#", f"facegate/{DOOR}/#"])  # after the fact
    late.wait_for(lambda got: len(got.on("homeassistant/+/+/+/config")) == 3
                  and got.on(AVAILABILITY) and got.on(STATE), what="the retained messages")
    configs = {m.topic: m for m in late.on("homeassistant/+/+/+/config")}
    assert all(m.retain for m in configs.values())
    assert late.on(AVAILABILITY)[0].text == "online" and late.on(AVAILABILITY)[0].retain
    assert late.on(STATE)[0].retain
    node = f"facegate_{DOOR}"
    # With commands off the strike is no lock: its discovery was emptied, so none is kept.
    assert f"homeassistant/lock/{node}/strike/config" not in configs
    entities = {topic: message.json for topic, message in configs.items()}
    strike = entities[f"homeassistant/binary_sensor/{node}/strike/config"]
    door = entities[f"homeassistant/binary_sensor/{node}/door/config"]
    access = entities[f"homeassistant/event/{node}/access/config"]
    assert (strike["device_class"], door["device_class"]) == ("lock", "door")
    assert strike["state_topic"] == door["state_topic"] == STATE
    assert access["state_topic"] == EVENTS and "granted" in access["event_types"]
    for entity in (strike, door, access):
        assert entity["availability_topic"] == AVAILABILITY
        assert entity["device"]["identifiers"] == [node]
    assert len({entity["unique_id"] for entity in (strike, door, access)}) == 3
    before = len(late.on("homeassistant/+/+/+/config"))
    publish_as(broker, "homeassistant/status", "online")  # Home Assistant has restarted
    late.wait_for(lambda got: len(got.on("homeassistant/+/+/+/config")) == before + 4,
                  what="discovery sent again")
    late.close()


def publish_as(broker: Mosquitto, topic: str, payload: str | bytes, *,
               account: str | None = None, retain: bool = False) -> mqtt.ReasonCode:
    """Publish one message (QoS 1, MQTT 5) as ``account``; the broker's answer to it."""
    answers: queue.Queue = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tester-{uuid.uuid4().hex}",
                         protocol=mqtt.MQTTv5)
    if account is not None:
        client.username_pw_set(account, PASSWORDS[account])
    if broker.tls is not None:
        client.tls_set(ca_certs=str(broker.tls.ca))
    client.on_publish = lambda _c, _u, _mid, code, _p: answers.put(code)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain)
        return answers.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def daemon_config(tmp_path: Path, broker: Mosquitto, name: str = "facegate.toml") -> Path:
    config = tmp_path / name
    config.write_text(f'[door]\nid = "{DOOR}"\n[liveness]\nenabled = false\n'
                      f'[mqtt]\nurl = "{broker.url}"\n')
    return config


def facegate(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "device", *args], env=env,
                            stdout=subprocess.DEVNULL, **popen)


def test_a_killed_door_is_offline_by_its_last_will_and_its_events_all_arrive_after_restart(
        tmp_path, broker, people):
    data, scene = tmp_path / "data", tmp_path / "scene"
    write_scene(scene, [people["Serena_Williams"][1], None, STRANGERS[0]], frames_each=5)
    config = daemon_config(tmp_path, broker)
    listener = Listener(broker, [f"facegate/{DOOR}/#"], persistent=True, client_id="site")
    run = ["run", "--config", str(config), "--data-dir", str(data), "--camera", str(scene),
           "--no-web"]
    killed = facegate(*run, stderr=subprocess.PIPE)
    try:
        listener.wait_for(lambda got: got.on(EVENTS), timeout=60, what="a first event")
        assert [m.text for m in listener.on(AVAILABILITY)] == ["online"]
    finally:
        killed.send_signal(signal.SIGKILL)  # no shutdown code runs: the broker's will speaks
        killed.wait(timeout=30)
        killed.stderr.close()
    listener.wait_for(lambda got: len(got.on(AVAILABILITY)) == 2, what="the last will")
    assert [m.text for m in listener.on(AVAILABILITY)] == ["online", "offline"]
    again = facegate(*run, "--exit-at-end", stderr=subprocess.PIPE, text=True)
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert f"MQTT: publishing to {broker.url} anonymously under facegate/{DOOR}/" in stderr
    assert "Traceback" not in stderr
    listener.wait_for(lambda got: len(got.on(AVAILABILITY)) == 4, what="online, then offline")
    assert [m.text for m in listener.on(AVAILABILITY)] == ["online", "offline"] * 2
    with Gallery(data / "facegate.db") as gallery:
        logged = [row[0] for row in gallery.db.execute("SELECT id FROM events ORDER BY rowid")]
        waiting = gallery.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    received = ids_on(listener)
    assert set(received) == set(logged) and waiting == 0  # none lost, the kill's included
    assert "unclean_shutdown" in [m.json["kind"] for m in listener.on(EVENTS)]
    assert listener.on(STATE)[-1].json["lock"] == "locked"
    listener.close()


def test_with_the_broker_away_the_door_keeps_deciding_and_no_event_is_lost(
        tmp_path, broker, rig_for, people):
    colin = people["Colin_Powell"]
    rig = rig_for(MqttSettings.from_config(config_for(tmp_path, broker)),
                  [colin[1], None, STRANGERS[0], None, colin[2]])
    rig.enrol("Colin Powell", colin[0])
    site = Listener(broker, [EVENTS], persistent=True, client_id="site-server")
    rig.publisher.start()
    rig.events.record("exit_button", reason="before the outage")
    site.wait_for(lambda got: len(got.on(EVENTS)) == 1, what="the first event")
    broker.stop()
    wait_until(lambda: not rig.publisher.connected, what="the door noticing")
    rig.run()  # the door decides while the broker is away
    assert len(rig.energised_periods()) == 1  # Colin: the relay never waited
    decided = [event.kind for event in rig.events.list()][::-1][1:]
    assert decided == ["granted", "unknown"]
    for number in range(40):
        rig.events.record("door_closed", reason=f"during the outage {number}")
    rig.restart()  # the door restarts, the broker still away
    rig.publisher.start()
    for number in range(20):
        rig.events.record("exit_button", reason=f"after the restart {number}")
    made = rig.ids()
    assert len(made) == 1 + 2 + 40 + 20 and rig.waiting() == len(made) - 1
    broker.start()
    site.wait_for(lambda got: len(got.on(EVENTS)) >= len(made), timeout=30,
                  what="every event made meanwhile")
    time.sleep(0.3)
    assert ids_on(site) == made  # all of them, once each, in the order they happened
    wait_until(lambda: rig.waiting() == 0, what="the outbox emptying")
    site.close()


def test_an_event_is_sent_again_only_when_its_delivery_could_not_be_recorded(
        tmp_path, broker, rig_for):
    """The at-least-once case of docs/mqtt.md: the broker took the event, but the door could
    not remove its outbox row (here the database is locked by another writer) before it
    stopped; the next start sends it again, with the same id."""
    rig = rig_for(MqttSettings.from_config(config_for(tmp_path, broker)), busy_timeout_s=0.1)
    site = Listener(broker, [EVENTS])
    event = rig.events.record("exit_button")
    other_writer = sqlite3.connect(rig.db_path, isolation_level=None)
    other_writer.execute("BEGIN IMMEDIATE")
    rig.publisher.start()
    site.wait_for(lambda got: len(got.on(EVENTS)) == 1, what="the event")
    time.sleep(0.3)
    rig.restart()  # stopped with the row still there
    other_writer.execute("COMMIT")
    other_writer.close()
    assert rig.waiting() == 1
    rig.publisher.start()
    site.wait_for(lambda got: len(got.on(EVENTS)) == 2, what="the event again")
    assert ids_on(site) == [event.id, event.id]  # a receiver keeps one, by id
    wait_until(lambda: rig.waiting() == 0, what="the outbox emptying")
    site.close()


def test_a_door_that_cannot_reach_its_broker_still_opens_and_starts(tmp_path, rig_for, people,
                                                                     broker):
    broker.stop()  # nobody listens on its port now
    colin = people["Colin_Powell"]
    rig = rig_for(MqttSettings.from_config(config_for(tmp_path, broker)), [colin[1]])
    rig.enrol("Colin Powell", colin[0])
    rig.publisher.start()
    started = time.monotonic()
    rig.run()
    assert len(rig.energised_periods()) == 1 and time.monotonic() - started < 5
    assert rig.waiting() == 1


# --- The outbox ----------------------------------------------------------------------------


def test_an_event_row_never_exists_without_its_outbox_row(tmp_path):
    log = EventLog(tmp_path / "facegate.db", tmp_path / "snapshots", door_id=DOOR,
                   stdout=io.StringIO(), outbox=OutboxFeed())
    # The outbox refuses a row: the event's row is refused with it, and kept for later.
    log.db.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN"
                   " SELECT RAISE(ABORT, 'the outbox is full'); END")
    refused = log.record("exit_button")
    assert log.count() == 0
    log.db.execute("DROP TRIGGER refuse")
    assert log.restore_unsaved() == 1
    (row,) = log.db.execute("SELECT event_id, payload FROM outbox").fetchall()
    assert row[0] == refused.id and json.loads(row[1])["id"] == refused.id
    # And a reader in another connection, at any instant, finds both or neither.
    seen_alone, done = [], threading.Event()

    def read() -> None:
        with sqlite3.connect(tmp_path / "facegate.db") as reader:
            while not done.is_set():
                seen_alone.append(reader.execute(
                    "SELECT COUNT(*) FROM events WHERE id NOT IN"
                    " (SELECT event_id FROM outbox)").fetchone()[0])
        reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    for _ in range(200):
        log.record("door_closed")
    done.set()
    thread.join()
    log.close()
    assert len(seen_alone) > 10 and set(seen_alone) == {0}


def test_with_mqtt_off_nothing_is_written_to_the_outbox(tmp_path):
    config = config_for(tmp_path, None)
    assert not config.mqtt.enabled
    with open_event_log(config) as log:
        assert log.outbox is None
        log.record("exit_button")
        assert log.count() == 1
        assert log.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_erasing_a_person_or_expiring_events_takes_their_waiting_messages(tmp_path):
    now = [datetime(2026, 11, 30, 12, tzinfo=UTC)]
    log = EventLog(tmp_path / "facegate.db", tmp_path / "snapshots", door_id=DOOR,
                   stdout=io.StringIO(), outbox=OutboxFeed(), clock=lambda: now[0],
                   retention=Retention(max_age_days=1))
    ada = log.record("granted", person_id="p-ada", person_name="Ada Lovelace", score=0.8)
    other = log.record("unknown", score=0.2)
    log.delete_person("p-ada")  # privacy: her name must not leave the door afterwards
    waiting = [row[0] for row in log.db.execute("SELECT event_id FROM outbox")]
    assert waiting == [other.id] and ada.id not in waiting
    now[0] += timedelta(days=2)
    log.record("door_closed")
    log.enforce()  # the stranger's event expires, and its message with it
    assert [json.loads(row[0])["kind"] for row in
            log.db.execute("SELECT payload FROM outbox")] == ["door_closed"]
    log.close()


def test_the_outbox_keeps_the_newest_and_says_how_many_it_dropped(tmp_path, caplog):
    log = EventLog(tmp_path / "facegate.db", tmp_path / "snapshots", door_id=DOOR,
                   stdout=io.StringIO(), outbox=OutboxFeed(max_events=5))
    made = [log.record("door_closed").id for _ in range(8)]
    with caplog.at_level(logging.WARNING, logger="device.events"):
        assert log.enforce()["outbox_dropped"] == 3
    kept = [row[0] for row in log.db.execute("SELECT event_id FROM outbox ORDER BY seq")]
    assert kept == made[3:] and log.count() == 8  # the events themselves stay in the log
    assert any("3 events waiting to be published were dropped" in r.getMessage()
               for r in caplog.records)
    outbox = Outbox(tmp_path / "facegate.db")
    assert [w.event_id for w in outbox.oldest(2, skip=[outbox.oldest(1)[0].seq])] == made[4:6]
    outbox.close()
    log.close()


# --- Commands ------------------------------------------------------------------------------


def command(action: str = "unlock", *, age: float = 0.0, nonce: str | None = None,
            **fields) -> str:
    at = utc_text(datetime.now(UTC) - timedelta(seconds=age))
    return json.dumps({"action": action, "at": at, "nonce": nonce or uuid.uuid4().hex,
                       **fields})


def test_commands_are_not_taken_while_they_are_off(tmp_path, broker, rig_for):
    rig = rig_for(MqttSettings.from_config(config_for(tmp_path, broker)))
    rig.publisher.start()
    wait_until(lambda: rig.publisher.connected, what="connecting")
    results = Listener(broker, [RESULT])
    publish_as(broker, COMMAND, command(seconds=1))
    time.sleep(0.5)
    rig.loop.step()
    assert rig.energised_periods() == [] and rig.door.is_locked
    assert results.on(RESULT) == [] and list_audit(rig.db_path) == []
    results.close()


def test_commands_over_plain_mqtt_stop_the_daemon_with_one_line(tmp_path, broker, capsys):
    config = tmp_path / "commands.toml"
    config.write_text(f'[mqtt]\nurl = "{broker.url}"\nusername = "{DOOR}"\n'
                      "accept_commands = true\n")
    result = subprocess.run([sys.executable, "-m", "device", "run", "--config", str(config),
                             "--data-dir", str(tmp_path / "data")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "mqtt.accept_commands" in result.stderr and "mqtts://" in result.stderr
    assert not (tmp_path / "data" / "facegate.running").exists()


def test_a_fresh_command_over_tls_unlocks_for_its_seconds_and_is_audited(
        tmp_path, tls_broker, rig_for):
    rig = rig_for(MqttSettings.from_config(door_account(tmp_path, tls_broker,
                                                        accept_commands=True)))
    ha = ("homeassistant", PASSWORDS["homeassistant"])
    listener = Listener(tls_broker, [RESULT, EVENTS, STATE], account=ha)
    rig.publisher.start()
    wait_until(lambda: rig.publisher.connected, what="connecting over TLS")
    time.sleep(0.3)  # its subscription to the command topic is in place
    nonce = uuid.uuid4().hex
    code = publish_as(tls_broker, COMMAND, command(seconds=1.0, nonce=nonce, by="ha-test"),
                      account="homeassistant")
    assert not code.is_failure
    listener.wait_for(lambda got: got.on(RESULT), what="the command's answer")
    answer = listener.on(RESULT)[0].json
    assert answer == {**answer, "nonce": nonce, "accepted": True, "result": "unlocked"}
    time.sleep(1.3)
    (period,) = rig.energised_periods()
    assert abs(period - 1.0) <= TOLERANCE
    (audited,) = list_audit(rig.db_path)
    assert (audited["action"], audited["user"]) == ("unlock", "mqtt")
    assert audited["detail"] == {**audited["detail"], "via": "mqtt", "nonce": nonce,
                                 "seconds": 1.0, "by": "ha-test"}
    rig.loop.step()  # the door loop logs the manual unlock, which is published like any
    listener.wait_for(lambda got: got.on(EVENTS), what="the manual_unlock event")
    event = listener.on(EVENTS)[0].json
    assert (event["kind"], event["reason"]) == ("manual_unlock", "mqtt")
    assert "unlocked" in [m.json["lock"] for m in listener.on(STATE)]
    listener.close()


def test_stale_replayed_retained_and_malformed_commands_are_refused(
        tmp_path, tls_broker, rig_for):
    rig = rig_for(MqttSettings.from_config(door_account(tmp_path, tls_broker,
                                                        accept_commands=True)))
    listener = Listener(tls_broker, [RESULT],
                        account=("homeassistant", PASSWORDS["homeassistant"]))
    # Kept by the broker and handed to the door when it subscribes, whatever its age.
    publish_as(tls_broker, COMMAND, command(), account="homeassistant", retain=True)
    rig.publisher.start()
    wait_until(lambda: rig.publisher.connected, what="connecting over TLS")
    time.sleep(0.3)
    used = uuid.uuid4().hex
    sent = [command(nonce=used, seconds=0.5),  # accepted: the one unlock
            command(nonce=used, seconds=0.5),  # the same again: a replay
            command(age=120),  # an old match re-sent
            command(age=-120),  # from a clock far ahead
            command("open"), "unlock please", command(seconds=600)]
    listener.wait_for(lambda got: len(got.on(RESULT)) == 1, what="the retained one's answer")
    for payload in sent:
        publish_as(tls_broker, COMMAND, payload, account="homeassistant")
    listener.wait_for(lambda got: len(got.on(RESULT)) == len(sent) + 1, what="every answer")
    answers = [m.json for m in listener.on(RESULT)]
    assert [a["accepted"] for a in answers] == [False, True] + [False] * (len(sent) - 1)
    reasons = " | ".join(a["reason"] for a in answers if a["reason"])
    for said in ("replayed", "stale command is refused: its time is 120 s old",
                 "120 s in the future", '"action" must be', "JSON object", '"seconds"',
                 "retained"):
        assert said in reasons
    time.sleep(0.7)
    assert len(rig.energised_periods()) == 1
    actions = [row["action"] for row in list_audit(rig.db_path)]
    assert actions.count("unlock") == 1 and actions.count("command_refused") == len(sent)
    assert rig.publisher.refused == len(sent)
    publish_as(tls_broker, f"facegate/{DOOR}/command", "", account="homeassistant",
               retain=True)  # clear the retained one
    listener.close()


def test_the_documented_acl_keeps_each_door_to_its_own_topics(tls_broker):
    def allowed(account: str, topic: str) -> bool:
        return not publish_as(tls_broker, topic, "{}", account=account).is_failure

    assert allowed(DOOR, EVENTS) and allowed(DOOR, AVAILABILITY)
    assert allowed(DOOR, f"homeassistant/event/facegate_{DOOR}/access/config")
    assert not allowed("other-door", EVENTS)  # no forged events of another door
    assert not allowed("other-door", COMMAND)  # nor unlocking it
    assert not allowed(DOOR, COMMAND)  # a door does not command itself either
    assert not allowed(DOOR, "homeassistant/event/facegate_other-door/access/config")
    assert allowed("homeassistant", COMMAND) and not allowed("homeassistant", EVENTS)


def test_the_command_gate_checks_time_nonce_and_fields():
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    gate = CommandGate(now=lambda: now, monotonic=lambda: 100.0)
    ok = gate.check(json.dumps({"action": "unlock", "at": "2026-11-30T13:00:10+01:00",
                                "nonce": "abcdefgh", "seconds": 2}).encode())
    assert (ok.action, ok.seconds, ok.at) == ("unlock", 2.0, "2026-11-30T12:00:10.000Z")
    assert gate.check(json.dumps({"action": "lock", "at": now.timestamp() - 5,
                                  "nonce": "12345678"}).encode()).seconds is None
    for payload, said in [({"action": "unlock", "at": "2026-11-30T12:00:00",
                            "nonce": "zonelesss"}, "time zone"),
                          ({"action": "unlock", "at": "2026-11-30T12:00:00Z"}, "nonce"),
                          ({"action": "unlock", "at": "2026-11-30T12:00:00Z", "nonce": "short"},
                           "nonce"),
                          ({"action": "unlock", "at": True, "nonce": "abcdefghij"}, "at"),
                          ({"action": "unlock", "at": "2026-11-30T12:00:00Z",
                            "nonce": "abcdefghij", "extra": 1}, "unknown field"),
                          ([1, 2], "JSON object")]:
        with pytest.raises(CommandRefused, match=said):
            gate.check(json.dumps(payload).encode())


# --- facegate mqtt test ----------------------------------------------------------------


def mqtt_test(capsys, config: Path, *extra: str) -> tuple[int, list[str]]:
    status = main(["mqtt", "test", "--config", str(config), "--timeout", "3", *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out.splitlines()


def toml_of(tmp_path: Path, broker: Mosquitto, *, password: str, commands: bool = False,
            ca: bool = True) -> Path:
    secret = tmp_path / "door-password"
    secret.write_text(password + "\n")
    config = tmp_path / "door.toml"
    config.write_text(
        f'[door]\nid = "{DOOR}"\n[mqtt]\nurl = "{broker.url}"\nusername = "{DOOR}"\n'
        f'password_file = "{secret}"\n' + (f'ca_file = "{broker.tls.ca}"\n' if ca else "")
        + f"accept_commands = {str(commands).lower()}\n")
    return config


def test_mqtt_test_says_what_works_one_line_per_check(tmp_path, tls_broker, capsys):
    status, lines = mqtt_test(capsys, toml_of(tmp_path, tls_broker, password=PASSWORDS[DOOR],
                                              commands=True))
    assert status == 0, lines
    assert lines[0] == f"testing {tls_broker.url} as '{DOOR}' for door {DOOR}"
    assert [line.split(":")[0] for line in lines[1:]] == \
        ["connect", "TLS", "auth", "publish", "commands"]
    assert all(": ok (" in line for line in lines[1:])
    assert "verified against CA" in lines[2] and f"facegate/{DOOR}/test" in lines[4]


def test_mqtt_test_names_the_check_that_fails(tmp_path, tls_broker, capsys):
    status, lines = mqtt_test(capsys, toml_of(tmp_path, tls_broker, password="wrong"))
    assert status == 1 and lines[-1].startswith("auth: FAILED (the broker refused the door")
    status, lines = mqtt_test(capsys, toml_of(tmp_path, tls_broker, password="x", ca=False))
    assert status == 1 and lines[-1].startswith("TLS: FAILED (the broker's certificate is not"
                                                " trusted")
    tls_broker.stop()
    status, lines = mqtt_test(capsys, toml_of(tmp_path, tls_broker, password="x"))
    assert status == 1 and lines[-1].startswith("connect: FAILED (cannot reach 127.0.0.1:")


def test_mqtt_test_over_plain_mqtt_warns_and_without_a_url_says_mqtt_is_off(
        tmp_path, broker, capsys):
    config = daemon_config(tmp_path, broker)
    status, lines = mqtt_test(capsys, config)
    assert status == 0
    assert lines[2].startswith("TLS: skipped (mqtt:// is plain text")
    assert lines[-1].startswith("commands: skipped")
    off = tmp_path / "off.toml"
    off.write_text("[mqtt]\n")
    assert main(["mqtt", "test", "--config", str(off)]) == 1
    assert capsys.readouterr().err.strip() == \
        "facegate: MQTT is off: set [mqtt] url in the configuration (docs/mqtt.md) to test it"


def test_a_restored_backup_brings_no_waiting_messages(tmp_path):
    from device.backup import backup_database, restore_database

    live = tmp_path / "facegate.db"
    with EventLog(live, tmp_path / "snapshots", door_id=DOOR, stdout=io.StringIO(),
                  outbox=OutboxFeed()) as log:
        log.record("exit_button")
        backup_database(live, tmp_path / "backup.db")
        log.record("door_closed")
    restore_database(live, tmp_path / "backup.db")
    with sqlite3.connect(live) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    db.close()
