"""`gateway init` in-process: what it refuses, and that it never leaves a half-written install."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.cli import main

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "eservice-gateway.service"


def init(tmp_path: Path, *extra: str) -> int:
    config, state = tmp_path / "etc" / "gateway.toml", tmp_path / "state"
    return main(["init", "--config", str(config), "--state-dir", str(state), *extra])


def test_a_domain_that_makes_no_valid_config_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(tmp_path, "--domain", "not a domain") == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway: config error: ")
    # Every setting the bad domain broke is named, in plain words, not as a regex.
    assert "server.hostname: is not in the expected form" in err
    assert "should match pattern" not in err
    assert not (tmp_path / "etc" / "gateway.toml").exists()
    assert not (tmp_path / "state").exists()
    assert list((tmp_path / "etc").iterdir()) == []  # no draft left behind


def test_force_replaces_the_config_and_keeps_the_dkim_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(tmp_path, "--office", "first") == 0
    first = capsys.readouterr().out
    assert init(tmp_path, "--office", "second", "--force") == 0
    second = capsys.readouterr().out
    written = tomllib.loads((tmp_path / "etc" / "gateway.toml").read_text(encoding="utf-8"))
    assert [o["name"] for o in written["offices"]] == ["second"]
    # A key that DNS may already publish is never replaced.
    dkim = [line for line in first.splitlines() if "_domainkey" in line]
    assert dkim == [line for line in second.splitlines() if "_domainkey" in line]


def test_the_systemd_unit_reads_every_setting_from_the_config_file() -> None:
    unit = UNIT.read_text(encoding="utf-8")
    settings = [line for line in unit.splitlines() if line.startswith("Environment=")]
    assert settings == ["Environment=GATEWAY_CONFIG=/etc/eservice-gateway/gateway.toml"]
    # `systemctl reload` is SIGHUP, which re-reads the config (tests/test_reload.py).
    reload = [line for line in unit.splitlines() if line.startswith("ExecReload=")]
    assert reload == ["ExecReload=/bin/kill -HUP $MAINPID"]
    assert "RestartPreventExitStatus=2" in unit
