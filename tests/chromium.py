"""Debian's headless Chromium, for tests that check HTML as a browser engine renders it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["CHROMIUM", "needs_chromium", "require_chromium", "run_chromium"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


def require_chromium() -> None:
    """Skip the calling test without Chromium; under CI=true, fail it (.ci/run installs it)."""
    if CHROMIUM is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed; CI must install it (.ci/run)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def run_chromium(page: Path | str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Open `page` (a file, or an http:// URL on loopback) headless with a fresh profile and no
    network chatter; `args` say what to do (--screenshot=PNG, --dump-dom, --window-size=W,H)."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
        page if isinstance(page, str) else page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, timeout=90, check=False)
