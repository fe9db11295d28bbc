"""What ``facegate info`` says of a door: its setup as facts (``--json``), and as a summary a
person reads at a glance.

Nothing here opens the camera or claims a pin: ``info`` is safe to run beside a running door.
What ``camera = "auto"`` would pick is told from what is installed and plugged in, in the
order ``device/camera/factory.py`` tries them (``facegate camera test`` opens it for real).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from device.config import Config

_PINS = ("relay_pin", "contact_pin", "exit_button_pin", "green_led_pin", "red_led_pin",
         "buzzer_pin")


def door_facts(config: Config) -> dict[str, Any]:
    """The door, camera, web page, MQTT and data folder of ``config``, as JSON-ready facts."""
    door = config.door
    return {
        "door": {"id": door.id, "unlock_seconds": door.unlock_seconds,
                 "relay_active_high": door.relay_active_high,
                 "pins": {name.removesuffix("_pin"): getattr(door, name) for name in _PINS}},
        "camera": {"source": config.camera.source, "resolves_to": camera_choice(config),
                   "size": [config.camera.width, config.camera.height],
                   "fps": config.camera.fps,
                   "rotation": config.camera.rotation, "mirror": config.camera.mirror},
        "web": {"enabled": config.web.enabled, "listen": config.web.listen,
                "url": _web_url(config)},
        "mqtt": _mqtt(config),
        "site": _site(config),
        "data_dir": str(config.paths.data_dir),
        "config_file": str(config.file) if config.file else None,
    }


def _site(config: Config) -> dict[str, Any] | None:
    """A member door's site, and where its copy of the site's gallery stands."""
    site = config.site
    if site.database:
        return {"role": "site server", "listen": site.listen}
    if not site.is_member:
        return None
    facts: dict[str, Any] = {"role": "member door", "url": site.url,
                             "poll_seconds": site.poll_seconds,
                             "max_replica_age": site.max_replica_age,
                             "when_stale": site.when_stale}
    if config.paths.database.exists():
        from device.gallery.store import Gallery
        from device.site.replica import read_state

        with Gallery(config.paths.database) as gallery:
            state = read_state(gallery)
        facts.update(replica_seq=state.seq, last_heard=state.heard_at)
    return facts


def camera_choice(config: Config) -> str:
    """What the camera setting opens, said without opening it."""
    from device.camera.factory import ENV_VAR, FIRST_WEBCAM

    source = config.camera.source.strip()
    override = os.environ.get(ENV_VAR, "").strip()
    if source == "auto" and override:
        return f"{override} (from ${ENV_VAR})"
    if source != "auto":
        return source
    pi = ("the Pi camera" if importlib.util.find_spec("picamera2")
          else "the Pi camera (picamera2 not installed)")
    webcam = (FIRST_WEBCAM if Path(FIRST_WEBCAM).exists()
              else f"{FIRST_WEBCAM} (no such device)")
    return f"tries {pi}, then {webcam}, then the demo replay (by hand in a source checkout only)"


def _web_url(config: Config) -> str | None:
    if not config.web.enabled:
        return None
    host, port = config.web.host, config.web.port
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def _mqtt(config: Config) -> dict[str, Any] | None:
    if not config.mqtt.enabled:
        return None
    url = urlsplit(config.mqtt.url)
    # The broker without any account in the URL: info is pasted into tickets.
    broker = f"{url.scheme}://{url.hostname}" + (f":{url.port}" if url.port else "")
    return {"broker": broker, "topics": f"{config.mqtt.topic_prefix}/{config.door.id}/",
            "accept_commands": config.mqtt.accept_commands}


def summary_lines(info: dict[str, Any]) -> list[str]:
    """``info``'s facts (:func:`door_facts` and the models') as aligned lines for a person."""
    door, camera, web = info["door"], info["camera"], info["web"]
    lines = [("door", f"{door['id']} (facegate {info['version']}; configuration "
                      f"{info['config_file'] or 'none: the defaults'})")]
    mounted = [f"{camera['size'][0]}x{camera['size'][1]} at {camera['fps']} fps"]
    if camera["rotation"]:
        mounted.append(f"turned {camera['rotation']} degrees")
    if camera["mirror"]:
        mounted.append("mirrored")
    lines.append(("camera", f"{camera['source']}"
                            + (f": {camera['resolves_to']}" if camera["source"] == "auto"
                               else "") + f"; {', '.join(mounted)}"))
    pins = door["pins"]
    relay = (f"relay GPIO{pins['relay']} (energised "
             f"{'high' if door['relay_active_high'] else 'low'}, {door['unlock_seconds']:g} s)")
    others = [f"{name.replace('_', ' ')} GPIO{pin}" for name, pin in pins.items()
              if name != "relay" and pin is not None]
    lines.append(("pins", ", ".join([relay, *others])
                          + ("" if others else "; no contact, button, LEDs or buzzer")))
    local = web["url"] and urlsplit(web["url"]).hostname in ("127.0.0.1", "localhost", "::1")
    lines.append(("web page", (web["url"] or "off")
                  + (" (this machine only: set web.listen to reach it from another)"
                     if local else "")))
    mqtt = info["mqtt"]
    lines.append(("MQTT", "off" if mqtt is None else
                  f"{mqtt['broker']}, topics {mqtt['topics']}, commands "
                  f"{'accepted' if mqtt['accept_commands'] else 'off'}"))
    site = info.get("site")
    if site and site["role"] == "member door":
        lines.append(("site", f"member of {site['url']}: copy at change "
                              f"{site.get('replica_seq', 0)}, last heard "
                              f"{site.get('last_heard') or 'never'}; past "
                              f"{site['max_replica_age']} without word: {site['when_stale']}"))
    elif site:
        lines.append(("site", f"site server, listening on {site['listen']}"))
    lines.append(("embedder", f"{info['embedder']}: threshold {info['threshold']:.4f} "
                              f"({info['threshold_source']}; FPIR {info['target_fpir']}), "
                              f"margin {info['margin']}, 1:1 "
                              f"{info['verification_threshold']}"))
    lines.append(("liveness", _liveness_text(info["liveness"])))
    gallery = info.get("gallery")
    lines.append(("gallery", "none yet at " + info["db"] if gallery is None else
                  f"{gallery['people']} people, "
                  + (", ".join(f"{n} templates of {model}"
                               for model, n in gallery["templates"].items()) or "no templates")
                  + f" ({info['db']})"))
    lines.append(("data folder", info["data_dir"]))
    zone = info["time_zone"]
    lines.append(("time zone", f"{zone['name']} (UTC{zone['utc_offset']}, from "
                               f"{zone['source']}): schedules are read in it"
                  if isinstance(zone, dict) else str(zone)))
    bad = [name for name, model in info["models"].items() if not model["sha256_ok"]]
    lines.append(("models", f"{len(info['models'])} in {info['models_dir']}"
                            + (f"; SHA-256 WRONG: {', '.join(bad)}" if bad
                               else ", every SHA-256 right")))
    width = max(len(label) for label, _ in lines)
    return [f"{label:<{width}}  {text}" for label, text in lines]


def _liveness_text(liveness: dict[str, Any]) -> str:
    state = "on" if liveness["enabled"] else "off (the door does not check)"
    if "error" in liveness:
        return f"{state}; model cannot be loaded: {liveness['error']}"
    return (f"{state}: {liveness['model']}, threshold {liveness['threshold']:.4g} "
            f"({liveness['threshold_source']}), {liveness['votes_needed']} of "
            f"{liveness['votes_window']} frames")
