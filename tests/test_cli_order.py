"""Options go before or after the positionals of every command that takes them.

Each pair of command lines differs only in where the options stand; a user expects the same
answer from both, and never "unrecognized arguments".
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import GatewayFactory
from tests.filings import Filed, fill_store


def write_config(tmp_path: Path, filed: Filed) -> Path:
    """A config file that points at the filled store."""
    config = tmp_path / "order.toml"
    state = filed.gateway.settings.storage.state_dir
    config.write_text(
        f"[storage]\nstate_dir = {json.dumps(str(state))}\n\n"
        '[[offices]]\nname = "ice-occ-chicago"\ndisplay_name = "ICE OCC Chicago"\n'
        'short_name = "ICE OCC Chicago"\ntimezone = "America/Chicago"\nretires = 2017-09-12\n'
        'portal_url = "https://eservice.ice.gov/"\naddresses = ["filings@occ-chicago.example"]\n',
        encoding="utf-8",
    )
    return config


async def answer(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    async with asyncio.timeout(30):
        status = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def orders(command: list[str], positionals: list[str], options: list[str]) -> list[list[str]]:
    """The options before the positionals, after them, and between the first and the rest."""
    return [
        [*command, *options, *positionals],
        [*command, *positionals, *options],
        [*command, *positionals[:1], *options, *positionals[1:]],
    ]


async def test_options_stand_anywhere_around_the_positionals(
    start_gateway: GatewayFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filed = await fill_store(start_gateway)
    config = write_config(tmp_path, filed)
    log = tmp_path / "audit.log"
    log.write_text("", encoding="utf-8")
    reference = filed.refs["motion"]
    postmaster = filed.refs["postmaster"]
    cases = [
        (["audit"], ["show", reference], ["--tz", "office", "--config", str(config)]),
        (["audit"], ["verify", str(log)], ["--no-store", "--config", str(config)]),
        (["audit"], ["list"], ["--format", "json", "--config", str(config)]),
        (["queue"], ["show", "1"], ["--config", str(config)]),
        (["postmaster"], ["show", postmaster], ["--config", str(config)]),
    ]
    for command, positionals, options in cases:
        answers = [await answer(argv, capsys) for argv in orders(command, positionals, options)]
        assert "unrecognized arguments" not in answers[0][2]
        assert answers[0][0] in (0, 1), answers[0]
        assert answers[1:] == [answers[0], answers[0]], (command, positionals)
    status, out, _ = await answer(
        ["audit", "show", "--tz", "office", reference, "--config", str(config)], capsys
    )
    assert status == 0
    assert reference in out


def test_a_missing_or_unknown_command_is_still_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in ([], ["frobnicate"], ["--config", "x.toml", "serve"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
