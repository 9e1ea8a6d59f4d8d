"""[server] event_loop: the loop each choice gives, and the real server on uvloop.

The tests imported below run here again on uvloop's loop (conftest.py beside this file): real
sockets, pipelining, STARTTLS, the end of data, oversize and long-line messages and the drain,
as on asyncio's loop in their own modules.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from gateway.config import ServerSettings
from gateway.errors import ConfigError
from gateway.smtp.eventloop import loop_factory

uvloop = pytest.importorskip("uvloop")

from tests.test_drain import *  # noqa: E402, F403  # run again on uvloop
from tests.test_every_attempt import *  # noqa: E402, F403
from tests.test_inbound import *  # noqa: E402, F403
from tests.test_serve_process import (  # noqa: E402
    AFTER_CUTOFF,
    RETIRED,
    assert_recorded,
    database,
    mixed_attempts,
    run_cli,
    send_batch,
    serving,
    smtp_session,
    write_config,
)


async def test_the_tests_here_run_on_uvloop() -> None:
    assert type(asyncio.get_running_loop()) is uvloop.Loop


@pytest.mark.parametrize(
    ("choice", "expected"),
    # "auto" is asyncio's while uvloop measures slower (eventloop.py _UVLOOP_IS_FASTER).
    [("asyncio", None), ("auto", None), ("uvloop", "uvloop")],
)
def test_each_choice_gives_its_loop(choice: str, expected: str | None) -> None:
    factory = loop_factory(choice)
    assert (None if factory is None else factory.__module__.partition(".")[0]) == expected


def test_without_uvloop_auto_is_asyncio_and_uvloop_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import uvloop` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match=r"server\.event_loop: uvloop is not installed"):
        loop_factory("uvloop")


@pytest.mark.parametrize(
    ("choice", "shown"),
    [("auto", "auto (asyncio)"), ("asyncio", "asyncio"), ("uvloop", "uvloop")],
)
def test_check_config_names_the_loop_each_choice_serves_on(
    tmp_path: Path, choice: str, shown: str
) -> None:
    config = write_config(
        tmp_path, edit=("idle_timeout = 30\n", f'idle_timeout = 30\nevent_loop = "{choice}"\n')
    )
    checked = run_cli("check-config", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert f"server.event_loop = {shown}" in checked.stdout.splitlines()


def test_the_setting_defaults_to_auto_and_takes_only_the_three_choices() -> None:
    assert ServerSettings().event_loop == "auto"
    assert ServerSettings(event_loop="asyncio").event_loop == "asyncio"
    with pytest.raises(ValueError, match="event_loop"):
        ServerSettings(event_loop="trio")  # type: ignore[arg-type]


async def test_gateway_serve_on_uvloop_records_every_reply_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    # The real process with event_loop = "uvloop": signals, the store's writer thread
    # handing commits back to the loop, and the drain on SIGTERM.
    config = write_config(
        tmp_path, edit=("idle_timeout = 30\n", 'idle_timeout = 30\nevent_loop = "uvloop"\n')
    )
    attempts = mixed_attempts(12)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        async with smtp_session(served.port) as client, asyncio.timeout(30):
            replies = await send_batch(client, attempts)
            await client.quit()
        status = await served.gateway.stop()
    assert status == 0, served.gateway.stderr
    assert [r.code for r in replies] == [550 if a.recipient == RETIRED else 250 for a in attempts]
    for reply in replies:
        assert_recorded(database(tmp_path), reply)
