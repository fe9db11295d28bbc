"""Configuration: one TOML file, then the environment, then the command line.

The file is the ``path`` given (``--config``), else ``$FACEGATE_CONFIG``, else
``/etc/facegate/facegate.toml`` when present, else, in a source checkout only,
``<project>/var/facegate.toml`` when present; with no file every key has its default. The
environment beats the file (``FACEGATE_DATA_DIR`` for ``paths.data_dir``, ``FACEGATE_MODELS``
for ``recognition.models_dir``) and the command line beats both. :class:`Places` is the one
place that picks the system and development defaults.

Everything is checked when loaded, so a typo stops the daemon at start with one sentence
naming the key and where it came from, never later at the door. docs/configuration.md lists
every key; tests/test_config.py checks that it does.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import reprlib
import socket
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from device.errors import ConfigError
from device.vision.models import default_models_dir

SYSTEM_CONFIG = Path("/etc/facegate/facegate.toml")
SYSTEM_DATA_DIR = Path("/var/lib/facegate")
DATABASE_FILE = "facegate.db"  # the gallery and the access log, in one file
SNAPSHOTS_FOLDER = "snapshots"
MB = 1_000_000  # decimal megabytes, as disk makers and ``df -H`` count


class _Invalid(ValueError):
    """A value is wrong; the message says what it must be ("must be ...")."""


def _key(default: Any = None, *, factory: Callable[[], Any] | None = None,
         low: float | None = None, high: float | None = None,
         check: Callable[[Any], Any] | None = None) -> Any:
    """A configuration key: its default, allowed range, and a check for what a type cannot
    say. Lists and tables never appear, so every default is immutable."""
    metadata = {"low": low, "high": high, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _pin(default: int | None = None) -> Any:
    # BCM numbers of the GPIOs on a Raspberry Pi's 40-pin header.
    return _key(default, low=0, high=27)


def _door_id(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        raise _Invalid("must be 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                       "letter or digit")
    return value


_CAMERA_INDEX_MAX = 2**31 - 1  # OpenCV takes the index as a C int


def _camera_source(value: Any) -> str:
    need = 'must be "auto", "picamera2", a camera index, a device, file or URL'
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= _CAMERA_INDEX_MAX:
            raise _Invalid(f"{need} (an index is from 0 to {_CAMERA_INDEX_MAX})")
        return str(value)  # a camera index, as OpenCV numbers them
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(need)
    if "\0" in value:
        raise _Invalid(f"{need}, without NUL characters")
    return value


def _rotation(value: Any) -> int:
    if isinstance(value, bool) or value not in (0, 90, 180, 270):
        raise _Invalid("must be 0, 90, 180 or 270 (degrees clockwise)")
    return value


MOTION_CUES = ("off", "blink", "head_turn", "either")  # liveness.motion_cue


def _motion_cue(value: Any) -> str:
    if value not in MOTION_CUES:
        # Only text is spelled: str() of an integer of thousands of digits raises.
        close = (difflib.get_close_matches(value, MOTION_CUES, n=1)
                 if isinstance(value, str) else [])
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _Invalid(f'must be "off", "blink", "head_turn" or "either"{hint}')
    return value


def _listen(value: Any) -> str:
    parse_listen(value)
    return value


_LISTEN = re.compile(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})")


def parse_listen(value: Any) -> tuple[str, int]:
    """``"HOST:PORT"`` (an IPv6 host in brackets) as ``(host, port)``; ``ValueError`` if not."""
    need = "must be HOST:PORT, such as 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080"
    match = isinstance(value, str) and re.fullmatch(_LISTEN, value)
    if not match:
        raise _Invalid(need)
    host, port = (match[1], match[2]) if match[1] else (match[3], match[4])
    try:
        if match[1] or all(label.isdigit() for label in host.split(".")):
            ipaddress.ip_address(host)
        elif not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                              r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", host):
            raise ValueError(host)
    except ValueError:
        raise _Invalid(need) from None
    if not 1 <= int(port) <= 65535:
        raise _Invalid("must have a port from 1 to 65535")
    return host, int(port)


MQTT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def parse_mqtt_url(value: Any) -> tuple[bool, str, int]:
    """``"mqtt://HOST[:PORT]"`` or ``"mqtts://HOST[:PORT]"`` as ``(tls, host, port)``, the
    port 1883 or 8883 when left out; ``ValueError`` if not."""
    need = 'must be "mqtt://HOST:PORT" or "mqtts://HOST:PORT" (TLS), or "" for no MQTT'
    if not isinstance(value, str) or not value.isprintable() or " " in value:
        raise _Invalid(need)
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:  # a port out of range or not a number, a broken [IPv6] host
        raise _Invalid(need) from None
    if parts.scheme not in MQTT_PORTS or not parts.hostname:
        raise _Invalid(need)
    if parts.username is not None or parts.password is not None:
        raise _Invalid("must not hold a user name or password: put the user name in "
                       "mqtt.username and the password in a file named by mqtt.password_file")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _Invalid(f"{need}, with no path after the port")
    host = parts.hostname
    try:
        if ":" in host or all(label.isdigit() for label in host.split(".")):
            ipaddress.ip_address(host)
        elif not _HOST.fullmatch(host):
            raise ValueError(host)
    except ValueError:
        raise _Invalid(need) from None
    if port == 0:
        raise _Invalid("must have a port from 1 to 65535")
    return parts.scheme == "mqtts", host, port or MQTT_PORTS[parts.scheme]


def _mqtt_url(value: Any) -> str:
    if value == "":
        return value
    parse_mqtt_url(value)
    return value


def _topic_prefix(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[^/+#\s]{1,64}(/[^/+#\s]{1,64}){0,3}",
                                                      value) or not value.isprintable():
        raise _Invalid("must be 1 to 4 topic levels joined by '/', such as \"facegate\" or "
                       "\"site/facegate\", without '+', '#', spaces or a '/' at either end")
    return value


def _base_url(value: Any) -> str:
    need = 'must be "" or an http:// or https:// address, such as "https://door.example:8443"'
    if value == "":
        return value
    if not isinstance(value, str) or not value.isprintable() or " " in value:
        raise _Invalid(need)
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not one)
    except ValueError:
        raise _Invalid(need) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or parts.username is not None:
        raise _Invalid(need)
    return value.rstrip("/")


def _postgres_url(value: Any) -> str:
    if value == "" or (isinstance(value, str) and value.isprintable()
                       and value.startswith(("postgresql://", "postgres://"))):
        return value
    raise _Invalid('must be "" or a PostgreSQL connection string, such as '
                   '"postgresql://facegate@127.0.0.1:5432/facegate"')


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"7d"`` (or ``"0"``: never) in seconds."""
    if value in ("0", 0):
        return 0.0
    match = isinstance(value, str) and _DURATION.fullmatch(value.strip())
    if not match:
        raise _Invalid('must be a duration such as "15m", "24h" or "7d", or "0" for never')
    return float(match[1]) * _SECONDS[match[2]]


