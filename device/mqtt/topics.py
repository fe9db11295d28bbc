"""The door's topics and the messages on them, as plain values (no network here).

Under ``<topic_prefix>/<door_id>/`` (``facegate/front-door/`` by default):

- ``event``: every access-log event, QoS 1, not retained (``device.events.outbox``);
- ``state``: the strike and the door contact, retained, on every change and at connect;
- ``availability``: ``online`` / ``offline``, retained; ``offline`` is also the last will;
- ``command`` (read by the door, only with ``mqtt.accept_commands``) and
  ``command/result`` (its answers); ``test``: written by ``facegate mqtt test`` only.

And Home Assistant's MQTT discovery under ``<discovery_prefix>/`` (``homeassistant/``):
one device per door with the strike (a ``lock`` when commands are on, else a
``binary_sensor`` of class ``lock``), the door contact (a ``binary_sensor`` of class
``door``, when one is fitted) and an ``event`` entity for access decisions; retained, and
published again when Home Assistant says ``online`` on ``<discovery_prefix>/status``.
docs/mqtt.md shows every message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from device import __version__
from device.events.event import KINDS

ONLINE, OFFLINE = "online", "offline"

# Home Assistant turns a command into this JSON (its lock's command_template): the action,
# and a fresh time and nonce, without which the door refuses it (device/mqtt/commands.py).
_HA_COMMAND = ('{"action": "{{ \'unlock\' if value == \'UNLOCK\' else \'lock\' }}", '
               '"at": "{{ now().isoformat() }}", "nonce": "{{ now().timestamp() }}"}')


@dataclass(frozen=True)
class Topics:
    """The topic names of the door ``door_id``."""

    prefix: str
    door_id: str
    discovery_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.door_id}"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def command(self) -> str:
        return f"{self.base}/command"

    @property
    def command_result(self) -> str:
        return f"{self.base}/command/result"

    @property
    def test(self) -> str:
        return f"{self.base}/test"

    @property
    def home_assistant_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    @property
    def node_id(self) -> str:
        """The door in Home Assistant's discovery topics and ids: ``facegate_<door id>``
        with each character it does not allow (a '.') as '_'."""
        return "facegate_" + re.sub(r"[^A-Za-z0-9_-]", "_", self.door_id)

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"


def state_message(lock: str, door: str | None, at: str) -> str:
    """``{"lock": "locked" | "unlocked" | "held_open", "door": "open" | "closed" | null,
    "at": UTC time}``; ``door`` is null when no contact is fitted."""
    return json.dumps({"lock": lock, "door": door, "at": at})


def discovery_messages(topics: Topics, *, commands: bool, contact: bool,
                       web_url: str | None) -> list[tuple[str, str]]:
    """``(topic, payload)`` of every discovery message, to publish retained. An entity this
    door does not have (a lock without commands, a contact not fitted) gets an empty
    payload, which removes it from Home Assistant, so changing the configuration cleans up."""
    device: dict[str, Any] = {"identifiers": [topics.node_id],
                              "name": f"facegate {topics.door_id}", "manufacturer": "facegate",
                              "model": "face-recognition door", "sw_version": __version__}
    if web_url:
        device["configuration_url"] = web_url
    common = {"device": device, "origin": {"name": "facegate", "sw_version": __version__},
              "availability_topic": topics.availability, "payload_available": ONLINE,
              "payload_not_available": OFFLINE}
    locked = "value_json.lock == 'locked'"
    lock = {"name": "Strike", "unique_id": f"{topics.node_id}_strike_lock",
            "state_topic": topics.state,
            "value_template": f"{{{{ 'LOCKED' if {locked} else 'UNLOCKED' }}}}",
            "command_topic": topics.command, "command_template": _HA_COMMAND,
            "payload_lock": "LOCK", "payload_unlock": "UNLOCK", "optimistic": False,
            "qos": 1, **common}
    strike = {"name": "Strike", "unique_id": f"{topics.node_id}_strike",
              "device_class": "lock", "state_topic": topics.state,
              # A lock binary sensor is on when unlocked.
              "value_template": f"{{{{ 'OFF' if {locked} else 'ON' }}}}", "qos": 1, **common}
    door = {"name": "Door", "unique_id": f"{topics.node_id}_door", "device_class": "door",
            "state_topic": topics.state,
            "value_template": "{{ 'ON' if value_json.door == 'open' else 'OFF' }}", "qos": 1,
            **common}
    access = {"name": "Access", "unique_id": f"{topics.node_id}_access",
              "state_topic": topics.event, "event_types": list(KINDS), "qos": 1, **common}
    return [
        (topics.discovery("lock", "strike"), _json(lock) if commands else ""),
        (topics.discovery("binary_sensor", "strike"), "" if commands else _json(strike)),
        (topics.discovery("binary_sensor", "door"), _json(door) if contact else ""),
        (topics.discovery("event", "access"), _json(access)),
    ]


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True)
