"""The async tests in this directory run on uvloop's event loop, not asyncio's."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from gateway.smtp.eventloop import LoopFactory, loop_factory


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    pytest.importorskip("uvloop")
    factory = loop_factory("uvloop")
    assert factory is not None
    return {"uvloop": factory}
