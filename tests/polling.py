"""Waiting for state another process (or thread) changes, where no event can be awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

__all__ = ["eventually"]

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | None], *, within: float = 10.0, every: float = 0.02
) -> T:
    """The first truthy result of `check()`, polled every `every` seconds, for at most `within`.

    Raises:
        TimeoutError: `check()` gave nothing truthy in time.
    """
    async with asyncio.timeout(within):
        while True:
            result = check()
            if result:
                return result
            await asyncio.sleep(every)
