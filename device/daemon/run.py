"""``facegate run``: build the daemon from the configuration and run it until stopped.

This is the one place that turns configuration into parts (camera, pins, models, database);
tests build ``DoorLoop`` from their own parts instead. Whatever happens, the door is locked
when this returns: at start (the relay starts de-energised), on SIGTERM and SIGINT, on an
exception, and at the end of a replay.

With ``[mqtt] url`` set, the door's events, state and availability also go to the site's
broker (``device/mqtt/``): the event log writes each event's message to the outbox in the
same transaction as its row, and a sender thread publishes them; the door loop never waits
for the broker.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from device.camera import ResilientCamera, open_camera
from device.camera.factory import demo_allowed
from device.config import Config
from device.daemon.live import LiveFrames
from device.daemon.loop import DoorLoop, LoopSettings
from device.daemon.running import clear_running, lock_data_dir, mark_running
from device.daemon.scenes import demo_scene
from device.daemon.systemd import Notifier
from device.door import Door, DoorSettings
from device.errors import FacegateError, SettingInvalid
from device.events import EventLog, Retention
from device.gallery.store import Gallery
from device.identification import Decision, Identifier, embedder_name
from device.liveness import LivenessCheck, LivenessSettings, liveness_loader
from device.site.member import SiteLink
from device.site_settings import apply_site_settings, read_site_settings, site_settings_seq
from device.vision.pipeline import FacePipeline

if TYPE_CHECKING:
    from flask import Flask

    from device.events.outbox import OutboxFeed
    from device.mqtt.publisher import MqttPublisher
    from device.web.server import WebServer

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEMO_PHOTOS = PROJECT_DIR / "tests" / "data"


def door_settings(config: Config) -> DoorSettings:
    d = config.door
    return DoorSettings(
        relay_pin=d.relay_pin, relay_active_high=d.relay_active_high,
        unlock_seconds=d.unlock_seconds, contact_pin=d.contact_pin,
        contact_closed_is_pressed=d.contact_closed_is_pressed,
        held_open_seconds=d.held_open_seconds, lock_on_close=d.lock_on_close,
        exit_button_pin=d.exit_button_pin, green_led_pin=d.green_led_pin,
        red_led_pin=d.red_led_pin, buzzer_pin=d.buzzer_pin)


def loop_settings(config: Config) -> LoopSettings:
    r = config.recognition
    return LoopSettings(min_interocular_px=r.min_interocular_px, max_faces=r.max_faces,
                        cooldown_seconds=r.cooldown_seconds, votes_needed=r.votes_needed,
                        votes_window=r.votes_window)


def liveness_settings(config: Config) -> LivenessSettings:
    return LivenessSettings.from_config(config.liveness)


def liveness_check(config: Config) -> LivenessCheck:
    """The door's liveness check, its model loaded when first needed (``require`` at start).
    Built even when ``liveness.enabled`` is false, so the settings page may turn it on."""
    return LivenessCheck(liveness_loader(config.recognition.models_dir),
                         liveness_settings(config))


def open_event_log(config: Config, outbox: OutboxFeed | None = None) -> EventLog:
    """The daemon's access log; ``outbox``: also queue each event for the broker; a member
    of a site (``[site] url``) also queues each for the site."""
    return EventLog(config.paths.database, config.paths.snapshots, door_id=config.door.id,
                    retention=retention_for(config), frames=config.events.snapshot_frames,
                    outbox=outbox, uplink=config.site.is_member)


def start_site_link(config: Config) -> SiteLink:
    """A member door's link to its site, started (it syncs in the background: a site that is
    away makes the replica older, never the door slower)."""
    link = SiteLink(config.site, config.paths.database, config.paths.snapshots,
                    models_dir=config.recognition.models_dir)
    state = link.state()
    log.info("member of the site %s: replica at seq %d, last heard %s; syncing every %g s",
             config.site.url, state.seq, state.heard_at or "never", config.site.poll_seconds)
    link.start()
    return link


def start_mqtt(config: Config, door: Door) -> MqttPublisher:
    """The MQTT publisher of ``[mqtt]``, started (it connects in the background: a broker
    that is down delays the messages, never the door)."""
    from device.mqtt.publisher import MqttPublisher
    from device.mqtt.settings import MqttSettings

    settings = MqttSettings.from_config(config)
    publisher = MqttPublisher(settings, config.paths.database, door=door)
    log.info("%s", settings.describe())
    publisher.start()
    return publisher


def demo_folder(config: Config) -> Path:
    """The bundled demo replay, written once under the data directory."""
    return demo_scene(config.paths.data_dir / "demo-replay", DEMO_PHOTOS)


class SiteSettingsWatch:
    """Applies the settings page's changes to the running door, checked once a second."""

    def __init__(self, config: Config, loop: DoorLoop, door: Door, events: EventLog) -> None:
        self.file_config = config
        self.loop, self.door, self.events = loop, door, events
        self._seen = site_settings_seq(config.paths.database)
        self._next = 0.0

    def poll(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + 1.0
        seq = site_settings_seq(self.file_config.paths.database)
        if seq == self._seen:
            return
        self._seen = seq
        config = effective_config(self.file_config)
        self.apply(config)
        log.info("settings changed on the admin page: now %s", {
            key: value for key, value in read_site_settings(config.paths.database).items()})

    def apply(self, config: Config) -> None:
        # The identifier's pipeline, not the one started with: the gallery may have moved
        # to another model since (facegate reembed).
        pipeline = self.loop.identifier.pipeline
        self.loop.apply(loop_settings(config), decision_for(config, pipeline),
                        liveness_settings(config))
        self.door.lock.unlock_seconds = config.door.unlock_seconds
        if self.door.contact is not None:
            self.door.contact.held_open_seconds = config.door.held_open_seconds
        self.events.retention = retention_for(config)
        if config.camera.source != self.file_config.camera.source:
            log.warning("camera.source changed to %r: takes effect after a restart",
                        config.camera.source)


def effective_config(config: Config) -> Config:
    """The file's configuration with the settings page's values on top (those that fit).

    Never raises for a stored value: a hand-edited row that does not fit (a wrong type, a
    value out of range, a pair that disagrees with the file) is logged and left out, one
    key at a time, so the door keeps running on the file's value for that key.
    """
    try:
        settings = read_site_settings(config.paths.database)
    except FacegateError as exc:
        log.error("settings from the admin page ignored: %s", exc)
        return config
    while True:
        try:
            return apply_site_settings(config, settings)
        except SettingInvalid as exc:
            if exc.key not in settings:
                log.error("settings from the admin page ignored: %s", exc)
                return config
            log.error("site setting %s ignored: %s", exc.key, exc)
            settings = {key: value for key, value in settings.items() if key != exc.key}
        except FacegateError as exc:
            log.error("settings from the admin page ignored: %s", exc)
            return config


def decision_for(config: Config, pipeline: FacePipeline) -> Decision:
    return Decision.from_card(pipeline.embedder_card.threshold, config.recognition.threshold,
                              config.recognition.margin)


def retention_for(config: Config) -> Retention:
    e = config.events
    return Retention(max_age_days=e.max_age_days, max_events=e.max_events,
                     max_snapshot_bytes=e.max_snapshot_bytes, min_free_bytes=e.min_free_bytes)


def web_app(config: Config, door: Door, live: LiveFrames) -> Flask:
    """The admin page's app, sharing this process's door and camera view."""
    from device.web import create_app
    from device.web.server import load_or_create_secret_key
    from device.web.services import Services

    # The page gets its own pipeline (TFLite interpreters are not shared across threads),
    # loaded on its first enrolment.
    services = Services(database=config.paths.database, snapshots=config.paths.snapshots,
                        models_dir=config.recognition.models_dir, door=door, live=live,
                        config=config)
    return create_app({"SECRET_KEY": load_or_create_secret_key(config.paths.data_dir),
                       "DATABASE": config.paths.database,
                       "SNAPSHOTS_DIR": config.paths.snapshots,
                       "SESSION_COOKIE_SECURE": config.web.cookie_secure}, services=services)


def start_web(config: Config, door: Door, live: LiveFrames) -> WebServer:
    """The admin page on ``web.listen`` (:func:`web_app`), served from a thread."""
    from device.web.server import WebServer, setup_link

    server = WebServer(web_app(config, door, live), config.web.host, config.web.port)
    log.info("admin page on %s/", server.url)
    link = setup_link(config.paths.database, server.url)
    if link:
        log.warning("no admin yet: create the first one at %s (works once, for 24 hours), "
                    "or run `facegate admin add NAME`", link)
    return server


def log_demo(config: Config, liveness: bool) -> None:
    """What to do with the demo replay, which shows photographs, not people."""
    log.info(
        "no camera found: replaying the demo (photos of two people and two strangers). Each "
        "decision is a JSON line on stdout; nobody is enrolled yet, so they are 'unknown'%s. "
        "Enrol someone from another terminal and watch the decisions change:\n"
        "  .venv/bin/facegate enroll --data-dir %s --name 'Colin Powell' %s\n"
        "  .venv/bin/facegate events --data-dir %s",
        " (or 'attack')" if liveness else "", config.paths.data_dir,
        DEMO_PHOTOS / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg",
        config.paths.data_dir)
    if liveness:
        log.info("the demo replays photographs, which the liveness check may rightly judge to "
                 "be photos held up to the camera ('attack', never a grant); to watch grants, "
                 "turn it off in var/facegate.toml:\n  [liveness]\n  enabled = false")


def run_daemon(config: Config, *, camera_spec: str | None = None, exit_at_end: bool = False,
               stop: threading.Event | None = None) -> int:
    """Run the door until ``stop`` is set, SIGTERM or SIGINT (or a replay's end with
    ``exit_at_end``); returns 0. Raises ``DataDirInUse`` when another daemon holds the data
    folder, before touching the database, the pins' relay or the camera."""
    stop = stop or threading.Event()
    config.paths.data_dir.mkdir(parents=True, exist_ok=True)
    with lock_data_dir(config.paths.data_dir):  # one daemon per data folder, for its life
        return _run_locked(config, camera_spec=camera_spec, exit_at_end=exit_at_end,
                           stop=stop)


def _run_locked(config: Config, *, camera_spec: str | None, exit_at_end: bool,
                stop: threading.Event) -> int:
    Gallery(config.paths.database).close()  # create or migrate the file before anyone reads it
    file_config, config = config, effective_config(config)
    notifier = Notifier()
    spec = camera_spec or config.camera.source
    size = (config.camera.width, config.camera.height)
    door_events: queue.Queue = queue.Queue()
    door = Door(door_settings(config), on_event=lambda kind, detail:
                door_events.put((kind, detail)))
    web: WebServer | None = None
    publisher: MqttPublisher | None = None
    site_link: SiteLink | None = None
    marker: Path | None = None

    def on_signal(signum: int, _frame: object) -> None:
        door.relock()  # at once, not after the frame being processed
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Gallery(config.paths.database) as gallery:
            # A gallery enrolled with another model than the configured one stops here, with
            # what to do: the door would otherwise match every face against nothing.
            model = embedder_name(gallery, config.recognition.model or None)
        pipeline = FacePipeline.from_models_dir(config.recognition.models_dir, embedder=model)
        decision = decision_for(config, pipeline)
        liveness = liveness_check(config)
        if liveness.enabled:
            # A door that claims to refuse photos must not run without its model: the start
            # stops here with one sentence, the relay never energised.
            liveness.require()

        def load_model(name: str) -> tuple[FacePipeline, Decision]:
            # The gallery moved to another model while running (facegate reembed); a model
            # pinned in the configuration is not silently replaced.
            if config.recognition.model and config.recognition.model != name:
                raise FacegateError(f"recognition.model pins {config.recognition.model}")
            loaded = FacePipeline.from_models_dir(config.recognition.models_dir, embedder=name)
            return loaded, decision_for(effective_config(file_config), loaded)

        demo = None
        if spec == "auto" and demo_allowed(real_gpio=door.has_real_pins):
            demo = demo_folder(config)
        camera = ResilientCamera(lambda: open_camera(
            spec, demo_folder=demo, fps=config.camera.fps, size=size, loop=not exit_at_end,
            rotation=config.camera.rotation, mirror=config.camera.mirror))
        live = LiveFrames()
        outbox = None
        if config.mqtt.enabled:
            publisher = start_mqtt(config, door)
            outbox = publisher.settings.outbox_feed(on_added=publisher.wake)
        with Gallery(config.paths.database) as gallery, \
                open_event_log(config, outbox) as events, camera:
            events.restore_unsaved()  # events the database refused before the last stop
            marker = mark_running(config.paths.data_dir, events)
            identifier = Identifier(pipeline, gallery, decision, load_model=load_model)
            loop = DoorLoop(camera=camera, identifier=identifier,
                            door=door, events=events, settings=loop_settings(config),
                            door_events=door_events, notifier=notifier, live=live,
                            liveness=liveness)
            loop.on_each_frame = SiteSettingsWatch(file_config, loop, door, events).poll
            if config.site.is_member:
                site_link = start_site_link(config)
                loop.extra_refusal = site_link.refusal
            if config.web.enabled:
                try:
                    web = start_web(config, door, live)
                except OSError as exc:  # the door is the main job: it runs without the page
                    log.error("admin page not started on %s: %s", config.web.listen,
                              exc.strerror or exc)
            people = gallery.counts()["people"]
            log.info("facegate running: door %s, camera %s, model %s (threshold %.3f for %d "
                     "people, margin %.3f), %s, data in %s", config.door.id, camera.name,
                     pipeline.model_name, identifier.threshold, people, decision.margin,
                     liveness.describe(config.recognition.votes_window),
                     config.paths.data_dir)
            if "demo-replay" in camera.name:
                log_demo(config, liveness.enabled)
            if not camera.is_up:
                # The door runs locked, retrying the camera, rather than exiting: a restart
                # loop would not fix a cable, and the page stays up to show what is wrong.
                log.error("no camera: the door stays locked until one answers (retrying): %s",
                          camera.last_error)
            notifier.ready(f"watching {camera.name}")
            started = time.monotonic()
            loop.run(stop)
            elapsed = time.monotonic() - started
            log.info("stopped after %d frames in %.1f s (%.1f fps), %d grants", loop.frames,
                     elapsed, loop.frames / elapsed if elapsed else 0.0, loop.grants)
    finally:
        notifier.stopping()
        door.close()  # fail-secure: the relay is de-energised whatever happened above
        if publisher is not None:
            publisher.close()  # the last events and state, then "offline"
        if site_link is not None:
            site_link.stop()
        if web is not None:
            web.close()
        if marker is not None:
            clear_running(marker)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
