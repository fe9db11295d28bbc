"""``facegate mqtt test``: connect with the door's own settings and say what works, one check
at a time: the broker reached, TLS, the account, a publish to the door's topics, and the
subscription to its commands when they are on. Stops at the first check that fails, since
the next ones need it."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from device.errors import ConfigError
from device.events.event import utc_text
from device.mqtt.settings import MqttSettings


@dataclass(frozen=True)
class Check:
    """One check: ``ok`` True (passed), False (failed) or None (not applicable here)."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        verdict = {True: "ok", False: "FAILED", None: "skipped"}[self.ok]
        return f"{self.name}: {verdict} ({self.detail})"


def check_broker(settings: MqttSettings, *, timeout: float = 5.0) -> Iterator[Check]:
    """The checks, in order; the last one yielded is a failure, or every check passed."""
    broker = settings.broker
    where = f"{broker.host}:{broker.port}"
    try:
        raw = socket.create_connection((broker.host, broker.port), timeout=timeout)
    except OSError as error:
        yield Check("connect", False, f"cannot reach {where}: {error.strerror or error}")
        return
    yield Check("connect", True, f"{where} reached")
    with raw:
        check = _tls(settings, raw, timeout)
    yield check
    if check.ok is False:
        return
    yield from _session(settings, timeout)


def _tls(settings: MqttSettings, raw: socket.socket, timeout: float) -> Check:
    broker = settings.broker
    if not broker.tls:
        return Check("TLS", None, "mqtt:// is plain text: the password and the events can be "
                                  "read on the network; use mqtts://")
    try:
        context = broker.ssl_context()
        with context.wrap_socket(raw, server_hostname=broker.host) as secure:
            version = secure.version()
    except ConfigError as error:
        return Check("TLS", False, str(error))
    except ssl.SSLCertVerificationError as error:
        return Check("TLS", False, f"the broker's certificate is not trusted: "
                                   f"{error.verify_message}")
    except (ssl.SSLError, OSError) as error:
        return Check("TLS", False, f"no TLS session with the broker: {error}")
    against = f"CA {broker.ca_file}" if broker.ca_file else "the system's CAs"
    return Check("TLS", True, f"{version}, the certificate of {broker.host} verified against "
                              f"{against}")


class _Waiter:
    """paho's answers, waited for from this thread."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.arrived = threading.Condition()

    def put(self, key: str, value: Any) -> None:
        with self.arrived:
            self.answers[key] = value
            self.arrived.notify_all()

    def get(self, key: str, timeout: float) -> Any:
        with self.arrived:
            self.arrived.wait_for(lambda: key in self.answers, timeout)
            return self.answers.get(key)


def _session(settings: MqttSettings, timeout: float) -> Iterator[Check]:
    broker = settings.broker
    who = f"as {broker.username!r}" if broker.username else "anonymously"
    waiter = _Waiter()
    try:
        # Its own client id: the door's would push a running daemon off the broker.
        client = broker.client(f"{settings.client_id}-test-{os.getpid()}")
    except ConfigError as error:
        yield Check("auth", False, str(error))
        return
    client.on_connect = lambda _c, _u, _f, code, _p: waiter.put("connect", code)
    client.on_publish = lambda _c, _u, mid, code, _p: waiter.put(f"publish-{mid}", code)
    client.on_subscribe = lambda _c, _u, mid, codes, _p: waiter.put(f"subscribe-{mid}", codes)
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except (OSError, ssl.SSLError) as error:
        yield Check("auth", False, f"no MQTT session: {error}")
        return
    client.loop_start()
    try:
        yield from _signed_in(client, waiter, settings, who, timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def _signed_in(client: Any, waiter: _Waiter, settings: MqttSettings, who: str,
               timeout: float) -> Iterator[Check]:
    topics = settings.topics
    code = waiter.get("connect", timeout)
    if code is None:
        yield Check("auth", False, f"the broker did not answer the connection in {timeout:g} s")
        return
    if code.is_failure:
        yield Check("auth", False, f"the broker refused the door {who}: {code}")
        return
    yield Check("auth", True, f"signed in {who}")
    message = json.dumps({"test": True, "at": utc_text(datetime.now(UTC))})
    info = client.publish(topics.test, message, qos=1)
    code = waiter.get(f"publish-{info.mid}", timeout)
    if code is None or code.is_failure:
        said = "no acknowledgement" if code is None else str(code)
        yield Check("publish", False, f"{topics.test} refused: {said} (the broker's ACL must "
                                      f"let this account write {topics.base}/#)")
        return
    yield Check("publish", True, f"{topics.test} acknowledged")
    if not settings.accept_commands:
        yield Check("commands", None, "mqtt.accept_commands is false: the door takes none")
        return
    _, mid = client.subscribe(topics.command, qos=1)
    codes = waiter.get(f"subscribe-{mid}", timeout)
    if not codes or codes[0].is_failure:
        said = "no answer" if not codes else str(codes[0])
        yield Check("commands", False, f"subscription to {topics.command} refused: {said}")
        return
    yield Check("commands", True, f"subscribed to {topics.command} ({codes[0]})")
