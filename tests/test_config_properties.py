"""Whatever the configuration is handed, it ends in a Config or one ConfigError sentence.

Hypothesis writes TOML documents of the real sections and keys mixed with junk ones, every
TOML value type (huge ints, nan and inf, strings with control characters, arrays, nested
tables, dates and times), raw bytes and text in other encodings, command-line overrides as
``--set key=value`` passes them, and site settings as the page and the API pass them. No
other exception (TypeError, ValueError, OverflowError, RecursionError, UnicodeDecodeError)
may escape, and the message is one line.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from device.config import SECTIONS, Config, Places, load_config
from device.errors import ConfigError, SettingInvalid
from device.gallery.store import Gallery
from device.site_settings import (
    SETTABLE,
    apply_site_settings,
    read_site_settings,
    validate_site_settings,
    write_site_settings,
)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = {section: [item.name for item in dataclasses.fields(cls)]
        for section, cls in SECTIONS.items()}
DOTTED = sorted(f"{section}.{key}" for section, keys in KEYS.items() for key in keys)


@pytest.fixture(name="places")
def fixture_places(tmp_path: Path) -> Places:
    # Never the machine's own /etc/facegate or /var/lib/facegate.
    return Places(system_config=tmp_path / "etc" / "facegate.toml",
                  system_data_dir=tmp_path / "var-lib-facegate", project_dir=None)


def load_or_refuse(path: Path | None, overrides: dict[str, Any] | None, places: Places,
                   environ: dict[str, str] | None = None) -> Config | ConfigError:
    """The outcome: a Config, or the ConfigError whose message must be one line."""
    try:
        config = load_config(path, overrides, environ=environ or {}, places=places)
    except ConfigError as error:
        assert_one_line(error)
        note("refused")
        return error
    note("loaded")
    return config


def note(outcome: str) -> None:
    if currently_in_test_context():
        event(outcome)  # shown by pytest --hypothesis-show-statistics


def assert_one_line(error: Exception) -> None:
    message = str(error)
    assert message.strip(), repr(error)
    assert len(message.splitlines()) == 1, message
    assert len(message) < 600, message  # a sentence, not the value a file held


# --- Writing TOML --------------------------------------------------------------------------


def toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_value(value: Any) -> str:
    """``value`` as TOML (an inline table for a dict); any value TOML can hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # Hex for the longest, which int() reads whatever the length (decimal stops at 4,300
        # digits); TOML's hex has no sign, so a huge negative one is written positive.
        return hex(abs(value)) if abs(value) > 10**4000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> str:
    """Top-level keys first, then each table as ``[name]`` and its keys."""
    lines = [f"{toml_string(k)} = {toml_value(v)}" for k, v in document.items()
             if not isinstance(v, dict)]
    for name, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_string(name)}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --- What to write -------------------------------------------------------------------------

junk_names = st.text(min_size=1, max_size=12)
huge_ints = st.builds(lambda digit, power, sign: sign * digit * 10**power,
                      st.integers(1, 9), st.integers(15, 5000), st.sampled_from([1, -1]))
aware = st.datetimes(timezones=st.builds(lambda minutes: timezone(timedelta(minutes=minutes)),
                                         st.integers(-23 * 60, 23 * 60)))