def _duration(value: Any) -> str:
    parse_duration(value)
    return value


STALE_POLICIES = ("keep", "deny", "allow-list")


def _stale_policy(value: Any) -> str:
    if value not in STALE_POLICIES:
        raise _Invalid(f"must be one of {', '.join(repr(p) for p in STALE_POLICIES)}")
    return value


# --- The sections --------------------------------------------------------------------------


@dataclass(frozen=True)
class DoorConfig:
    """``[door]``: the strike relay, the door contact, the exit button, the lights. Pins are
    BCM GPIO numbers; None means not fitted."""

    id: str = _key(factory=socket.gethostname, check=_door_id)
    relay_pin: int = _pin(17)
    relay_active_high: bool = _key(True)
    unlock_seconds: float = _key(3.0, low=0.5, high=60)
    contact_pin: int | None = _pin()
    contact_closed_is_pressed: bool = _key(True)
    held_open_seconds: float = _key(30.0, low=1, high=3600)
    lock_on_close: bool = _key(True)
    exit_button_pin: int | None = _pin()
    green_led_pin: int | None = _pin()
    red_led_pin: int | None = _pin()
    buzzer_pin: int | None = _pin()


@dataclass(frozen=True)
class CameraConfig:
    """``[camera]``: where frames come from and at what size and rate."""

    source: str = _key("auto", check=_camera_source)
    fps: int = _key(15, low=1, high=120)
    width: int = _key(640, low=64, high=4096)
    height: int = _key(480, low=64, high=4096)
    # How the camera is mounted, undone on every frame before detection (device/camera/base.py).
    rotation: int = _key(0, check=_rotation)
    mirror: bool = _key(False)


