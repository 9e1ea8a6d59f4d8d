"""The image's defaults are in its config file, where a mounted config replaces them all.

The Dockerfile is read, not built (there is no Docker here): its `gateway init` line is run
with the paths moved into a tmp dir, and its environment is checked for setting overrides.
"""

from __future__ import annotations

import io
import re
import shlex
from contextlib import redirect_stdout
from pathlib import Path

from gateway.cli import main

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [i.strip() for i in re.split(r"(?<!\\)\n", "\n".join(lines)) if i.strip()]


def init_arguments() -> list[str]:
    (run,) = [i for i in instructions() if i.startswith("RUN gateway init")]
    words = shlex.split(run.replace("\\\n", " ").removeprefix("RUN "))
    return words[2 : words.index("&&")]  # after "gateway init"


def test_the_image_sets_no_setting_in_its_environment() -> None:
    env = " ".join(i for i in instructions() if i.startswith("ENV "))
    names = re.findall(r"\b(GATEWAY_[A-Z_]+)=", env)
    # GATEWAY_CONFIG only says where the file is; a GATEWAY_<SECTION>__<KEY> would beat it.
    assert names == ["GATEWAY_CONFIG"]
    assert "GATEWAY_CONFIG=/etc/eservice-gateway/gateway.toml" in env


def test_the_python_base_image_is_a_pinned_patch_release() -> None:
    (base,) = [i for i in instructions() if i.startswith("FROM ")]
    match = re.fullmatch(r"FROM python:3\.(\d+)\.(\d+)-slim\S*", base)
    assert match is not None, base
    minor, patch = int(match[1]), int(match[2])
    # The releases with the email header-folding and parser-DoS fixes.
    assert patch >= {11: 15, 12: 13, 13: 12}.get(minor, 0)


def test_the_images_config_listens_in_the_container_and_logs_json(tmp_path: Path) -> None:
    arguments = init_arguments()
    for option, path in (
        ("--config", tmp_path / "gateway.toml"),
        ("--state-dir", tmp_path / "state"),
    ):
        arguments[arguments.index(option) + 1] = str(path)
    with redirect_stdout(io.StringIO()):
        assert main(["init", *arguments]) == 0
    shown = io.StringIO()
    with redirect_stdout(shown):
        assert main(["check-config", "--config", str(tmp_path / "gateway.toml")]) == 0
    lines = shown.getvalue().splitlines()
    for expected in (
        "server.listen = 0.0.0.0:2525",
        "metrics.listen = 0.0.0.0:9125",
        "audit.format = json",
        f"storage.state_dir = {tmp_path / 'state'}",
        f"delivery.outbox_dir = {tmp_path / 'state' / 'notices'}",
    ):
        assert expected in lines
    assert not (tmp_path / "state" / "dkim").exists()  # made on first start, in the volume