scalars = st.one_of(
    st.integers(-5, 5000),
    st.integers(),
    huge_ints,
    st.floats(),  # nan, inf and -inf included
    st.floats(-2, 3700),
    st.booleans(),
    st.text(max_size=30),  # control characters included
    st.sampled_from(["auto", "0", "127.0.0.1:8080", "[::1]:8080", "~", "~nobody-here", "",
                     "a\x00b", "fe80::1", "host:0", "mobilefacenet"]),
    st.datetimes(),
    aware,
    st.dates(),
    st.times(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(junk_names, inner, max_size=3), max_leaves=8)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document of real sections and keys, with junk sections, keys and top-level keys."""
    document: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)) | junk_names, max_size=4,
                                 unique=True)):
        keys = st.sampled_from(KEYS.get(section, ["id"]))
        document[section] = draw(st.dictionaries(keys | junk_names if draw(st.booleans())
                                                 else keys, values, max_size=5))
    if draw(st.integers(0, 5)) == 0:
        document[draw(junk_names)] = draw(values)  # a key outside any table, or a whole table
    return document


# --- The file ------------------------------------------------------------------------------


@FUZZ
@given(document=documents())
def test_any_toml_document_loads_or_is_refused_in_one_sentence(document, tmp_path, places):
    path = tmp_path / "facegate.toml"
    path.write_text(toml_document(document), encoding="utf-8")
    load_or_refuse(path, None, places)


@FUZZ
@given(text=st.text(st.characters(codec="utf-8"), max_size=200))
def test_any_text_loads_or_is_refused_in_one_sentence(text, tmp_path, places):
    path = tmp_path / "facegate.toml"
    path.write_text(text, encoding="utf-8")
    load_or_refuse(path, None, places)


@FUZZ
@given(data=st.binary(max_size=200)
       | st.builds(lambda text: text.encode("utf-16"), st.text(max_size=30))
       | st.just("[door]\nid = \"Tür\"\n".encode("latin-1")))
def test_any_bytes_load_or_are_refused_in_one_sentence(data, tmp_path, places):
    path = tmp_path / "facegate.toml"
    path.write_bytes(data)
    load_or_refuse(path, None, places)


@pytest.mark.parametrize("text", [
    "[door]\nunlock_seconds = 1" + "0" * 400 + "\n",  # beyond a float
    "[door]\nrelay_pin = " + "1" * 5000 + "\n",  # beyond int()'s 4,300 digits
    "[camera]\nsource = 0x" + "f" * 5000 + "\n",  # hex has no limit: beyond str()
    "[door]\nid = [" + "[" * 5000 + "]" * 5001 + "\n",  # beyond the recursion limit
    "[door]\nid = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",
    "[door]\nid." + "a." * 3000 + "b = 1\n",  # a table nested 3,000 deep
    "[paths]\ndata_dir = \"~nobody-here\"\n",  # no such home folder
    "[paths]\ndata_dir = \"a\\u0000b\"\n",
    "[\"door\\u2028\"]\nid = 1\n",  # a line separator in a name
    "door = " + "1" * 4000 + "\n",
])
def test_values_beyond_reason_are_refused_in_one_sentence(text, tmp_path, places):
    path = tmp_path / "facegate.toml"
    path.write_text(text, encoding="utf-8")
    assert isinstance(load_or_refuse(path, None, places), ConfigError)


@FUZZ
@given(section=st.sampled_from(sorted(SECTIONS)), data=st.data())
def test_a_number_in_range_is_kept(section, data, tmp_path, places):
    """The other side: whatever in-range number is written comes back as written."""
    numbers = [item for item in dataclasses.fields(SECTIONS[section])
               if item.metadata["low"] is not None]
    if not numbers:
        return
    item = data.draw(st.sampled_from(numbers))
    low, high = item.metadata["low"], item.metadata["high"]
    kind = item.type if item.type in ("int", "float") else item.type.split(" ")[0]
    number = (data.draw(st.integers(low, high)) if kind == "int"
              else data.draw(st.floats(low, high)))
    path = tmp_path / "facegate.toml"
    path.write_text(f"[{section}]\n{item.name} = {toml_value(number)}\n", encoding="utf-8")
    outcome = load_or_refuse(path, None, places)
    if isinstance(outcome, ConfigError):  # only a rule of two keys may refuse it
        assert "cannot be more than" in str(outcome) or "already uses" in str(outcome)
    else:
        assert getattr(getattr(outcome, section), item.name) == number


# --- The command line ----------------------------------------------------------------------

override_text = st.one_of(
    st.text(max_size=30),
    st.builds(toml_value, scalars),
    st.builds(lambda power: "9" * power, st.integers(15, 4200)),
    st.sampled_from(["1e400", "nan", "-inf", "3\n[door]\nid = 1", "[" * 3000, "0x" + "f" * 5000,
                     "1" * 5000, "true", "2024-01-01", "{a = 1}"]),
)


@FUZZ
@given(overrides=st.dictionaries(st.sampled_from(DOTTED) | junk_names, override_text | st.none(),
                                 max_size=4))
def test_any_command_line_override_loads_or_is_refused_in_one_sentence(overrides, places):
    outcome = load_or_refuse(None, overrides, places)
    if isinstance(outcome, Config):
        for key, text in overrides.items():
            if text is not None and key in ("camera.source", "door.id", "web.listen"):
                assert getattr(getattr(outcome, key.split(".")[0]), key.split(".")[1]) == text


env_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


@FUZZ
@given(environ=st.fixed_dictionaries({}, optional={
    "FACEGATE_DATA_DIR": env_text | st.sampled_from(["~nobody-here", "~", " ", "rel/dir"]),
    "FACEGATE_MODELS": env_text | st.sampled_from(["~nobody-here/models", "/nonexistent"]),
    "FACEGATE_CONFIG": env_text | st.sampled_from(["/", "/nonexistent.toml", "/dev/null",
                                                   "/tmp/a\nb.toml"]),
}))
def test_any_environment_loads_or_is_refused_in_one_sentence(environ, places):
    load_or_refuse(None, None, places, environ)


# --- The settings page ---------------------------------------------------------------------

setting_values = st.one_of(st.none(), scalars, override_text, values)
settings_changes = st.dictionaries(st.sampled_from(sorted(SETTABLE)), setting_values, max_size=4)


def check_or_refuse(call, *args, **kwargs) -> Any:
    try:
        return call(*args, **kwargs)
    except SettingInvalid as error:
        assert_one_line(error)
        # The key to show the message beside: a settable one, or the unknown one sent.
        assert error.key in SETTABLE or error.key in args[-1] or error.key == "", error.key
        return error


@FUZZ
@given(changes=settings_changes,
       base=st.none() | st.dictionaries(st.sampled_from(sorted(SETTABLE)), scalars, max_size=3))
def test_any_site_setting_is_checked_or_refused_in_one_sentence(changes, base):
    checked = check_or_refuse(validate_site_settings, changes, base=base)
    if isinstance(checked, dict):
        assert set(checked) <= SETTABLE
        config = check_or_refuse(apply_site_settings, Config(), checked)
        assert isinstance(config, Config | SettingInvalid)


@pytest.fixture(scope="module", name="settings_db")
def fixture_settings_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "facegate.db"
    Gallery(path).close()
    return path


# write_site_settings names an unknown key as it is: the page and the API send only known
# ones, so the junk keys here are printable.
printable_names = st.text(st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=1,
                          max_size=12)


@FUZZ
@given(changes=settings_changes
       | st.dictionaries(printable_names | st.sampled_from(DOTTED), setting_values, max_size=3))
def test_stored_site_settings_are_always_ones_the_config_accepts(changes, settings_db):
    """Whatever is sent, what the table holds afterwards still passes the config's checks."""
    before = read_site_settings(settings_db)
    outcome = check_or_refuse(write_site_settings, settings_db, changes, by="fuzz")
    after = read_site_settings(settings_db)
    if isinstance(outcome, SettingInvalid):
        assert after == before  # refused: nothing stored
    assert validate_site_settings(after) == after
    assert set(after) <= SETTABLE
    assert all(not isinstance(value, float) or math.isfinite(value) for value in after.values())


def test_the_emitter_writes_toml_that_reads_back():
    """The test's own TOML writer, checked on the awkward values it is meant to carry."""
    import tomllib

    awkward = {"t": {"s": "a\"\\\x00\x1f\x7f\u2028é", "n": [1, -2.5, float("inf")],
                     "d": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "i": {"x": True}}}
    assert tomllib.loads(toml_document(awkward)) == awkward