@dataclass(frozen=True)
class RecognitionConfig:
    """``[recognition]``: which model, and when a face counts as a person. ``threshold``
    and ``margin`` of None take the model card's."""

    models_dir: Path = _key(factory=default_models_dir)
    model: str = _key("")
    threshold: float | None = _key(low=-1, high=1)
    margin: float | None = _key(low=0, high=2)
    min_interocular_px: float = _key(40.0, low=10, high=1000)
    votes_needed: int = _key(2, low=1, high=10)
    votes_window: int = _key(3, low=1, high=10)
    cooldown_seconds: float = _key(5.0, low=0, high=3600)
    max_faces: int = _key(3, low=1, high=10)
    store_crops: bool = _key(True)


@dataclass(frozen=True)
class LivenessConfig:
    """``[liveness]``: presentation-attack detection (printed photos, screens) at this door.
    ``model`` "" is the default liveness model; ``threshold`` and ``votes_needed`` of None
    take its card's. A track needs ``votes_needed`` live frames among the last
    ``recognition.votes_window`` as well as its identity votes; with ``motion_cue`` other
    than "off" it must also blink or turn its head (``head_turn_parallax`` in eye distances,
    ``blink_drop`` a share of the eyes' usual openness; device/daemon/cues.py)."""

    enabled: bool = _key(True)
    model: str = _key("")
    threshold: float | None = _key(low=0, high=1)
    votes_needed: int | None = _key(low=1, high=10)
    motion_cue: str = _key("off", check=_motion_cue)
    head_turn_parallax: float = _key(0.2, low=0.05, high=1)
    blink_drop: float = _key(0.6, low=0.1, high=0.95)


@dataclass(frozen=True)
class EventsConfig:
    """``[events]``: how much of the access log to keep (see device/events/retention.py)."""

    max_age_days: int = _key(90, low=1, high=3650)
    max_events: int = _key(100_000, low=1, high=10_000_000)
    max_snapshot_mb: int = _key(1000, low=0, high=1_000_000)
    min_free_mb: int = _key(200, low=0, high=1_000_000)
    snapshot_frames: bool = _key(True)

    @property
    def max_snapshot_bytes(self) -> int:
        return self.max_snapshot_mb * MB

    @property
    def min_free_bytes(self) -> int:
        return self.min_free_mb * MB


