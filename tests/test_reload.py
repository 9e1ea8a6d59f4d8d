"""SIGHUP reload and the audit log's reopen: what a reload changes (plain values), and a real
`gateway serve` process signalled as systemd and logrotate signal it.

A reload reads the config file and the templates again; new sessions use them, a session
opened before keeps what it started with; a config or template that does not load is refused
with one audit event and the old one goes on serving. SIGHUP and SIGUSR1 reopen the log file
so that logrotate's `create` mode loses nothing and the chain continues into the new file.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import shutil
import signal
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.audit.chain import ChainedLog, line_hash
from gateway.config import GatewaySettings
from gateway.notices.render import templates_dir
from gateway.reload import RESTART_ONLY, digest, plan_reload
from tests.polling import eventually
from tests.test_faults import log_events, serving_to_file
from tests.test_serve_process import (
    AFTER_CUTOFF,
    RETIRED,
    SENDER,
    SMTP_TIMEOUT,
    STOP_TIMEOUT,
    Attempt,
    Reply,
    run_cli,
    send,
    serving,
    smtp_session,
    write_config,
)

# ---------------------------------------------------------------------------------------------
# What a reload changes: plain values


def settings(**sections: dict[str, Any]) -> GatewaySettings:
    """Settings of one office, with `sections` merged over the defaults."""
    office: dict[str, Any] = {
        "name": "occ",
        "display_name": {"en": "ICE OCC Chicago"},
        "short_name": "ICE OCC Chicago",
        "timezone": "America/Chicago",
        "retires": "2017-09-12",
        "portal_url": "https://eservice.ice.gov/",
        "addresses": ["filings@occ.example"],
    }
    data: dict[str, Any] = {"offices": [office | sections.pop("office", {})], **sections}
    return GatewaySettings.model_validate(data)


PLANS = {
    "nothing": ({}, (), ()),
    "portal-url": ({"office": {"portal_url": "https://portal.new.example/"}}, ("offices",), ()),
    "idle-timeout": ({"server": {"idle_timeout": 60}}, ("server",), ()),
    "trusted-networks": ({"server": {"trusted_networks": ["10.0.0.0/8"]}}, ("server",), ()),
    "limits": ({"limits": {"notices_per_sender": 5}}, ("limits",), ()),
    "sender-checks": ({"sender_auth": {"enabled": False}}, ("sender_auth",), ()),
    "listen": ({"server": {"listen": ["127.0.0.1:2526"]}}, (), ("server.listen",)),
    "state-dir": ({"storage": {"state_dir": "elsewhere"}}, (), ("storage",)),
    "delivery-mode": (
        {"delivery": {"mode": "smarthost", "smarthost": "relay.example:587"}},
        (),
        ("delivery",),
    ),
    "metrics-listen": ({"metrics": {"listen": "127.0.0.1:9999"}}, (), ("metrics",)),
    "dkim-selector": ({"notices": {"dkim_selector": "other"}}, (), ("notices.dkim_selector",)),
    "listen-and-hostname": (
        {"server": {"listen": ["127.0.0.1:2526"], "hostname": "mx2.example"}},
        ("server",),
        ("server.listen",),
    ),
}


@pytest.mark.parametrize(("edit", "changed", "needs_restart"), PLANS.values(), ids=PLANS.keys())
def test_a_reload_names_what_changed_and_what_needs_a_restart(
    edit: dict[str, Any], changed: tuple[str, ...], needs_restart: tuple[str, ...]
) -> None:
    plan = plan_reload(settings(), settings(**edit))
    assert (plan.changed, plan.needs_restart) == (changed, needs_restart)
    assert plan.is_noop is (not changed and not needs_restart)
    assert (plan.digest_before == plan.digest_after) is (not changed)


def test_settings_that_need_a_restart_keep_the_value_in_force() -> None:
    old = settings()
    new = settings(
        server={"listen": ["127.0.0.1:2526"], "hostname": "mx2.example", "drain_timeout": 3},
        storage={"state_dir": "elsewhere"},
        office={"portal_url": "https://portal.new.example/"},
    )
    plan = plan_reload(old, new)
    assert plan.settings.server.listen == old.server.listen
    assert plan.settings.server.drain_timeout == old.server.drain_timeout
    assert plan.settings.storage == old.storage
    assert plan.settings.server.hostname == "mx2.example"
    assert plan.settings.offices[0].portal_url == "https://portal.new.example/"
    assert plan.settings.address_book.served_domains == {"occ.example"}


def test_every_restart_only_key_is_a_setting() -> None:
    dumped = settings().model_dump()
    for path in RESTART_ONLY:
        section, _, key = path.partition(".")
        assert section in dumped
        assert not key or key in dumped[section], path


def test_the_digest_leaves_out_the_delivery_password() -> None:
    with_password = settings(delivery={"username": "gateway", "password": "hunter2"})
    other = settings(delivery={"username": "gateway", "password": "other"})
    assert digest(with_password) == digest(other)
    assert digest(with_password) != digest(settings(limits={"notices_total": 5}))


# ---------------------------------------------------------------------------------------------
# SIGHUP on a serving process

NEW_PORTAL = "https://portal.new.example/"
NEW_RETIRED = "occ-chicago-motions@occ-chicago.example"
OLD_OFFICE_LINES = f'portal_url = "https://eservice.ice.gov/"\naddresses = ["{RETIRED}"]'
NEW_OFFICE_LINES = f'portal_url = "{NEW_PORTAL}"\naddresses = ["{RETIRED}", "{NEW_RETIRED}"]'
RELOAD_TIMEOUT = 30.0


async def rcpt_reply(client: aiosmtplib.SMTP, recipient: str) -> str:
    """The reply to RCPT for `recipient` in a transaction of its own, then RSET."""
    await client.mail(SENDER)
    try:
        response = await client.rcpt(recipient)
        reply = f"{response.code} {response.message}"
    except aiosmtplib.SMTPRecipientRefused as exc:
        reply = f"{exc.code} {exc.message}"
    await client.rset()
    return reply


async def test_sighup_serves_new_sessions_with_the_new_config_and_open_ones_with_theirs(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        gateway = served.gateway
        async with smtp_session(served.port) as opened_before, asyncio.timeout(RELOAD_TIMEOUT):
            unknown_before = await rcpt_reply(opened_before, NEW_RETIRED)
            # A new portal and a new retired address, and a change that waits for a restart.
            write_config(tmp_path, drain_timeout=9, edit=(OLD_OFFICE_LINES, NEW_OFFICE_LINES))
            gateway.process.send_signal(signal.SIGHUP)
            reloaded = await gateway.event("gateway.reloaded")
            unknown_still = await rcpt_reply(opened_before, NEW_RETIRED)
            old_reply = await send(opened_before, Attempt(1, SENDER, RETIRED))
            async with smtp_session(served.port) as opened_after:
                new_reply = await send(opened_after, Attempt(2, SENDER, RETIRED))
                new_address = await send(opened_after, Attempt(3, SENDER, NEW_RETIRED))
        assert await gateway.stop() == 0, gateway.stderr

    assert unknown_before.startswith("550 5.1.1 ")
    assert unknown_still.startswith("550 5.1.1 "), "the open session keeps its config"
    assert old_reply.code == 550
    assert "https://eservice.ice.gov/" in old_reply.text
    assert NEW_PORTAL not in old_reply.text
    assert new_reply.code == 550
    assert NEW_PORTAL in new_reply.text
    assert new_address.code == 550
    assert NEW_PORTAL in new_address.text
    assert reloaded["changed"] == ["offices"]
    assert reloaded["needs_restart"] == ["server.drain_timeout"]
    assert reloaded["config_before"] != reloaded["config_after"]
    assert reloaded["templates_before"] == reloaded["templates_after"]
    assert gateway.find("gateway.reload.refused") is None


def config_with_templates(tmp_path: Path) -> tuple[Path, Path]:
    """A config whose notices come from a copy of the built-in templates in tmp_path."""
    templates = tmp_path / "templates"
    shutil.copytree(templates_dir(), templates)
    section = f"[notices]\ntemplates_dir = {json.dumps(str(templates))}\n\n[metrics]"
    return write_config(tmp_path, edit=("[metrics]", section)), templates


def break_the_config(config: Path, templates: Path) -> str:
    # A new portal URL and a misspelt key: none of it may be taken up.
    edited = OLD_OFFICE_LINES.replace("https://eservice.ice.gov/", NEW_PORTAL) + "\nportal_ur = 1"
    text = config.read_text(encoding="utf-8").replace(OLD_OFFICE_LINES, edited, 1)
    config.write_text(text, encoding="utf-8")
    return "offices[0].portal_ur"


def break_a_template(config: Path, templates: Path) -> str:
    body = templates / "default" / "not_filed" / "body.txt.j2"
    body.write_text("{% if %}\n" + body.read_text(encoding="utf-8"), encoding="utf-8")
    return "offices[0].templates"


def notice_texts(outbox: Path) -> list[str]:
    """The plain-text part of every notice written so far ([delivery] mode = "file")."""
    texts = []
    for path in sorted(outbox.glob("*.eml")):
        mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(mail, email.message.EmailMessage)
        body = mail.get_body(("plain",))
        texts.append("" if body is None else str(body.get_content()))
    return texts


async def test_sighup_after_a_template_edit_sends_the_next_notices_from_it(
    tmp_path: Path,
) -> None:
    config, templates = config_with_templates(tmp_path)
    body = templates / "default" / "not_filed" / "body.txt.j2"
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        gateway = served.gateway
        body.write_text("Reloaded templates.\n" + body.read_text(encoding="utf-8"), "utf-8")
        gateway.process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(RELOAD_TIMEOUT):
            reloaded = await gateway.event("gateway.reloaded")
            async with smtp_session(served.port) as client:
                reply = await send(client, Attempt(1, SENDER, RETIRED))
        texts = await eventually(
            lambda: notice_texts(tmp_path / "state" / "notices"), within=RELOAD_TIMEOUT
        )
        assert await gateway.stop() == 0, gateway.stderr

    assert reloaded["changed"] == ["templates"]
    assert reloaded["templates_before"] != reloaded["templates_after"]
    assert reloaded["config_before"] == reloaded["config_after"]
    assert reply.code == 550
    (text,) = texts
    assert text.startswith("Reloaded templates.")
    assert reply.reference in text


BREAKAGES = {"config": break_the_config, "template": break_a_template}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
async def test_sighup_with_a_broken_config_or_template_keeps_the_old_one_serving(
    tmp_path: Path, breakage: Any
) -> None:
    config, templates = config_with_templates(tmp_path)
    async with serving(config, as_of=AFTER_CUTOFF) as served:
        gateway = served.gateway
        key = breakage(config, templates)
        gateway.process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(RELOAD_TIMEOUT):
            refused = await gateway.event("gateway.reload.refused")
            async with smtp_session(served.port) as client:
                reply = await send(client, Attempt(1, SENDER, RETIRED))
        assert gateway.process.returncode is None, "the process lives"
        assert await gateway.stop() == 0, gateway.stderr

    assert key in refused["error"]
    assert refused["level"] == "error"
    assert len(gateway.named("gateway.reload.refused")) == 1
    assert gateway.find("gateway.reloaded") is None
    assert reply.code == 550
    assert "https://eservice.ice.gov/" in reply.text


# ---------------------------------------------------------------------------------------------
# Reopening the log for logrotate's create mode


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1], ids=["SIGHUP", "SIGUSR1"])
async def test_a_rotated_log_is_reopened_on_signal_and_the_chain_goes_on(
    tmp_path: Path, signum: signal.Signals
) -> None:
    log = tmp_path / "audit.log"
    rotated = tmp_path / "audit.log.1"
    config = write_config(tmp_path, edit=('log = "-"', f"log = {json.dumps(str(log))}"))
    async with serving_to_file(config, log) as (process, port, _metrics):
        log.rename(rotated)  # what logrotate's `create` does first
        process.send_signal(signum)
        reopened = await eventually(
            lambda: [e for e in log_events(log) if e["event"] == "gateway.log.reopened"],
            within=RELOAD_TIMEOUT,
        )
        async with smtp_session(port) as client, asyncio.timeout(SMTP_TIMEOUT):
            reply: Reply = await send(client, Attempt(1, SENDER, RETIRED))
            await client.quit()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT):
            assert await process.wait() == 0

    assert reopened[0]["rotated"] is True
    assert reopened[0]["signal"] == signum.name
    assert reopened[0]["log"] == str(log)
    old_last = rotated.read_bytes().splitlines()[-1]
    new_first = json.loads(log.read_bytes().splitlines()[0])
    assert new_first["event"] == "gateway.log.reopened"
    assert new_first["prev"] == line_hash(old_last), "the new file continues the chain"
    assert new_first["seq"] == json.loads(old_last)["seq"] + 1
    events = [e["event"] for e in log_events(log)]
    assert "smtp.reply.sent" in events
    assert "gateway.stopped" in events
    assert reply.code == 550
    verified = run_cli(
        "audit", "verify", str(rotated), str(log), "--config", str(config), cwd=tmp_path
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_reopen_follows_a_renamed_log_file_at_once_and_keeps_the_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    chain = ChainedLog.to_file(log, check_every_s=3600)  # no rotation check of its own
    try:
        chain.msg('{"event": "first"}')
        log.rename(tmp_path / "audit.log.1")
        assert chain.reopen() is True
        assert chain.reopen() is False, "the file at the path is the one written now"
        chain.msg('{"event": "second"}')
    finally:
        chain.close()
    (old_line,) = (tmp_path / "audit.log.1").read_bytes().splitlines()
    (new_line,) = log.read_bytes().splitlines()
    assert json.loads(new_line)["prev"] == line_hash(old_line)
    assert json.loads(new_line)["seq"] == 2


def test_reopen_of_a_stream_does_nothing() -> None:
    chain = ChainedLog.to_stream(io.StringIO())
    assert chain.reopen() is False
