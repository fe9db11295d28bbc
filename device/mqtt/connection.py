"""The door's connection to its broker: address, account, TLS, and a paho client built from
them. The one place that turns ``[mqtt]`` into a ``paho.mqtt.client.Client``, shared by the
daemon's publisher and ``facegate mqtt test``.

paho-mqtt 2.x (PyPI), MQTT 5: a broker that refuses a message (its ACL) says so in the
acknowledgement, so the door keeps that message instead of taking it as delivered.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device.config import MqttConfig
from device.errors import ConfigError

KEEPALIVE_SECONDS = 30  # a door gone silent (a cut cable) is "offline" within ~45 s


@dataclass(frozen=True)
class Broker:
    """Where the broker is and how the door signs in. The password is read from
    ``password_file`` at each connection, never kept in the configuration."""

    url: str
    tls: bool
    host: str
    port: int
    username: str = ""
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_config(cls, mqtt_config: MqttConfig) -> Broker:
        c = mqtt_config
        return cls(url=c.url, tls=c.tls, host=c.host, port=c.port, username=c.username,
                   password_file=c.password_file, ca_file=c.ca_file, cert_file=c.cert_file,
                   key_file=c.key_file)

    def describe(self) -> str:
        """``mqtts://broker:8883 as 'front-door'`` (or ``anonymously``), for the log."""
        who = f"as {self.username!r}" if self.username else "anonymously"
        if self.cert_file is not None:
            who += " with a client certificate"
        return f"{self.url} {who}"

    def password(self) -> str | None:
        """The first line of ``password_file``; :class:`ConfigError` when it cannot be read."""
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"mqtt.password_file {self.password_file} cannot be read "
                              f"({getattr(error, 'strerror', None) or error})") from None
        return text.split("\n", 1)[0].rstrip("\r")

    def ssl_context(self) -> ssl.SSLContext:
        """TLS that checks the broker's certificate and name: against ``ca_file``, else the
        system's CAs; with the door's client certificate when ``cert_file`` is set."""
        try:
            context = ssl.create_default_context(
                cafile=None if self.ca_file is None else str(self.ca_file))
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(f"mqtt.ca_file {self.ca_file} holds no CA certificate TLS can "
                              f"use ({error})") from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file),
                                        None if self.key_file is None else str(self.key_file))
            except (ssl.SSLError, OSError) as error:
                raise ConfigError(f"mqtt.cert_file {self.cert_file} (with mqtt.key_file) is "
                                  f"no certificate and key TLS can use ({error})") from None
        return context

    def client(self, client_id: str, *, will: tuple[str, str] | None = None) -> mqtt.Client:
        """A paho client for this broker, not yet connected. ``will``: ``(topic,
        payload)`` the broker publishes (retained, QoS 1) if the door vanishes."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        if self.username:
            client.username_pw_set(self.username, self.password())
        if self.tls:
            client.tls_set_context(self.ssl_context())
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        return client