@dataclass(frozen=True)
class WebConfig:
    """``[web]``: the enrolment and log page."""

    listen: str = _key("127.0.0.1:8080", check=_listen)
    enabled: bool = _key(True)
    # Browsers send a Secure cookie over HTTPS only: set it when a TLS proxy is in front.
    cookie_secure: bool = _key(False)

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``: the site's MQTT broker, where the door publishes its events, its state and
    Home Assistant discovery (docs/mqtt.md). ``url`` "" (the default): MQTT is off. The
    password is never written here: ``password_file`` names a file that holds it."""

    url: str = _key("", check=_mqtt_url)
    username: str = _key("")
    password_file: Path | None = _key()
    ca_file: Path | None = _key()
    cert_file: Path | None = _key()
    key_file: Path | None = _key()
    topic_prefix: str = _key("facegate", check=_topic_prefix)
    discovery: bool = _key(True)
    discovery_prefix: str = _key("homeassistant", check=_topic_prefix)
    snapshot_base_url: str = _key("", check=_base_url)
    accept_commands: bool = _key(False)
    outbox_max_events: int = _key(50_000, low=1, high=10_000_000)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def tls(self) -> bool:
        return self.enabled and parse_mqtt_url(self.url)[0]

    @property
    def host(self) -> str:
        return parse_mqtt_url(self.url)[1]

    @property
    def port(self) -> int:
        return parse_mqtt_url(self.url)[2]


@dataclass(frozen=True)
class SiteConfig:
    """``[site]``: a site of many doors (docs/site.md).

    At the site server (``facegate site serve``): ``database``, its PostgreSQL, and
    ``listen``. At a member door: ``url``, the site server's address, ``token_file``, the
    door's credential (``facegate site door add``), ``ca_file`` to trust a site certificate
    of the site's own CA, how often it asks for changes (``poll_seconds``; a retained MQTT
    nudge is sooner), checks its replica's digest (``digest_minutes``), and what it does
    when it has not heard from the site for ``max_replica_age``: ``when_stale = "keep"``
    (go on deciding from the replica), ``"deny"`` (let nobody in) or ``"allow-list"``
    (only the people named in ``stale_allow``, comma-separated names).
    """

    database: str = _key("", check=_postgres_url)
    listen: str = _key("127.0.0.1:8443", check=_listen)
    url: str = _key("", check=_base_url)
    token_file: Path | None = _key()
    ca_file: Path | None = _key()
    poll_seconds: float = _key(60.0, low=1, high=3600)
    digest_minutes: float = _key(60.0, low=1, high=10080)
    max_replica_age: str = _key("24h", check=_duration)
    when_stale: str = _key("keep", check=_stale_policy)
    stale_allow: str = _key("")

    @property
    def is_member(self) -> bool:
        """Whether this door belongs to a site (takes its gallery from the site's)."""
        return bool(self.url)

    @property
    def max_replica_age_seconds(self) -> float:
        return parse_duration(self.max_replica_age)

    @property
    def stale_allowed_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.stale_allow.split(",") if name.strip())


def _default_data_dir() -> Path:
    return Places().data_dir()


@dataclass(frozen=True)
class PathsConfig:
    """``[paths]``: where the door keeps its state."""

    data_dir: Path = _key(factory=_default_data_dir)

    @property
    def database(self) -> Path:
        """The SQLite file of the gallery and the access log."""
        return self.data_dir / DATABASE_FILE

    @property
    def snapshots(self) -> Path:
        return self.data_dir / SNAPSHOTS_FOLDER


SECTIONS: dict[str, type] = {
    "door": DoorConfig,
    "camera": CameraConfig,
    "recognition": RecognitionConfig,
    "liveness": LivenessConfig,
    "events": EventsConfig,
    "web": WebConfig,
    "paths": PathsConfig,
    "mqtt": MqttConfig,
    "site": SiteConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole configuration, section by section (``config.door.unlock_seconds``).
    ``file`` is the file it was read from, None when every key came from elsewhere."""

    door: DoorConfig = field(default_factory=DoorConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    file: Path | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}`` for display: paths as strings, unset keys as None."""
        return {
            name: {
                item.name: _displayed(getattr(getattr(self, name), item.name))
                for item in fields(getattr(self, name))
            }
            for name in SECTIONS
        }


# --- Where things are ----------------------------------------------------------------------


def source_checkout() -> Path | None:
    """The project folder when running from a source checkout, None when installed."""
    project = Path(__file__).resolve().parents[1]
    return project if (project / "pyproject.toml").is_file() else None


@dataclass(frozen=True)
class Places:
    """Where facegate looks for its file and keeps its data when nothing says otherwise.
    ``project_dir`` is the source checkout (None when installed); tests hand in their own."""

    system_config: Path = SYSTEM_CONFIG
    system_data_dir: Path = SYSTEM_DATA_DIR
    project_dir: Path | None = field(default_factory=source_checkout)

    def config_file(self) -> Path | None:
        """The system file when present, else the checkout's ``var/facegate.toml`` if any."""
        if self.system_config.exists():
            return self.system_config
        if self.project_dir is not None:
            development = self.project_dir / "var" / "facegate.toml"
            if development.exists():
                return development
        return None

    def data_dir(self) -> Path:
        """The system folder when it exists and is writable, or when installed (a missing one
        is then reported where it is used); else the checkout's ``var/data``."""
        usable = self.system_data_dir.is_dir() and os.access(self.system_data_dir, os.W_OK)
        if usable or self.project_dir is None:
            return self.system_data_dir
        return self.project_dir / "var" / "data"


# --- Loading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    where: str  # finishes "door.unlock_seconds ... must be": "in /etc/...", "on the command line"
    base: Path  # what a relative path in it is relative to


def _base_type(cls: type, name: str) -> type:
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType):  # "int | None": None is the default, never written
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


