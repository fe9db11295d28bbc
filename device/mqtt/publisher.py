"""The door on its site's MQTT broker: events from the outbox, state, availability, Home
Assistant discovery, and (when allowed) commands. Runs beside the door loop and never
makes it wait.

Two threads: paho's network thread (``loop_start``: connecting, reconnecting with back-off,
keep-alive, resending unacknowledged messages after a reconnection) and the sender thread
here, which owns its own SQLite connection. The sender hands the oldest waiting events to
paho, QoS 1, at most ``window`` unacknowledged at a time, in outbox order; when the broker
acknowledges one (paho's ``on_publish`` with its ``mid``), its outbox row is removed. While
the broker is away nothing is handed over: the events wait in the outbox (in SQLite, so
also across a restart of the door) and go out in order once it is back. A message the
broker refuses (MQTT 5 reason code: its ACL) stays in the outbox and is tried again after
:data:`REFUSED_RETRY_SECONDS`.

Guarantee: at least once, in order while nothing fails. A message is sent twice when the
door stops (or the connection drops) after the broker took it but before the door learnt
so; receivers de-duplicate by the event's ``id`` (docs/mqtt.md).

Measured by ``bench/bench_mqtt.py`` (``bench/results/mqtt.json``).
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from device.audit import record as audit_record
from device.errors import CommandRefused
from device.events.event import utc_text
from device.events.outbox import Outbox, Waiting
from device.mqtt.commands import CommandGate, run_command
from device.mqtt.connection import KEEPALIVE_SECONDS
from device.mqtt.settings import MqttSettings
from device.mqtt.topics import OFFLINE, ONLINE, discovery_messages, state_message

log = logging.getLogger(__name__)

REFUSED_RETRY_SECONDS = 30.0
FLUSH_SECONDS = 2.0  # at a clean stop, how long waiting events may still go out


class DoorView(Protocol):
    """What the publisher reads (and, for commands, does) at the door: ``device.door.Door``."""

    @property
    def state(self) -> str: ...

    @property
    def is_open(self) -> bool | None: ...

    def manual_unlock(self, seconds: float | None = None, by: str | None = None) -> float: ...

    def relock(self) -> None: ...


class MqttPublisher:
    """Publishes the door ``door`` (None: events only) and the outbox of ``db_path``.

    ``reconnect_delay``: paho's back-off, from the first to the longest wait in seconds.
    ``window``: events handed to paho and not yet acknowledged, at most. ``poll_seconds``:
    how often the sender looks at the door's state and the outbox without being woken
    (:meth:`wake`, which the event log calls after each event). ``busy_timeout_s``: how long
    removing delivered rows waits for another writer. Call :meth:`start`, then
    :meth:`close` (which says ``offline``).
    """

    def __init__(self, settings: MqttSettings, db_path: str | Path, *,
                 door: DoorView | None = None,
                 reconnect_delay: tuple[float, float] = (1.0, 30.0), window: int = 64,
                 poll_seconds: float = 0.1, busy_timeout_s: float = 5.0,
                 gate: CommandGate | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.db_path = Path(db_path)
        self.door = door
        self.window = window
        self.poll_seconds = poll_seconds
        self.busy_timeout_s = busy_timeout_s
        self.gate = gate or CommandGate()
        self._now = now
        self.published = 0  # events the broker has acknowledged
        self.refused = 0  # commands refused
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._online = threading.Event()
        self._notices: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._inflight: dict[int, Waiting] = {}  # paho mid -> the event it carries
        self._delivered: list[tuple[int, str]] = []  # acknowledged, row not yet removed
        self._paused_until = 0.0
        self._flush_seconds = FLUSH_SECONDS
        self._last_state: tuple[str, str | None] | None = None
        self._said: str | None = None  # the last connection trouble logged, not to repeat
        self._client = settings.broker.client(
            settings.client_id, will=(self.topics.availability, OFFLINE))
        self._client.reconnect_delay_set(*reconnect_delay)
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)

    # -- the outside ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._online.is_set()

    def start(self) -> None:
        """Connect in the background (a broker that is down is retried, never waited for)."""
        self._client.connect_async(self.settings.broker.host, self.settings.broker.port,
                                   keepalive=KEEPALIVE_SECONDS, clean_start=True)
        self._client.loop_start()
        self._thread.start()

    def wake(self) -> None:
        """New events are in the outbox (called by the event log; quick, thread-safe)."""
        self._wake.set()

    def close(self, flush_seconds: float = FLUSH_SECONDS) -> None:
        """Send what can be sent within ``flush_seconds``, say ``offline`` (retained) and
        disconnect. What is still waiting stays in the outbox for the next start."""
        self._flush_seconds = flush_seconds
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=flush_seconds + 5)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MqttPublisher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- paho's thread: note what happened, the sender acts on it ---------------------------

    def _notice(self, kind: str, value: Any = None) -> None:
        self._notices.put((kind, value))
        self._wake.set()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any,
                    reason_code: Any, _properties: Any) -> None:
        if reason_code.is_failure:
            self._say(f"MQTT broker {self.settings.broker.url} refused the door: {reason_code}; "
                      "trying again", logging.ERROR)
            return
        subscriptions = []
        if self.settings.discovery:
            subscriptions.append((self.topics.home_assistant_status, 1))
        if self.settings.accept_commands:
            subscriptions.append((self.topics.command, 1))
        if subscriptions:
            client.subscribe(subscriptions)
        self._online.set()
        self._said = None
        log.info("MQTT connected to %s", self.settings.broker.url)
        self._notice("connected")

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                       reason_code: Any, _properties: Any) -> None:
        was_online = self._online.is_set()
        self._online.clear()
        if was_online and not self._stop.is_set():
            self._say(f"MQTT connection to {self.settings.broker.url} lost ({reason_code}): "
                      "events wait in the outbox; reconnecting", logging.WARNING)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason_code: Any,
                    _properties: Any) -> None:
        self._notice("acked", (mid, reason_code))

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        if message.topic == self.topics.home_assistant_status:
            if message.payload == ONLINE.encode():
                self._notice("home_assistant_online")
        elif message.topic == self.topics.command and self.settings.accept_commands:
            self._notice("command", (bytes(message.payload), bool(message.retain)))

    def _say(self, message: str, level: int) -> None:
        if message != self._said:
            self._said = message
            log.log(level, message)

    # -- the sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        outbox = Outbox(self.db_path, busy_timeout_s=self.busy_timeout_s)
        try:
            while not self._stop.is_set():
                self._cycle(outbox)
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
            self._finish(outbox)
        except Exception:  # nothing here may take the door down; the next start goes on
            log.exception("the MQTT sender stopped")
        finally:
            outbox.close()

    def _cycle(self, outbox: Outbox) -> None:
        try:
            self._handle_notices()
            self._publish_state()
            self._remove_delivered(outbox)
            if self.connected and time.monotonic() >= self._paused_until:
                self._send_events(outbox)
        except sqlite3.Error as error:  # a locked or full database: try again shortly
            self._say(f"MQTT outbox in {self.db_path} unreadable for now ({error})",
                      logging.WARNING)
        except Exception:
            log.exception("MQTT sender cycle failed; going on")

    def _handle_notices(self) -> None:
        while True:
            try:
                kind, value = self._notices.get_nowait()
            except queue.Empty:
                return
            if kind == "connected":
                self._announce()
            elif kind == "home_assistant_online":
                self._publish_discovery()
            elif kind == "acked":
                self._acked(*value)
            elif kind == "command":
                self._command(*value)

    def _announce(self) -> None:
        """At each connection: online, discovery, the state; events follow."""
        self._client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        self._publish_discovery()
        self._publish_state(force=True)

    def _publish_discovery(self) -> None:
        if not self.settings.discovery:
            return
        for topic, payload in discovery_messages(
                self.topics, commands=self.settings.accept_commands,
                contact=self.settings.contact_fitted, web_url=self.settings.web_url):
            self._client.publish(topic, payload, qos=1, retain=True)

    def _publish_state(self, force: bool = False) -> mqtt.MQTTMessageInfo | None:
        if self.door is None or not self.connected:
            return None
        state = self._read_state()
        if state == self._last_state and not force:
            return None
        self._last_state = state
        return self._client.publish(self.topics.state,
                                    state_message(state[0], state[1], utc_text(self._now())),
                                    qos=1, retain=True)

    def _read_state(self) -> tuple[str, str | None]:
        try:
            lock = str(self.door.state)
        except Exception:  # a closed door is a locked one
            lock = "locked"
        try:
            is_open = self.door.is_open
        except Exception:
            is_open = None
        return lock, None if is_open is None else ("open" if is_open else "closed")

    def _send_events(self, outbox: Outbox) -> None:
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        busy = [waiting.seq for waiting in self._inflight.values()]
        busy += [seq for seq, _ in self._delivered]
        for waiting in outbox.oldest(room, skip=busy):
            info = self._client.publish(self.topics.event, waiting.payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                break
            # Also when not connected (MQTT_ERR_NO_CONN): paho keeps it and sends it on
            # reconnection, and its acknowledgement removes the row.
            self._inflight[info.mid] = waiting

    def _acked(self, mid: int, reason_code: Any) -> None:
        waiting = self._inflight.pop(mid, None)
        if waiting is None:
            return  # availability, discovery, state or a command's answer
        if reason_code.is_failure:
            self._paused_until = time.monotonic() + REFUSED_RETRY_SECONDS
            self._say(f"the broker refused event {waiting.event_id} on {self.topics.event}: "
                      f"{reason_code} (see its ACL, docs/mqtt.md); waiting events are tried "
                      f"again every {REFUSED_RETRY_SECONDS:g} s", logging.ERROR)
            return
        self._delivered.append((waiting.seq, waiting.event_id))
        self.published += 1

    def _remove_delivered(self, outbox: Outbox) -> None:
        if self._delivered:
            outbox.remove(self._delivered)  # on an error they stay, to be removed next time
            self._delivered = []

    # -- commands ---------------------------------------------------------------------------

    def _command(self, payload: bytes, retained: bool) -> None:
        answer: dict[str, Any] = {"nonce": _nonce_of(payload), "at": utc_text(self._now())}
        try:
            if self.door is None:
                raise CommandRefused("this process has no door to command")
            command = self.gate.check(payload, retained=retained)
            answer["action"] = command.action
            answer["result"] = run_command(command, self.door, self.db_path,
                                           address=self.settings.broker.url)
            answer.update(accepted=True, reason=None)
            log.warning("MQTT command: %s%s (nonce %s)", answer["result"],
                        f" for {command.seconds:g} s" if command.seconds else "",
                        command.nonce)
        except CommandRefused as refusal:
            self.refused += 1
            answer.update(accepted=False, reason=str(refusal))
            log.warning("MQTT command refused: %s", refusal)
            try:
                audit_record(self.db_path, "command_refused",
                             {"via": "mqtt", "reason": str(refusal), "nonce": answer["nonce"]},
                             "mqtt", self.settings.broker.url)
            except (sqlite3.Error, OSError) as error:
                log.error("audit row of a refused MQTT command not written: %s", error)
        self._client.publish(self.topics.command_result, json.dumps(answer), qos=1)

    # -- stopping ---------------------------------------------------------------------------

    def _finish(self, outbox: Outbox) -> None:
        """A clean stop: the last events if the broker is there, then the state and
        ``offline``, each waited for a little."""
        deadline = time.monotonic() + self._flush_seconds
        try:
            while self.connected and time.monotonic() < deadline:
                self._cycle(outbox)
                if not self._inflight and not outbox.oldest(1, skip=[s for s, _ in
                                                                     self._delivered]):
                    break
                self._wake.wait(0.02)
                self._wake.clear()
            self._handle_notices()
            self._remove_delivered(outbox)
        except sqlite3.Error as error:
            log.warning("MQTT outbox not flushed at stop (%s): sent at the next start", error)
        if not self.connected:
            return
        last = [self._publish_state(force=True),
                self._client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)]
        for info in last:
            if info is None:
                continue
            try:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic() + 1.0))
            except (RuntimeError, ValueError):
                pass


def _nonce_of(payload: bytes) -> str | None:
    """The command's nonce for its answer, if it has a readable one."""
    try:
        nonce = json.loads(payload).get("nonce")
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        return None
    return nonce if isinstance(nonce, str) and len(nonce) <= 128 else None
