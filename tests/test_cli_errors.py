"""Every command's mistakes are one line on stderr and a non-zero exit, never a traceback.

The commands are read from the parser, so a new one is covered by the time it exists: it is
run with the arguments of ``ARGUMENTS`` (none if it has no entry), and its file arguments
are replaced by a missing file, a folder, and a file of garbage bytes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.cli import _command_parser, build_parser
from tests.conftest import DATA

PHOTO = DATA / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg"

# A run of each command that reaches its files ({image}: a photo; {db}: the database).
ARGUMENTS: dict[str, list[str]] = {
    "embed": ["{image}"],
    "enroll": ["--name", "Ada", "{image}"],
    "identify": ["{image}"],
    "liveness": ["{image}"],
    "verify": ["{image}", "{image}"],
    "people": ["list"],
    "templates": ["list", "Ada"],
    "token": ["list"],
    "admin": ["list"],
    "mqtt": ["test"],
    "camera": ["test"],
    "backup": ["--to", "{out}"],
}


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True,
                          text=True, timeout=120, input=stdin)


def commands() -> list[str]:
    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0]  # noqa: SLF001
    return sorted(subparsers.choices)


def takes_db(command: str) -> bool:
    parser = _command_parser(build_parser(), command)
    return any("--db" in action.option_strings for action in parser._actions)  # noqa: SLF001


def argv(command: str, *, image: Path, db: Path | None, config: Path | None,
         out: Path) -> list[str]:
    """The command's arguments with these files; ``db`` is only given to commands with
    ``--db``, the others get ``config`` (the file every command reads)."""
    words = [word.format(image=image, out=out) for word in ARGUMENTS.get(command, [])]
    if db is not None and takes_db(command):
        words += ["--db", str(db)]
    if config is not None:
        words += ["--config", str(config)]
    return [command, *words]


def assert_one_line(result: subprocess.CompletedProcess) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() and result.stderr.strip().count("\n") == 0, result.stderr


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(np.random.default_rng(5).bytes(50_000))
    folder = tmp_path / "a folder"
    folder.mkdir()
    return {"missing": tmp_path / "no" / "such.db", "folder": folder, "garbage": garbage,
            "out": tmp_path / "out"}


@pytest.mark.parametrize("command", commands())
@pytest.mark.parametrize("damage", ["missing", "folder", "garbage"])
def test_a_missing_folder_or_garbage_file_is_one_line(command, damage, files):
    bad = files[damage]
    if takes_db(command) and not (command == "enroll" and damage != "garbage"):
        # The database is the file such a command is about; a read must not create it.
        result = run(*argv(command, image=PHOTO, db=bad, config=None, out=files["out"]))
    elif "{image}" in ARGUMENTS.get(command, []):
        result = run(*argv(command, image=bad, db=files["out"] / "x.db", config=None,
                           out=files["out"]))
    else:
        result = run(*argv(command, image=PHOTO, db=None, config=bad, out=files["out"]))
    assert_one_line(result)
    assert not files["missing"].exists() and not files["missing"].parent.exists()


@pytest.mark.parametrize("command", commands())
def test_a_misspelled_option_is_one_line(command):
    result = run(command, "--nmae", "x")
    assert_one_line(result)
    assert f"facegate {command} --help" in result.stderr


def test_a_misspelled_option_or_command_gets_a_did_you_mean():
    assert "did you mean --name?" in run("enroll", "--nmae", "Ada", str(PHOTO)).stderr
    assert "did you mean enroll?" in run("enrol", "--name", "Ada").stderr
    assert "did you mean list?" in run("people", "lisst").stderr


def test_read_commands_say_no_database_rather_than_making_one(tmp_path):
    typo = tmp_path / "facegat.db"
    for command in (["events"], ["people", "list"], ["identify", str(PHOTO)], ["info"],
                    ["templates", "list", "Ada"], ["token", "list"], ["admin", "list"]):
        result = run(*command, "--db", str(typo))
        assert_one_line(result)
        assert f"no database at {typo}" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_data_folder_that_cannot_be_made_is_one_line():
    result = run("enroll", "--data-dir", "/proc/nope", "--name", "Ada", str(PHOTO))
    assert_one_line(result)
    assert "/proc/nope" in result.stderr


def test_a_folder_of_photos_instead_of_person_folders_names_the_parent(tmp_path):
    db = tmp_path / "gallery.db"
    result = run("enroll", "--db", str(db), "--from-folder", str(PHOTO.parent))
    assert_one_line(result)
    assert "no person folders" in result.stderr
    assert str(PHOTO.parent.parent) in result.stderr
    assert not db.exists()


def test_the_runtime_s_routine_info_line_is_not_shown():
    result = run("embed", str(PHOTO))
    assert result.returncode == 0, result.stderr
    assert "XNNPACK" not in result.stderr and result.stderr == ""


def test_what_else_native_code_says_while_a_model_loads_is_kept(capfd):
    import os

    from device.vision.interpreter import _without_runtime_chatter

    with _without_runtime_chatter():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: something real\n")
    assert capfd.readouterr().err == "ERROR: something real\n"
