"""`facegate info`: the whole door at a glance for a person, every fact in `--json`."""

from __future__ import annotations

import json
import re
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True,
                          text=True, timeout=120)


def test_info_summarises_door_camera_pins_web_mqtt_models_and_data(tmp_path):
    config = tmp_path / "facegate.toml"
    config.write_text(f"""
[door]
id = "back-door"
relay_pin = 27
contact_pin = 22
[camera]
source = "{tmp_path}"
rotation = 90
[web]
listen = "0.0.0.0:8443"
[mqtt]
url = "mqtt://broker.lan:1884"
[paths]
data_dir = "{tmp_path / 'data'}"
""")
    result = run("info", "--config", str(config))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = result.stdout
    assert "{" not in text  # no Python dicts
    lines = dict(re.split(r" {2,}", line, maxsplit=1) for line in text.splitlines())
    assert lines["door"].startswith("back-door")
    assert str(tmp_path) in lines["camera"] and "turned 90 degrees" in lines["camera"]
    assert "relay GPIO27" in lines["pins"] and "contact GPIO22" in lines["pins"]
    assert lines["web page"].endswith(":8443")
    assert lines["MQTT"].startswith("mqtt://broker.lan:1884")
    assert "threshold" in lines["embedder"] and "threshold" in lines["liveness"]
    assert lines["gallery"].startswith("none yet")
    assert lines["data folder"] == str(tmp_path / "data")
    assert "every SHA-256 right" in lines["models"]

    facts = json.loads(run("info", "--json", "--config", str(config)).stdout)
    assert facts["door"]["pins"]["relay"] == 27 and facts["door"]["id"] == "back-door"
    assert facts["camera"]["source"] == str(tmp_path)
    assert facts["mqtt"]["broker"] == "mqtt://broker.lan:1884"
    assert facts["web"]["url"].endswith(":8443")


def test_info_says_what_auto_would_open_without_opening_it(tmp_path, monkeypatch):
    config = tmp_path / "facegate.toml"
    config.write_text('[camera]\nsource = "auto"\n')
    monkeypatch.delenv("FACEGATE_CAMERA", raising=False)
    auto = json.loads(run("info", "--json", "--config", str(config)).stdout)["camera"]
    assert auto["resolves_to"].startswith("tries the Pi camera")
    assert "then /dev/video0" in auto["resolves_to"] and "demo replay" in auto["resolves_to"]
    monkeypatch.setenv("FACEGATE_CAMERA", "/srv/clips/door.mp4")
    overridden = json.loads(run("info", "--json", "--config", str(config)).stdout)["camera"]
    assert overridden["resolves_to"] == "/srv/clips/door.mp4 (from $FACEGATE_CAMERA)"
