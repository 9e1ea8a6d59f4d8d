"""`gateway check-config` shows what is in force (issue 11, item 11): endpoints, trusted
networks, sender checks, limits, delivery, and each office's phase now and its next boundary.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_serve_process import run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_check_config_shows_settings_in_force_and_the_next_boundary(tmp_path: Path) -> None:
    builtin = (ROOT / "config" / "gateway.toml").read_text(encoding="utf-8")
    edited = builtin.replace(
        "# decommissions = 2027-09-12", "decommissions = 2099-09-12T08:00:00"
    ).replace('trusted_networks = ["127.0.0.0/8", "::1/128"]', 'trusted_networks = ["10.1.0.0/16"]')
    config = tmp_path / "gateway.toml"
    config.write_text(edited, encoding="utf-8")
    result = run_cli("check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "server.trusted_networks = 10.1.0.0/16" in lines
    assert "server.listen = 127.0.0.1:2525" in lines
    assert "metrics.listen = 127.0.0.1:9125" in lines
    assert "delivery.mode = file (written into state/notices; nothing is sent)" in lines
    assert any(line.startswith("sender_auth = SPF, DKIM, DMARC") for line in lines)
    assert any(line.startswith("limits.notices_per_hour = 30 per sender") for line in lines)
    assert any(line.startswith("  now (") and line.endswith("): retired") for line in lines)
    assert "  next: decommissioned from 2099-09-12 08:00:00 CDT" in lines
