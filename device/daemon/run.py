"""``facegate run``: build the daemon from the configuration and run it until stopped.

This is the one place that turns configuration into parts (camera, pins, models, database);
tests build ``DoorLoop`` from their own parts instead. Whatever happens, the door is locked
when this returns: at start (the relay starts de-energised), on SIGTERM and SIGINT, on an
exception, and at the end of a replay.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from pathlib import Path

from device.camera import ResilientCamera, open_camera
from device.config import Config
from device.daemon.loop import DoorLoop, LoopSettings
from device.daemon.scenes import demo_scene
from device.daemon.systemd import Notifier
from device.door import Door, DoorSettings
from device.events import EventLog, Retention
from device.gallery.store import Gallery
from device.identification import Decision, Identifier
from device.vision.pipeline import FacePipeline

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


def open_event_log(config: Config) -> EventLog:
    e = config.events
    return EventLog(
        config.paths.database, config.paths.snapshots, door_id=config.door.id,
        retention=Retention(max_age_days=e.max_age_days, max_events=e.max_events,
                            max_snapshot_bytes=e.max_snapshot_bytes,
                            min_free_bytes=e.min_free_bytes),
        frames=e.snapshot_frames)


def demo_folder(config: Config) -> Path:
    """The bundled demo replay, written once under the data directory."""
    return demo_scene(config.paths.data_dir / "demo-replay", DEMO_PHOTOS)


def run_daemon(config: Config, *, camera_spec: str | None = None, exit_at_end: bool = False,
               stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    config.paths.data_dir.mkdir(parents=True, exist_ok=True)
    notifier = Notifier()
    spec = camera_spec or config.camera.source
    size = (config.camera.width, config.camera.height)
    door_events: queue.Queue = queue.Queue()
    door = Door(door_settings(config), on_event=lambda kind, detail:
                door_events.put((kind, detail)))

    def on_signal(signum: int, _frame: object) -> None:
        door.relock()  # at once, not after the frame being processed
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        pipeline = FacePipeline.from_models_dir(config.recognition.models_dir,
                                                embedder=config.recognition.model or None)
        decision = Decision.from_card(pipeline.embedder_card.threshold,
                                      config.recognition.threshold, config.recognition.margin)
        demo = demo_folder(config) if spec == "auto" else DEMO_PHOTOS
        camera = ResilientCamera(lambda: open_camera(spec, demo_folder=demo,
                                                     fps=config.camera.fps, size=size,
                                                     loop=not exit_at_end))
        with Gallery(config.paths.database) as gallery, open_event_log(config) as events, \
                camera:
            loop = DoorLoop(camera=camera, identifier=Identifier(pipeline, gallery, decision),
                            door=door, events=events, settings=loop_settings(config),
                            door_events=door_events, notifier=notifier)
            people = gallery.counts()["people"]
            log.info("facegate running: door %s, camera %s, model %s (threshold %.3f, "
                     "margin %.3f), %d people enrolled, data in %s", config.door.id,
                     camera.name, pipeline.model_name, decision.threshold, decision.margin,
                     people, config.paths.data_dir)
            if "demo-replay" in camera.name:
                log.info(
                    "no camera found: replaying the demo (photos of two people and two "
                    "strangers). Each decision is a JSON line on stdout; nobody is enrolled "
                    "yet, so they are 'unknown'. Enrol someone from another terminal and "
                    "watch the grants appear:\n  .venv/bin/facegate enroll --data-dir %s "
                    "--name 'Colin Powell' %s\n  .venv/bin/facegate events --data-dir %s",
                    config.paths.data_dir,
                    DEMO_PHOTOS / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg",
                    config.paths.data_dir)
            notifier.ready(f"watching {camera.name}")
            started = time.monotonic()
            loop.run(stop)
            elapsed = time.monotonic() - started
            log.info("stopped after %d frames in %.1f s (%.1f fps), %d grants", loop.frames,
                     elapsed, loop.frames / elapsed if elapsed else 0.0, loop.grants)
    finally:
        notifier.stopping()
        door.close()  # fail-secure: the relay is de-energised whatever happened above
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
