"""The event loop the gateway serves on: the standard library's, or uvloop's.

`[server] event_loop` chooses: "asyncio", "uvloop" (the `fast` extra: `pip install
'eservice-gateway[fast]'`), or "auto", uvloop when it is installed. It must not start a loop
itself; app.py runs the one it names.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

from gateway.errors import ConfigError

__all__ = ["loop_factory"]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory | None:
    """What `asyncio.Runner(loop_factory=...)` takes for `choice`; None: asyncio's own loop.

    Raises:
        ConfigError: "uvloop" was chosen and is not installed.
    """
    if choice == "asyncio":
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
