"""`gateway check-config` shows what is in force, as `postconf -n` does, and each office."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import default_config_path, load_settings
from gateway.ops.checkconfig import print_check

DEFAULT = default_config_path().read_text(encoding="utf-8")
DECOMMISSIONED = DEFAULT.replace("# decommissions = 2027-09-12", "decommissions = 2027-09-12")


def report(text: str, now: datetime, tmp_path: Path) -> list[str]:
    config = tmp_path / "gateway.toml"
    config.write_text(text, encoding="utf-8")
    out = io.StringIO()
    print_check(load_settings(config, {}), now=now, out=out)
    return out.getvalue().splitlines()


@pytest.mark.parametrize(
    ("now", "phase", "boundary"),
    [
        (datetime(2017, 9, 1, tzinfo=UTC), "active", "warn from 2017-09-11 00:00:00 CDT"),
        (datetime(2017, 9, 11, 12, tzinfo=UTC), "warn", "retired from 2017-09-12 00:00:00 CDT"),
        (
            datetime(2026, 12, 2, tzinfo=UTC),
            "retired",
            "decommissioned from 2027-09-12 00:00:00 CDT",
        ),
        (datetime(2028, 1, 1, tzinfo=UTC), "decommissioned", "none (no later phase is configured)"),
    ],
)
def test_each_office_shows_its_phase_now_and_the_next_boundary_in_its_own_zone(
    now: datetime, phase: str, boundary: str, tmp_path: Path
) -> None:
    lines = report(DECOMMISSIONED, now, tmp_path)
    assert f"  phase now: {phase}" in lines
    assert f"  next boundary: {boundary}" in lines


def test_the_settings_in_force_are_one_key_per_line_under_their_headings(tmp_path: Path) -> None:
    text = DEFAULT.replace(
        'trusted_networks = ["127.0.0.0/8", "::1/128"]', 'trusted_networks = ["10.0.0.0/8"]'
    )
    lines = report(text, datetime(2026, 12, 2, tzinfo=UTC), tmp_path)
    headings = [line for line in lines if line.startswith("# ")]
    assert headings == [
        "# endpoints",
        "# trusted networks",
        "# sender checks",
        "# limits",
        "# delivery",
        "# notices",
        "# receipt page",
        "# console",
    ]
    for expected in (
        "server.listen = 127.0.0.1:2525",
        "metrics.listen = 127.0.0.1:9125",
        "server.trusted_networks = 10.0.0.0/8",
        "sender_auth.enabled = yes",
        "sender_auth.on_temperror = tempfail",
        "server.max_message_size = 26214400",
        "limits.notices_per_sender = 30",
        "delivery.mode = file",
        "delivery.retry_schedule = 60, 300, 900, 3600, 14400",
        "lookup.listen = (none)",
        "lookup.public_url = (none)",
        "lookup.per_minute = 30",
        "console.listen = (none)",
        "console.users_file = (none)",
    ):
        assert expected in lines


def test_check_config_shows_an_environment_override_as_the_value_in_force(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        cwd=tmp_path,
        env={"GATEWAY_SERVER__LISTEN": "127.0.0.1:2626", "GATEWAY_DELIVERY__MODE": "mx"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "server.listen = 127.0.0.1:2626" in lines
    assert "delivery.mode = mx" in lines
    assert any(line.startswith("  phase now: ") for line in lines)
