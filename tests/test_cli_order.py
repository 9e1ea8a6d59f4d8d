"""Options before and after a command's positionals, as operators type them (issue 11, item 9).

Each form runs `gateway` as a child process on a real store filled over SMTP; the answer must
be the same whichever order the options come in.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from gateway.audit.chain import ChainedLog
from tests.conftest import GatewayFactory
from tests.filings import fill_store
from tests.test_serve_process import CLI_TIMEOUT, child_environment


def gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def config_for(tmp_path: Path, state: Path) -> Path:
    config = tmp_path / "order.toml"
    config.write_text(
        f"[storage]\nstate_dir = {json.dumps(str(state))}\n\n"
        '[[offices]]\nname = "ice-occ-chicago"\ndisplay_name = "ICE OCC Chicago"\n'
        'short_name = "ICE OCC Chicago"\ntimezone = "America/Chicago"\nretires = 2017-09-12\n'
        'portal_url = "https://eservice.ice.gov/"\naddresses = ["filings@occ-chicago.example"]\n',
        encoding="utf-8",
    )
    return config


def same_answer(orders: list[list[str]], cwd: Path) -> str:
    """Run each order of the same command; all must succeed with the same output."""
    results = [gateway(*order, cwd=cwd) for order in orders]
    for order, result in zip(orders, results, strict=True):
        assert result.returncode == 0, (order, result.stderr)
    assert len({r.stdout for r in results}) == 1, [r.stdout for r in results]
    return results[0].stdout


async def test_audit_postmaster_and_queue_take_options_in_any_position(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    filed = await fill_store(start_gateway)
    config = str(config_for(tmp_path, filed.gateway.settings.storage.state_dir))
    ref, postmaster_ref = filed.refs["motion"], filed.refs["postmaster"]
    shown = await asyncio.to_thread(
        same_answer,
        [
            ["audit", "show", "--tz", "office", ref, "--config", config],
            ["audit", "show", ref, "--tz", "office", "--config", config],
            ["audit", "--config", config, "--tz", "office", "show", ref],
        ],
        tmp_path,
    )
    assert ref in shown
    kept = await asyncio.to_thread(
        same_answer,
        [
            ["postmaster", "show", "--config", config, postmaster_ref],
            ["postmaster", "--config", config, "show", postmaster_ref],
        ],
        tmp_path,
    )
    assert postmaster_ref in kept
    job = await asyncio.to_thread(
        same_answer,
        [["queue", "show", "--config", config, "1"], ["queue", "--config", config, "show", "1"]],
        tmp_path,
    )
    assert job


def test_audit_verify_takes_no_store_before_or_after_the_files(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    chain = ChainedLog.to_file(log, check_every_s=0)
    for n in range(3):
        chain.msg(json.dumps({"event": "smtp.reply.sent", "n": n}))
    chain.close()
    config = str(config_for(tmp_path, tmp_path / "state"))
    verified = same_answer(
        [
            ["audit", "verify", "--no-store", str(log), "--config", config],
            ["audit", "verify", str(log), "--no-store", "--config", config],
            ["audit", "--no-store", "--config", config, "verify", str(log)],
        ],
        tmp_path,
    )
    assert str(log) in verified
