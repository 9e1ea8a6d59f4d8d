"""[server] event_loop: the loop each choice gives, and the real server on uvloop.

The tests imported below run here again on uvloop's loop (conftest.py beside this file): real
sockets, pipelining, STARTTLS, the end of data, oversize and long-line messages and the drain,
as on asyncio's loop in their own modules.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from gateway.config import ServerSettings
from gateway.errors import ConfigError
from gateway.smtp.eventloop import loop_factory

uvloop = pytest.importorskip("uvloop")

from tests.test_drain import *  # noqa: E402, F403  # run again on uvloop
from tests.test_every_attempt import *  # noqa: E402, F403
from tests.test_inbound import *  # noqa: E402, F403


async def test_the_tests_here_run_on_uvloop() -> None:
    assert type(asyncio.get_running_loop()) is uvloop.Loop


@pytest.mark.parametrize(
    ("choice", "expected"), [("asyncio", None), ("auto", "uvloop"), ("uvloop", "uvloop")]
)
def test_each_choice_gives_its_loop(choice: str, expected: str | None) -> None:
    factory = loop_factory(choice)
    assert (None if factory is None else factory.__module__.partition(".")[0]) == expected


def test_auto_falls_back_to_asyncio_and_uvloop_refuses_to_start_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import uvloop` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match=r"server\.event_loop: uvloop is not installed"):
        loop_factory("uvloop")


def test_the_setting_defaults_to_auto_and_takes_only_the_three_choices() -> None:
    assert ServerSettings().event_loop == "auto"
    assert ServerSettings(event_loop="asyncio").event_loop == "asyncio"
    with pytest.raises(ValueError, match="event_loop"):
        ServerSettings(event_loop="trio")  # type: ignore[arg-type]