_KEYS = {f"{section}.{item.name}": item for section, cls in SECTIONS.items()
         for item in fields(cls)}
_TYPES = {f"{section}.{item.name}": _base_type(cls, item.name)
          for section, cls in SECTIONS.items() for item in fields(cls)}


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    places: Places | None = None,
) -> Config:
    """Read, merge and check the configuration; raise :class:`ConfigError` on the first fault.

    ``path`` is the file to read (None: look for one, see the module's docstring).
    ``overrides`` maps dotted keys to values from the command line, such as
    ``{"camera.source": "0", "web.listen": "127.0.0.1:9000"}``; None values are skipped, so
    argparse's unset options can be passed as they are; a string given for a number or a
    boolean is read as a TOML value ("5", "2.5", "true"). Relative paths are relative to
    the file they are written in, or to the working folder for the environment and the
    command line. ``environ`` and ``places`` are for tests.
    """
    environ = os.environ if environ is None else environ
    places = Places() if places is None else places
    file = _find_file(path, environ, places)
    values: dict[str, dict[str, tuple[Any, _Origin]]] = {name: {} for name in SECTIONS}
    if file is not None:
        _merge_file(values, file)
    here = Path.cwd()
    for variable, dotted in (("FACEGATE_DATA_DIR", "paths.data_dir"),
                             ("FACEGATE_MODELS", "recognition.models_dir")):
        if environ.get(variable):
            section, key = dotted.split(".")
            values[section][key] = (environ[variable], _Origin(f"in ${variable}", here))
    command_line = _Origin("on the command line", here)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if dotted not in _KEYS:
            raise ConfigError(f"unknown key {_shown(dotted)} on the command line"
                              f"{_suggest(dotted)}")
        section, key = dotted.split(".")
        values[section][key] = (_literal(value, dotted), command_line)
    defaults = {"paths": {"data_dir": places.data_dir()}}
    built = {name: _build(name, cls, values[name], defaults.get(name, {}))
             for name, cls in SECTIONS.items()}
    config = Config(**built, file=file)
    _check_together(config, values)
    return config


def _find_file(path: Path | None, environ: Mapping[str, str], places: Places) -> Path | None:
    if path is not None:
        named, by = Path(path), ""
    elif environ.get("FACEGATE_CONFIG"):
        named, by = Path(environ["FACEGATE_CONFIG"]), " (named by $FACEGATE_CONFIG)"
    else:
        return places.config_file()
    if not named.exists():
        raise ConfigError(f"the config file {_shown_path(named)}{by} does not exist")
    return named


