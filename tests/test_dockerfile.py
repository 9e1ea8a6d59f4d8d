"""The image's defaults (issue 11, item 8): in its config file, never in GATEWAY_* variables.

The environment beats the file, so a default set as GATEWAY_<SECTION>__<KEY> in the image
would silently override the operator's mounted config. The Dockerfile's own sed edits are run
on the built-in config here (with the system's sed, as the build does) and the result loaded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.config import ListenAddress, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_the_image_sets_no_setting_in_its_environment() -> None:
    env_block = re.findall(r"^ENV (.*?)(?<!\\)$", DOCKERFILE, re.M | re.S)
    assert env_block
    assert not re.search(r"GATEWAY_[A-Z_]+__", " ".join(env_block))


@pytest.mark.skipif(shutil.which("sed") is None, reason="the build's sed is not installed")
def test_the_images_config_file_holds_its_defaults(tmp_path: Path) -> None:
    edits = re.findall(r"-e '([^']+)'", DOCKERFILE)
    assert len(edits) == 5
    arguments = [part for edit in edits for part in ("-e", edit)]
    edited = subprocess.run(
        ["sed", *arguments, str(ROOT / "config" / "gateway.toml")],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    config = tmp_path / "gateway.toml"
    config.write_text(edited, encoding="utf-8")
    settings = load_settings(config, {})
    assert settings.server.listen == [ListenAddress("0.0.0.0", 2525)]
    assert settings.metrics.listen == ListenAddress("0.0.0.0", 9125)
    assert settings.storage.state_dir == Path("/var/lib/eservice-gateway")
    assert settings.delivery.outbox_dir == Path("/var/lib/eservice-gateway/notices")
    assert settings.audit.format == "json"
