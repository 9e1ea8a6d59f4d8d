"""The install steps of the README, as far as this machine allows: no systemd, no Docker.

A wheel is built from the checkout and installed in a fresh virtual environment, as on a new
host; `gateway init` writes a config and a state directory, `check-config` accepts them, and
the installed gateway serves and answers a real SMTP session. Nothing here imports the
checkout: every step runs the installed `gateway` from outside it.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import pytest

from tests.test_serve_process import (
    SMTP_TIMEOUT,
    START_TIMEOUT,
    ServeProcess,
    child_environment,
    smtp_session,
)

CHECKOUT = Path(__file__).resolve().parent.parent
# Building the wheel and installing its dependencies from the package index (or pip's cache).
INSTALL_TIMEOUT = 600.0
DOMAIN = "agency.example"


def run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a fresh venv with the wheel built from this checkout."""
    root = tmp_path_factory.mktemp("install")
    built = run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", "dist", CHECKOUT, cwd=root
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("eservice_gateway-*.whl")
    made = run(sys.executable, "-m", "venv", "venv", cwd=root)
    assert made.returncode == 0, made.stderr
    bin_dir = root / "venv" / "bin"
    pip = run(bin_dir / "pip", "install", "-q", wheel, cwd=root)
    assert pip.returncode == 0, pip.stderr
    return bin_dir


def init(bin_dir: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return run(
        bin_dir / "gateway",
        "init",
        "--config",
        site / "etc" / "gateway.toml",
        "--state-dir",
        site / "state",
        "--domain",
        DOMAIN,
        "--office",
        "immigration-court",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "",
        "--log-format",
        "json",
        cwd=site,
    )


def test_the_wheel_runs_from_its_own_venv_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = run(installed / "python", "-c", "import gateway; print(gateway.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.parent)


def test_init_writes_a_config_check_config_accepts_and_prints_the_dns_records(
    installed: Path, tmp_path: Path
) -> None:
    made = init(installed, tmp_path)
    assert made.returncode == 0, made.stderr
    records = made.stdout.splitlines()
    assert f"{DOMAIN}. IN MX 10 mx.{DOMAIN}." in records
    assert any(r.startswith(f"notices2017._domainkey.{DOMAIN}. IN TXT") for r in records)
    assert any("v=DKIM1; k=rsa; p=" in r for r in records)
    assert f'{DOMAIN}. IN TXT "v=spf1 a:mx.{DOMAIN} -all"' in records
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert [stat.S_IMODE(p.stat().st_mode) for p in (state / "dkim").iterdir()] == [0o600]
    checked = run(
        installed / "gateway",
        "check-config",
        "--config",
        tmp_path / "etc" / "gateway.toml",
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert f"storage.state_dir = {state}" in lines
    assert f"server.hostname = mx.{DOMAIN}" in lines
    assert "office immigration-court: ICE Office of the Chief Counsel, Chicago" in lines
    assert f"  occ-chicago-filings@{DOMAIN}  immigration-court" in lines
    again = init(installed, tmp_path)
    assert again.returncode == 1
    assert "exists" in again.stderr


async def test_the_installed_gateway_serves_and_answers_a_session(
    installed: Path, tmp_path: Path
) -> None:
    made = await asyncio.to_thread(init, installed, tmp_path)
    assert made.returncode == 0, made.stderr
    process = await asyncio.create_subprocess_exec(
        installed / "gateway",
        "serve",
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As the systemd unit and the image run it: the config named by GATEWAY_CONFIG.
        env=child_environment(GATEWAY_CONFIG=str(tmp_path / "etc" / "gateway.toml")),
    )
    served = ServeProcess(process)
    try:
        async with asyncio.timeout(START_TIMEOUT):
            listening = await served.event("gateway.listening")
        async with smtp_session(int(listening["port"])) as client, asyncio.timeout(SMTP_TIMEOUT):
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await client.sendmail(
                    "clerk@lawfirm.example",
                    [f"occ-chicago-filings@{DOMAIN}"],
                    b"From: clerk@lawfirm.example\r\nSubject: Motion\r\n\r\nPlease file.\r\n",
                )
        assert refused.value.code == 550
        assert "NOT FILED" in refused.value.message
        assert await served.stop() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await served.finish()
    assert (tmp_path / "state" / "gateway.sqlite3").is_file()
    assert os.access(tmp_path / "etc" / "gateway.toml", os.R_OK)
