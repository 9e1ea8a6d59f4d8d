"""The console as `gateway serve` runs it: from the one process, and from the supervisor when
`[server] workers` is 2; the user added with `gateway console adduser --password-stdin`."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.smtpclient import transaction
from tests.test_receipt_serve import first
from tests.test_serve_process import RETIRED, STOP_TIMEOUT, child_environment, write_config
from tests.test_workers import events_of, serving_to_files

PASSWORD = "served console password"


def config_with_console(tmp_path: Path, log: Path, *, workers: int) -> Path:
    config = write_config(
        tmp_path, workers=workers, edit=('log = "-"', f"log = {json.dumps(str(log))}")
    )
    users = tmp_path / "console-users"
    with config.open("a", encoding="utf-8") as out:
        out.write(f'\n[console]\nlisten = "127.0.0.1:0"\nusers_file = {json.dumps(str(users))}\n')
    return config


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_serving_gateway_shows_a_filing_on_its_console(
    tmp_path: Path, workers: int
) -> None:
    log = tmp_path / "logs" / "gateway.log"
    log.parent.mkdir()
    config = config_with_console(tmp_path, log, workers=workers)
    added = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "gateway",
            "console",
            "adduser",
            "records",
            "--password-stdin",
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        env=child_environment(),
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    async with serving_to_files(config, log) as gateway:
        smtp_port = int(str(first(log, "gateway.listening")["port"]))
        console_port = int(str(first(log, "gateway.console.listening")["port"]))
        async with asyncio.timeout(20):
            _, final = await transaction(smtp_port, [RETIRED])
        assert final is not None
        ref = final.text.rsplit("(ref ", 1)[1].split(")")[0].split(",")[0]
        timeout = aiohttp.ClientTimeout(total=20)
        base = f"http://127.0.0.1:{console_port}"
        async with aiohttp.ClientSession(timeout=timeout) as client:
            async with client.get(f"{base}/attempts") as refused:
                assert refused.status == 401
            token = base64.b64encode(f"records:{PASSWORD}".encode()).decode()
            headers = {"Authorization": f"Basic {token}"}
            async with client.get(f"{base}/attempts", headers=headers) as page:
                assert page.status == 200
                assert ref in await page.text()
        gateway.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT):
            assert await gateway.wait() == 0
    viewed = [e for e in events_of(log) if e["event"] == "console.viewed"]
    assert [(e["user"], e["view"]) for e in viewed] == [("records", "attempts")]
