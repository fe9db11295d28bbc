"""``make install`` (scripts/install) into a temporary root: DESTDIR, --dry-run, never
overwriting the configuration, the `pi` extra only on a Raspberry Pi."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
UNITS = ("facegate.service", "facegate-backup.service", "facegate-backup.timer")


def install(root: Path, *flags: str, model: str = "") -> subprocess.CompletedProcess:
    board = root.parent / "model"
    board.write_bytes(model.encode() + b"\0")
    env = {**os.environ, "DESTDIR": str(root), "FACEGATE_DEVICE_TREE_MODEL": str(board)}
    return subprocess.run(["make", "-s", "install", f"INSTALL_FLAGS={' '.join(flags)}"],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)


def test_install_puts_the_units_and_a_config_skeleton_under_destdir(tmp_path):
    root = tmp_path / "root"
    result = install(root, "--no-venv")
    assert result.returncode == 0, result.stderr
    units = root / "etc" / "systemd" / "system"
    for unit in UNITS:
        text = (units / unit).read_text()
        assert "/opt/facegate" not in text  # pointed at this checkout
    assert f"ExecStart={PROJECT}/.venv/bin/facegate run" in (units / UNITS[0]).read_text()
    config = root / "etc" / "facegate" / "facegate.toml"
    assert config.read_text() == (PROJECT / "docs" / "facegate.example.toml").read_text()
    assert "training.build_models --check" in result.stdout  # the models were checked


def test_install_never_overwrites_the_configuration(tmp_path):
    root = tmp_path / "root"
    config = root / "etc" / "facegate" / "facegate.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[door]\nrelay_pin = 5\n")
    result = install(root, "--no-venv")
    assert result.returncode == 0, result.stderr
    assert config.read_text() == "[door]\nrelay_pin = 5\n"
    assert f"kept {config}" in result.stdout


def test_a_dry_run_writes_nothing_and_adds_the_pi_extra_only_on_a_pi(tmp_path):
    root = tmp_path / "root"
    elsewhere = install(root, "--dry-run", model="QEMU Virtual Machine")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert not root.exists()
    assert "pip install -q -e .\n" in elsewhere.stdout and ".[pi]" not in elsewhere.stdout
    assert "[dev]" not in elsewhere.stdout and "[train]" not in elsewhere.stdout
    on_pi = install(root, "--dry-run", model="Raspberry Pi 5 Model B Rev 1.0")
    assert on_pi.returncode == 0, on_pi.stderr
    assert "pip install -q -e .[pi]" in on_pi.stdout
    assert not root.exists()
