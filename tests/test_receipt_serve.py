"""The receipt page as `gateway serve` runs it: from the one process, and from the supervisor
when `[server] workers` is 2; each lookup on the audit chain, which still verifies."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.polling import eventually
from tests.smtpclient import transaction
from tests.test_serve_process import RETIRED, STOP_TIMEOUT, run_cli, write_config
from tests.test_workers import events_of, serving_to_files

RECEIPTS = "https://eservice-mx.agency.example/ref/"


def config_with_lookup(tmp_path: Path, log: Path, *, workers: int) -> Path:
    config = write_config(
        tmp_path, workers=workers, edit=('log = "-"', f"log = {json.dumps(str(log))}")
    )
    with config.open("a", encoding="utf-8") as out:
        out.write(f'\n[lookup]\nlisten = "127.0.0.1:0"\npublic_url = "{RECEIPTS}"\n')
    return config


def first(log: Path, name: str) -> dict[str, object]:
    return next(e for e in events_of(log) if e["event"] == name)


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_serving_gateway_answers_a_filing_with_its_receipt_page(
    tmp_path: Path, workers: int
) -> None:
    log = tmp_path / "logs" / "gateway.log"
    log.parent.mkdir()
    config = config_with_lookup(tmp_path, log, workers=workers)
    async with serving_to_files(config, log) as gateway:
        smtp_port = int(str(first(log, "gateway.listening")["port"]))
        lookup_port = int(str(first(log, "gateway.lookup.listening")["port"]))
        async with asyncio.timeout(20):
            _, final = await transaction(smtp_port, [RETIRED])
        assert final is not None
        ref = final.text.rsplit("(ref ", 1)[1].split(",")[0]
        assert final.text.endswith(f"(ref {ref}, {RECEIPTS}{ref})")
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            base = f"http://127.0.0.1:{lookup_port}/ref/"
            async with client.get(base + ref) as page:
                assert page.status == 200
                assert "NOT filed or served" in await page.text()
            async with client.get(base + ref + ".json") as answer:
                assert (await answer.json())["status"] == "not-filed"
            async with client.get(base + "20170913-0000000000000") as missing:
                assert missing.status == 404
        gateway.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT):
            assert await gateway.wait() == 0
    # The lookups are on the chain of the process that served them (the supervisor's, with
    # workers), and every chain still verifies.
    await eventually(
        lambda: len([e for e in events_of(log) if e["event"] == "receipt.looked_up"]) == 3, within=5
    )
    looked = [e for e in events_of(log) if e["event"] == "receipt.looked_up"]
    assert [(e["reference"], e["found"]) for e in looked] == [
        (ref, True),
        (ref, True),
        ("20170913-0000000000000", False),
    ]
    checked = run_cli("audit", "verify", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK:" in checked.stdout
