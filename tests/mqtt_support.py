"""A real MQTT broker for the tests: Debian's Mosquitto, started on a free loopback port with a
configuration of its own in a temporary folder (never a broker written here, never a mock).

``scripts/ensure-system-packages`` installs it (``make test`` runs that script). Without it
the MQTT tests are skipped on a developer's machine and fail on CI (``CI=true``), as the
browser tests do. ``TestCA`` makes a certificate authority and a server certificate for
127.0.0.1 with the system's ``openssl``, so the TLS tests need nothing else.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.e2e.appliance import free_port

__all__ = ["Listener", "Message", "Mosquitto", "TestCA", "mosquitto_missing"]

MOSQUITTO = Path(shutil.which("mosquitto") or "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path(shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd")


def mosquitto_missing() -> str | None:
    """Why the broker cannot run here, or None when it can."""
    for program in (MOSQUITTO, MOSQUITTO_PASSWD):
        if not program.is_file():
            return (f"{program} is missing: run scripts/ensure-system-packages "
                    "(apt-get install mosquitto mosquitto-clients)")
    return None


# --- The certificate authority -----------------------------------------------------------


@dataclass(frozen=True)
class TestCA:
    """A CA (``ca``) and the server's certificate and key for 127.0.0.1 and localhost, PEM
    files in ``folder``; ``client(name)`` adds a client certificate signed by the same CA."""

    __test__ = False  # not a test class, whatever its name says

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @classmethod
    def make(cls, folder: Path) -> TestCA:
        folder.mkdir(parents=True, exist_ok=True)
        ca = cls(folder)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", str(folder / "ca.key"), "-out", str(ca.ca), "-days", "2",
                 "-subj", "/CN=facegate test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        ca._sign("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                 "extendedKeyUsage=serverAuth\n")
        return ca

    def client(self, name: str) -> tuple[Path, Path]:
        """A client certificate (CN ``name``) and its key."""
        self._sign(name, f"/CN={name}", "extendedKeyUsage=clientAuth\n")
        return self.folder / f"{name}.pem", self.folder / f"{name}.key"

    def _sign(self, name: str, subject: str, extensions: str) -> None:
        key, csr = self.folder / f"{name}.key", self.folder / f"{name}.csr"
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", subject)
        ext = self.folder / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n" + extensions)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey",
                 str(self.folder / "ca.key"), "-CAcreateserial", "-out",
                 str(self.folder / f"{name}.pem"), "-days", "2", "-extfile", str(ext))


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


# --- The broker --------------------------------------------------------------------------


class Mosquitto:
    """One Mosquitto process on 127.0.0.1:``port`` (a free one when None), its files in
    ``folder``. ``tls``: the listener speaks TLS with the CA's server certificate.
    ``accounts``: name -> password; then anonymous clients are refused. ``acl``: the text of
    an ACL file. Messages and persistent sessions are saved to ``folder`` at a clean stop and
    read again at the next start (``persistence true``), as a site's broker does."""

    def __init__(self, folder: Path, *, port: int | None = None, tls: TestCA | None = None,
                 accounts: dict[str, str] | None = None, acl: str | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.tls = tls
        self.accounts = accounts
        self.acl = acl
        self.process: subprocess.Popen | None = None
        self.log = folder / "mosquitto.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(self._configuration())

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _configuration(self) -> str:
        lines = [
            "# facegate test broker",
            f"user {getpass.getuser()}",  # as root, do not switch to the mosquitto account
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.folder}/",
            "autosave_interval 0",  # saved at a clean stop; tests stop it with SIGTERM
            "max_queued_messages 100000",
            f"log_dest file {self.log}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
        ]
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}",
                      f"keyfile {self.tls.server_key}", "require_certificate false"]
        if self.accounts is not None:
            passwords = self.folder / "passwords"
            passwords.write_text("")
            for name, password in self.accounts.items():
                subprocess.run([str(MOSQUITTO_PASSWD), "-b", str(passwords), name, password],
                               check=True, capture_output=True, timeout=30)
            passwords.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl = self.folder / "acl"
            acl.write_text(self.acl)
            acl.chmod(0o600)
            lines.append(f"acl_file {acl}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start it and wait until it accepts connections."""
        self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace")
                raise RuntimeError(f"mosquitto exited {self.process.returncode}: {error}"
                                   f"{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port}:"
                                   f" {self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: a clean stop (sessions and queued messages are saved)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()

    def log_tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return ""
        return "\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- A subscriber ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float  # time.monotonic() when it arrived

    @property
    def text(self) -> str:
        return self.payload.decode()

    @property
    def json(self):
        return json.loads(self.payload)


class Listener:
    """A subscriber to ``topics`` on ``broker`` (paho, as a site's consumer would be) that
    keeps every message it receives. ``persistent``: a session the broker keeps while this
    client (or the broker itself) is away, so that nothing published meanwhile is missed,
    as a consumer that must see every event runs."""

    def __init__(self, broker: Mosquitto, topics: Iterable[str], *, persistent: bool = False,
                 client_id: str | None = None, account: tuple[str, str] | None = None,
                 ) -> None:
        self.topics = list(topics)
        self.messages: list[Message] = []
        self._by_topic: dict[str, list[Message]] = {}
        self._lock = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"listener-{id(self)}",
                                  clean_session=not persistent, protocol=mqtt.MQTTv311)
        if account is not None:
            self.client.username_pw_set(*account)
        if broker.tls is not None:
            self.client.tls_set(ca_certs=str(broker.tls.ca))
        self.client.reconnect_delay_set(0.2, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"the listener could not subscribe on {broker.url}"
                               f"{broker.log_tail()}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            received = Message(message.topic, message.payload, bool(message.retain),
                               time.monotonic())
            self.messages.append(received)
            self._by_topic.setdefault(received.topic, []).append(received)
            self._lock.notify_all()

    def on(self, topic: str) -> list[Message]:
        """The messages received on ``topic`` (a filter with ``+`` or ``#`` too)."""
        with self._lock:
            if "+" not in topic and "#" not in topic:
                return list(self._by_topic.get(topic, ()))
            return [message for message in self.messages if mqtt.topic_matches_sub(
                topic, message.topic)]

    def wait_for(self, ready: Callable[[Listener], object], timeout: float = 10.0,
                 what: str = "the messages") -> None:
        """Wait until ``ready(self)`` is true; fail with what arrived when it does not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not ready(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    shown = [(m.topic, m.payload[:80]) for m in self.messages[-10:]]
                    raise AssertionError(f"{what} did not arrive in {timeout:g} s; the last "
                                         f"ones were {shown}")
                # Looked at again at most every 20 ms: a burst of messages is not held up.
                self._lock.wait(min(left, 0.1))
                self._lock.release()
                time.sleep(0.02)
                self._lock.acquire()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
