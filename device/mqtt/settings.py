"""``[mqtt]`` and the rest of the configuration it needs (the door's id, its contact, its web
page's address), gathered once for the publisher and ``facegate mqtt test``."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from device.config import Config
from device.events.outbox import OutboxFeed
from device.mqtt.connection import Broker
from device.mqtt.topics import Topics

_ANY_ADDRESS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class MqttSettings:
    broker: Broker
    topics: Topics
    discovery: bool = True
    accept_commands: bool = False
    web_url: str | None = None  # the door's web page from outside, for snapshot links
    contact_fitted: bool = False
    outbox_max_events: int = 50_000

    @classmethod
    def from_config(cls, config: Config) -> MqttSettings:
        m = config.mqtt
        return cls(broker=Broker.from_config(m),
                   topics=Topics(m.topic_prefix, config.door.id, m.discovery_prefix),
                   discovery=m.discovery, accept_commands=m.accept_commands,
                   web_url=web_url(config), contact_fitted=config.door.contact_pin is not None,
                   outbox_max_events=m.outbox_max_events)

    @property
    def client_id(self) -> str:
        return f"facegate-{self.topics.door_id}"

    def outbox_feed(self, on_added: Callable[[], None] | None = None) -> OutboxFeed:
        return OutboxFeed(snapshot_base_url=self.web_url, max_events=self.outbox_max_events,
                          on_added=on_added)

    def describe(self) -> str:
        """The daemon's start line: the broker, the topics, discovery and commands."""
        discovery = (f"Home Assistant discovery under {self.topics.discovery_prefix}/"
                     if self.discovery else "no Home Assistant discovery")
        commands = (f"commands accepted on {self.topics.command}" if self.accept_commands
                    else "commands off")
        return (f"MQTT: publishing to {self.broker.describe()} under {self.topics.base}/ "
                f"({discovery}, {commands})")


def web_url(config: Config) -> str | None:
    """``mqtt.snapshot_base_url``, else the web page's ``http://HOST:PORT`` (this machine's
    name when it listens on every address); None when the page is off and no URL is set."""
    if config.mqtt.snapshot_base_url:
        return config.mqtt.snapshot_base_url
    if not config.web.enabled:
        return None
    host, port = config.web.host, config.web.port
    if host in _ANY_ADDRESS:
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
