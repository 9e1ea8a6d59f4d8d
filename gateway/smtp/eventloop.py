"""The event loop the gateway serves on: the standard library's, or uvloop's.

`[server] event_loop` chooses: "asyncio", "uvloop" (the `fast` extra: `pip install
'eservice-gateway[fast]'`), or "auto", uvloop when it is installed and measured faster. It
must not start a loop itself; app.py runs the one it names.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

from gateway.errors import ConfigError

__all__ = ["loop_factory", "loop_name"]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# Whether "auto" takes uvloop when it is installed. Not today: side by side on the same code
# (bench/receive.py --baseline . --event-loop uvloop --baseline-event-loop asyncio, 2 cores,
# 10 sessions, 2 KB), uvloop used 10 % more CPU per message on reused connections and 18 %
# more with a connection per message, and its rates were 2 % and 11 % lower: the sessions'
# time is in aiosmtpd's Python and our own, not in the loop, and the store's writer thread
# hands every commit back across threads. Measure again before turning this on.
_UVLOOP_IS_FASTER = False


def loop_factory(choice: str) -> LoopFactory | None:
    """What `asyncio.Runner(loop_factory=...)` takes for `choice`; None: asyncio's own loop.

    Raises:
        ConfigError: "uvloop" was chosen and is not installed.
    """
    if choice == "asyncio" or (choice == "auto" and not _UVLOOP_IS_FASTER):
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            why = "uvloop is not installed (pip install 'eservice-gateway[fast]')"
            raise ConfigError("server.event_loop", why) from None
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_name(choice: str) -> str:
    """The loop `choice` serves on, as check-config shows it: "asyncio" or "uvloop".

    Raises:
        ConfigError: "uvloop" was chosen and is not installed.
    """
    return "asyncio" if loop_factory(choice) is None else "uvloop"