def _merge_file(values: dict[str, dict[str, tuple[Any, _Origin]]], file: Path) -> None:
    shown = _shown_path(file)
    origin = _Origin(f"in {shown}", file.resolve().parent)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"the config file {shown} is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"cannot read the config file {shown}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:  # its message ends "(at line L, column C)"
        raise ConfigError(f"{shown} is not valid TOML: {error}") from None
    except ValueError:  # int() refusing a decimal number of over 4,300 digits
        raise ConfigError(f"{shown} holds a number too long to read (over 4300 digits)") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"{shown} nests arrays or tables too deeply to read") from None
    for section, table in data.items():
        if section in SECTIONS and isinstance(table, dict):
            for key, value in table.items():
                dotted = f"{section}.{key}"
                if dotted not in _KEYS:
                    raise ConfigError(f"unknown key {_shown(dotted)} {origin.where}"
                                      f"{_suggest(dotted)}")
                values[section][key] = (value, origin)
        elif section in SECTIONS:
            raise ConfigError(f"{section} {origin.where} must be a section ([{section}] "
                              f"followed by its keys), got {_shown(table)}")
        elif isinstance(table, dict):
            close = difflib.get_close_matches(section, SECTIONS, n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            raise ConfigError(f"unknown section [{_shown_name(section)}] {origin.where}{hint}; "
                              "the sections "
                              f"are {', '.join(f'[{name}]' for name in SECTIONS)}")
        else:
            raise ConfigError(f"unknown key {_shown(section)} {origin.where}{_suggest(section)}: "
                              "every key belongs under a section such as [door]")


def _suggest(dotted: str) -> str:
    dotted = str(dotted)
    leaf = dotted.rpartition(".")[2]
    # The right key in the wrong section first ("camera.unlock_seconds"), then a near spelling.
    close = [known for known in _KEYS if known.rpartition(".")[2] == leaf]
    close = close or difflib.get_close_matches(dotted, _KEYS, n=1)
    if not close:
        leaves = {known.rpartition(".")[2]: known for known in _KEYS}
        close = [leaves[name] for name in difflib.get_close_matches(leaf, leaves, n=1)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _literal(value: Any, dotted: str) -> Any:
    """A command-line string for a number or boolean key, read as TOML ("3" -> 3); text
    that is not one TOML value ("3\\n[door]") stays text, refused by the type check."""
    if not isinstance(value, str) or _TYPES[dotted] not in (bool, int, float):
        return value
    try:
        document = tomllib.loads(f"value = {value}")
    except (ValueError, RecursionError):  # TOMLDecodeError, 4,300 digits, "[[[[...": as above
        return value  # refused, with the key's name, by the type check
    return document["value"] if list(document) == ["value"] else value


def _build(section: str, cls: type, given: dict[str, tuple[Any, _Origin]],
           defaults: dict[str, Any]) -> Any:
    kwargs = dict(defaults)
    for item in fields(cls):
        if item.name in given:
            value, origin = given[item.name]
            kwargs[item.name] = _convert(f"{section}.{item.name}", value, origin)
    return cls(**kwargs)


def _convert(dotted: str, value: Any, origin: _Origin) -> Any:
    try:
        return _checked(value, _KEYS[dotted].metadata, _TYPES[dotted], origin)
    except _Invalid as error:
        raise ConfigError(f"{dotted} {origin.where} {error}, got {_shown(value)}") from None


def _checked(value: Any, meta: Mapping[str, Any], base: type, origin: _Origin) -> Any:
    if meta["check"] is not None:
        return meta["check"](value)
    if base is bool and not isinstance(value, bool):
        raise _Invalid("must be true or false")
    if base is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _Invalid("must be a whole number")
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid("must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise _Invalid("must be a finite number")
    if base is str and not isinstance(value, str):
        raise _Invalid("must be a string (in quotes)")
    if base is Path:
        value = _path(value, origin)
    low, high = meta["low"], meta["high"]
    # Compared before float(): an int beyond a float's range (10**400) is out of range, not
    # an OverflowError.
    if (low is not None and value < low) or (high is not None and value > high):
        raise _Invalid(f"must be from {_number(low)} to {_number(high)}")
    return float(value) if base is float else value


def _path(value: Any, origin: _Origin) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise _Invalid("must be a path (a string in quotes)")
    if "\0" in str(value):
        raise _Invalid("must be a path without NUL characters")
    try:
        return origin.base / Path(value).expanduser()
    except RuntimeError:  # "~name" for no such account, or "~" with no home folder
        raise _Invalid("starts with a home folder (~) that this machine does not have") from None


def _check_together(config: Config, values: dict[str, dict[str, tuple[Any, _Origin]]]) -> None:
    """The rules that involve two keys."""
    def where(section: str, *keys: str) -> str:
        for key in keys:
            if key in values[section]:
                return values[section][key][1].where
        return "by default"

    recognition = config.recognition
    if recognition.votes_needed > recognition.votes_window:
        raise ConfigError(
            f"recognition.votes_needed ({recognition.votes_needed}) cannot be more than "
            f"recognition.votes_window ({recognition.votes_window}) "
            f"{where('recognition', 'votes_needed', 'votes_window')}: the door waits for "
            "votes_needed matching frames among the last votes_window"
        )
    live_votes = config.liveness.votes_needed
    if live_votes is not None and live_votes > recognition.votes_window:
        raise ConfigError(
            f"liveness.votes_needed ({live_votes}) cannot be more than "
            f"recognition.votes_window ({recognition.votes_window}) "
            f"{where('liveness', 'votes_needed')}: the door counts live frames among the "
            "last votes_window"
        )
    seen: dict[int, str] = {}
    for item in fields(DoorConfig):
        pin = getattr(config.door, item.name)
        if not item.name.endswith("_pin") or pin is None:
            continue
        if pin in seen:
            raise ConfigError(f"door.{item.name} {where('door', item.name)} is GPIO {pin}, "
                              f"which door.{seen[pin]} already uses")
        seen[pin] = item.name
    _check_mqtt(config.mqtt, lambda *keys: where("mqtt", *keys))


def _check_mqtt(mqtt: MqttConfig, where: Callable[..., str]) -> None:
    """``[mqtt]``'s files are readable, and commands come only over TLS from an account."""
    if not mqtt.enabled:
        return
    for name in ("ca_file", "cert_file", "key_file"):
        if getattr(mqtt, name) is not None and not mqtt.tls:
            raise ConfigError(f"mqtt.{name} {where(name)} is used only over TLS: make mqtt.url "
                              "an mqtts:// address, or leave it out")
    if mqtt.key_file is not None and mqtt.cert_file is None:
        raise ConfigError(f"mqtt.key_file {where('key_file')} needs mqtt.cert_file, the client "
                          "certificate it is the key of")
    if mqtt.password_file is not None and not mqtt.username:
        raise ConfigError(f"mqtt.password_file {where('password_file')} needs mqtt.username, "
                          "the account the password is for")
    for name in ("password_file", "ca_file", "cert_file", "key_file"):
        path = getattr(mqtt, name)
        problem = None if path is None else _unreadable(path, text=name == "password_file")
        if problem:
            raise ConfigError(f"mqtt.{name} {where(name)} {problem}, got "
                              f"{_shown(str(path))}")
    if mqtt.accept_commands and not mqtt.tls:
        raise ConfigError(f"mqtt.accept_commands {where('accept_commands', 'url')} needs an "
                          "mqtts:// url: over plain MQTT anyone on the network could unlock "
                          "the door")
    if mqtt.accept_commands and not (mqtt.username or mqtt.cert_file):
        raise ConfigError(f"mqtt.accept_commands {where('accept_commands')} needs the door's "
                          "own account on the broker (mqtt.username and mqtt.password_file, "
                          "or a client certificate in mqtt.cert_file) for its ACL")


def _unreadable(path: Path, *, text: bool) -> str | None:
    """Why ``path`` cannot be read (``text``: as a password's first line), or None."""
    try:
        with open(path, "rb") as file:
            start = file.read(4096)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if text and not start.split(b"\n", 1)[0].rstrip(b"\r"):
        return "is empty: its first line must be the password"
    return None


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _displayed(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


class _Brief(reprlib.Repr):
    """``repr`` cut short for a message: a value from a file may be a megabyte of text, nested
    a thousand deep, or an int too long for ``repr`` (over 4,300 digits)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 60
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() <= 128:
            return repr(x)
        digits = int(x.bit_length() * math.log10(2)) + 1
        return f"<a number of about {digits} digits>"


_BRIEF = _Brief()


def _shown(value: Any) -> str:
    """``value`` for a one-line message: its repr, escaped and cut short."""
    text = _BRIEF.repr(value)
    # Each part is already short, but a list of dicts of lists still adds up to a paragraph.
    return text if len(text) <= 160 else text[:150] + "...(cut)"


def _shown_path(path: Path) -> str:
    """A file's name for a message: as it is, or quoted and escaped when it holds a line
    break or another character that would not print."""
    text = str(path)
    return text if text.isprintable() else _shown(text)


def _shown_name(name: str) -> str:
    """A table or key name as written in TOML: bare when it can be, else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]{1,60}", name) else _shown(name)
