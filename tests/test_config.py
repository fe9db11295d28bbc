"""Configuration: defaults, where the file and the data folder are found, precedence of file,
environment and command line, and one clear sentence for every fault.

The system places (/etc, /var/lib) and the checkout are handed in as ``Places`` under
tmp_path, so the tests never read the machine's own configuration.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from pathlib import Path

import pytest

from device.config import (
    SECTIONS,
    Config,
    Places,
    load_config,
)
from device.errors import ConfigError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


@pytest.fixture
def places(tmp_path) -> Places:
    return Places(system_config=tmp_path / "etc" / "facegate.toml",
                  system_data_dir=tmp_path / "var-lib-facegate",
                  project_dir=tmp_path / "project")


@pytest.fixture
def toml(tmp_path):
    def write(text: str, name: str = "facegate.toml") -> Path:
        path = tmp_path / "conf" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return path

    return write


def load(path=None, overrides=None, environ=None, places=None) -> Config:
    return load_config(path, overrides or {}, environ=environ or {}, places=places)


# --- Defaults and places -------------------------------------------------------------------


def test_with_no_file_every_key_has_its_default(places):
    config = load(places=places)
    assert config.file is None
    assert config.door.id == socket.gethostname()
    assert (config.door.relay_pin, config.door.unlock_seconds, config.door.contact_pin) == (
        17, 3.0, None)
    assert config.camera.source == "auto" and (config.camera.width, config.camera.height) == (
        640, 480)
    assert config.recognition.threshold is None and config.recognition.votes_needed == 2
    assert config.recognition.models_dir.name == "models"
    assert (config.web.host, config.web.port) == ("127.0.0.1", 8080)
    assert config.events.max_snapshot_bytes == 1_000_000_000
    assert config.events.min_free_bytes == 200_000_000
    data = places.project_dir / "var" / "data"
    assert config.paths.data_dir == data
    assert config.paths.database == data / "facegate.db"
    assert config.paths.snapshots == data / "snapshots"


def test_the_system_data_folder_is_used_when_it_exists_and_is_writable(places):
    places.system_data_dir.mkdir()
    assert load(places=places).paths.data_dir == places.system_data_dir


def test_an_installed_facegate_uses_the_system_places_even_when_missing(places):
    installed = dataclasses.replace(places, project_dir=None)
    config = load(places=installed)
    assert config.paths.data_dir == places.system_data_dir and config.file is None


def test_the_system_file_is_preferred_to_the_checkouts(places):
    development = places.project_dir / "var" / "facegate.toml"
    development.parent.mkdir(parents=True)
    development.write_text("[camera]\nfps = 10\n")
    assert load(places=places).file == development
    assert load(places=places).camera.fps == 10

    places.system_config.parent.mkdir()
    places.system_config.write_text("[camera]\nfps = 20\n")
    assert load(places=places).camera.fps == 20


def test_a_named_file_beats_FACEGATE_CONFIG_which_beats_the_system_file(places, toml):
    places.system_config.parent.mkdir()
    places.system_config.write_text("[camera]\nfps = 20\n")
    from_env = toml("[camera]\nfps = 25\n", "env.toml")
    named = toml("[camera]\nfps = 30\n", "named.toml")
    environ = {"FACEGATE_CONFIG": str(from_env)}
    assert load(environ=environ, places=places).camera.fps == 25
    assert load(named, environ=environ, places=places).camera.fps == 30


def test_a_named_file_that_does_not_exist_is_an_error(places, tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope.toml does not exist"):
        load(tmp_path / "nope.toml", places=places)
    with pytest.raises(ConfigError, match=r"nope.toml \(named by \$FACEGATE_CONFIG\) does not"):
        load(environ={"FACEGATE_CONFIG": str(tmp_path / "nope.toml")}, places=places)


# --- Precedence ----------------------------------------------------------------------------


def test_the_command_line_beats_the_environment_which_beats_the_file(places, toml, tmp_path):
    path = toml('[paths]\ndata_dir = "/srv/from-file"\n[door]\nunlock_seconds = 4\n')
    environ = {"FACEGATE_DATA_DIR": "/srv/from-env"}
    assert load(path, places=places).paths.data_dir == Path("/srv/from-file")
    assert load(path, environ=environ, places=places).paths.data_dir == Path("/srv/from-env")
    config = load(path, {"paths.data_dir": "/srv/from-flag", "door.unlock_seconds": 5.5},
                  environ=environ, places=places)
    assert config.paths.data_dir == Path("/srv/from-flag")
    assert config.door.unlock_seconds == 5.5
    assert config.file == path


def test_command_line_strings_are_read_as_toml_values_and_unset_options_are_skipped(places):
    config = load(overrides={"door.unlock_seconds": "2.5", "camera.fps": "10",
                             "web.enabled": "false", "camera.source": "0",
                             "recognition.threshold": None, "web.listen": "0.0.0.0:9000"},
                  places=places)
    assert config.door.unlock_seconds == 2.5 and config.camera.fps == 10
    assert config.web.enabled is False and config.camera.source == "0"
    assert config.recognition.threshold is None
    assert (config.web.host, config.web.port) == ("0.0.0.0", 9000)


def test_relative_paths_in_the_file_are_relative_to_the_file(places, toml):
    path = toml('[paths]\ndata_dir = "data"\n[recognition]\nmodels_dir = "../models"\n')
    config = load(path, places=places)
    assert config.paths.data_dir == path.parent / "data"
    assert config.recognition.models_dir.resolve() == path.parent.parent / "models"


def test_a_camera_index_may_be_written_as_a_number(places, toml):
    assert load(toml("[camera]\nsource = 1\n"), places=places).camera.source == "1"


def test_a_full_file_loads_into_a_frozen_tree_shown_by_as_dict(places, toml):
    path = toml(
        '[door]\nid = "front-door"\ncontact_pin = 27\n'
        '[recognition]\nthreshold = 0.4\nmargin = 0\nvotes_needed = 3\nvotes_window = 3\n'
        "[events]\nmax_age_days = 30\nmax_snapshot_mb = 0\n"
    )
    config = load(path, places=places)
    assert config.door.contact_pin == 27 and config.recognition.threshold == 0.4
    assert isinstance(config.recognition.margin, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.door.unlock_seconds = 10
    shown = config.as_dict()
    assert list(shown) == list(SECTIONS)
    assert shown["door"]["id"] == "front-door" and shown["door"]["buzzer_pin"] is None
    assert shown["paths"]["data_dir"] == str(config.paths.data_dir)


# --- Faults --------------------------------------------------------------------------------


def test_an_unknown_key_is_named_with_the_key_it_probably_meant(places, toml):
    path = toml("[door]\nunlock_secs = 5\n")
    with pytest.raises(ConfigError) as error:
        load(path, places=places)
    assert str(error.value) == (
        f"unknown key 'door.unlock_secs' in {path} (did you mean 'door.unlock_seconds'?)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[camera]\nunlock_seconds = 5\n",
         "unknown key 'camera.unlock_seconds' in {path} (did you mean 'door.unlock_seconds'?)"),
        ("[dor]\nrelay_pin = 17\n", "unknown section [dor] in {path} (did you mean [door]?)"),
        ("relay_pin = 17\n",
         "unknown key 'relay_pin' in {path} (did you mean 'door.relay_pin'?): every key belongs"),
        ("[door]\ncolour = 'red'\n", "unknown key 'door.colour' in {path}"),
        ("door = 3\n", "door in {path} must be a section ([door] followed by its keys), got 3"),
    ],
)
def test_unknown_sections_and_keys_are_refused_with_a_suggestion(places, toml, text, message):
    path = toml(text)
    with pytest.raises(ConfigError) as error:
        load(path, places=places)
    assert str(error.value).startswith(message.format(path=path))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[door]\nunlock_seconds = 90", "door.unlock_seconds in {path} must be from 0.5 to 60, "
                                        "got 90"),
        ("[door]\nunlock_seconds = 0.1", "door.unlock_seconds in {path} must be from 0.5 to 60"),
        ('[door]\nunlock_seconds = "3"', "door.unlock_seconds in {path} must be a number, got '3'"),
        ("[door]\nunlock_seconds = nan", "door.unlock_seconds in {path} must be a finite number"),
        ("[door]\nrelay_pin = 40", "door.relay_pin in {path} must be from 0 to 27, got 40"),
        ("[door]\nrelay_pin = 17.0", "door.relay_pin in {path} must be a whole number, got 17.0"),
        ("[door]\nrelay_active_high = 1", "door.relay_active_high in {path} must be true or false"),
        ('[door]\nid = "front door"', "door.id in {path} must be 1 to 64 letters"),
        ("[camera]\nfps = 0", "camera.fps in {path} must be from 1 to 120, got 0"),
        ("[camera]\nsource = true", "camera.source in {path} must be \"auto\""),
        ("[recognition]\nthreshold = 1.5", "recognition.threshold in {path} must be from -1 to 1"),
        ("[recognition]\nmodel = 3", "recognition.model in {path} must be a string (in quotes)"),
        ("[recognition]\nvotes_window = 11", "recognition.votes_window in {path} must be from 1"),
        ("[events]\nmax_snapshot_mb = -1", "events.max_snapshot_mb in {path} must be from 0 to"),
        ("[events]\nsnapshot_frames = 'yes'", "events.snapshot_frames in {path} must be true or"),
        ("[web]\nenabled = 'no'", "web.enabled in {path} must be true or false, got 'no'"),
        ("[web]\ncookie_secure = 1", "web.cookie_secure in {path} must be true or false"),
        ('[paths]\ndata_dir = ""', "paths.data_dir in {path} must be a path (a string in quotes)"),
    ],
)
def test_a_wrong_type_or_out_of_range_value_names_the_key_and_the_file(
    places, toml, line, message
):
    path = toml(line + "\n")
    with pytest.raises(ConfigError) as error:
        load(path, places=places)
    assert str(error.value).startswith(message.format(path=path))


@pytest.mark.parametrize(
    "listen", ["8080", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "300.1.1.1:80",
               "[::zz]:80", "::1:8080", "local host:80", ":8080"],
)
def test_a_bad_listen_address_is_refused(places, toml, listen):
    path = toml(f'[web]\nlisten = "{listen}"\n')
    with pytest.raises(ConfigError, match=rf"^web\.listen in {re.escape(str(path))} must "):
        load(path, places=places)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("0.0.0.0:80", "0.0.0.0", 80), ("[::]:8080", "::", 8080), ("door-1.local:443",
                                                                  "door-1.local", 443)],
)
def test_a_listen_address_is_host_and_port(places, listen, host, port):
    web = load(overrides={"web.listen": listen}, places=places).web
    assert (web.host, web.port) == (host, port)


def test_secure_cookies_are_off_unless_the_web_section_asks_for_them(places, toml):
    assert load(places=places).web.cookie_secure is False
    assert load(toml("[web]\ncookie_secure = true\n"), places=places).web.cookie_secure is True
    assert load(overrides={"web.cookie_secure": "true"}, places=places).web.cookie_secure


def test_more_votes_needed_than_the_window_holds_is_refused(places, toml):
    path = toml("[recognition]\nvotes_needed = 4\n")
    with pytest.raises(ConfigError) as error:
        load(path, places=places)
    assert str(error.value).startswith(
        f"recognition.votes_needed (4) cannot be more than recognition.votes_window (3) in {path}"
    )


def test_two_devices_on_one_pin_are_refused(places, toml):
    path = toml("[door]\ncontact_pin = 22\nexit_button_pin = 22\n")
    with pytest.raises(ConfigError, match=rf"^door.exit_button_pin in {re.escape(str(path))} is "
                                          "GPIO 22, which door.contact_pin already uses"):
        load(path, places=places)


def test_a_toml_syntax_error_gives_the_line_number(places, toml):
    path = toml("[door]\nrelay_pin = 17\nunlock_seconds 3\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} is not valid TOML: .*line 3"):
        load(path, places=places)


def test_a_config_file_that_is_not_utf8_is_refused(places, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[door]\nid = "t\u00fcr"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load(path, places=places)


def test_command_line_faults_say_they_came_from_the_command_line(places):
    with pytest.raises(ConfigError, match=r"^unknown key 'camera.sorce' on the command line "
                                          r"\(did you mean 'camera.source'\?\)"):
        load(overrides={"camera.sorce": "0"}, places=places)
    with pytest.raises(ConfigError, match=r"^camera.fps on the command line must be a whole "
                                          "number, got 'fast'"):
        load(overrides={"camera.fps": "fast"}, places=places)
    with pytest.raises(ConfigError, match=r"^paths.data_dir in \$FACEGATE_DATA_DIR"):
        load(overrides={}, environ={"FACEGATE_DATA_DIR": " "}, places=places)


# --- The documentation ---------------------------------------------------------------------


def _documented() -> dict[str, str]:
    """``{"section.key": "default cell"}`` from docs/configuration.md's tables."""
    documented, section = {}, None
    for line in DOCS.read_text().splitlines():
        if heading := re.fullmatch(r"### \[(\w+)\]", line):
            section = heading[1]
        elif section and (row := re.match(r"\| `(\w+)` \| [^|]+ \| ([^|]+) \|", line)):
            documented[f"{section}.{row[1]}"] = row[2].strip()
    return documented


def _as_toml(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def test_every_key_is_documented_with_its_default():
    documented = _documented()
    defaults = Config()
    keys = {f"{name}.{item.name}": getattr(getattr(defaults, name), item.name)
            for name in SECTIONS for item in dataclasses.fields(SECTIONS[name])}
    assert set(documented) == set(keys)
    computed = {"door.id", "recognition.models_dir", "paths.data_dir"}  # vary by machine
    for key, default in keys.items():
        if key not in computed:
            assert documented[key] == _as_toml(default), key


def test_the_example_in_the_documentation_loads(places, toml):
    example = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)[1]
    config = load(toml(example), places=places)
    assert config.door.id == "front-door" and config.web.port == 8080


def test_the_example_configuration_in_the_docs_loads(tmp_path):
    example = Path(__file__).parents[1] / "docs" / "facegate.example.toml"
    text = example.read_text().replace("/var/lib/facegate", str(tmp_path))
    (tmp_path / "facegate.toml").write_text(text)
    config = load_config(tmp_path / "facegate.toml")
    assert config.door.id == "front-door" and config.door.contact_pin == 27
