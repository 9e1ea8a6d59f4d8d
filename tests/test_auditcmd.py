"""`gateway audit ...` as operators run it: on a store filled over SMTP, and on the log a
`gateway serve` child process wrote, to a file or to standard output saved by the operator.

Outputs are parsed back (JSON lines, CSV) rather than compared as text, except the table,
whose columns must line up for a person to read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.audit.chain import ChainedLog
from gateway.cli import main
from gateway.config import GatewaySettings, load_settings
from gateway.ops.auditcmd import AuditRequest, run_audit
from gateway.store.db import connect
from gateway.store.retention import purge_message
from tests.conftest import GatewayFactory, make_settings
from tests.filings import CLERK, Filed, fill_store
from tests.polling import eventually
from tests.test_serve_process import (
    AFTER_CUTOFF,
    RETIRED,
    SENDER,
    START_TIMEOUT,
    STOP_TIMEOUT,
    run_cli,
    smtp_session,
    start_serve,
    write_config,
)

NOW = datetime(2017, 10, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    out: str
    err: str


def audit(settings: GatewaySettings, **request: Any) -> Answer:
    """One `gateway audit` command, answered in this process."""
    out, err = io.StringIO(), io.StringIO()
    status = run_audit(settings, AuditRequest(**request), now=NOW, out=out, err=err)
    return Answer(status, out.getvalue(), err.getvalue())


async def ask(filed: Filed, **request: Any) -> Answer:
    # The commands read SQLite and files: off the event loop, as an operator's shell would be.
    return await asyncio.to_thread(audit, filed.gateway.settings, **request)


# -- list: table, JSON lines, CSV --------------------------------------------------------------


async def test_the_table_lines_up_and_counts_the_attempts(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    answer = await ask(filed)
    assert answer.status == 0, answer.err
    header, *rows, blank, total = answer.out.splitlines()
    assert header.startswith("TIME (UTC)  ")
    assert total == "7 attempts"
    assert blank == ""
    column = header.index("REFERENCE")
    assert [row[column : column + 22] for row in rows] == list(filed.refs.values())
    assert header.index("NOTICE") == rows[0].index("delivered")
    assert "Motion to continue [A-number]" in rows[0]


async def test_json_lines_parse_back_to_every_attempt(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    answer = await ask(filed, output="json", tz="America/Chicago")
    items = [json.loads(line) for line in answer.out.splitlines()]
    assert [i["reference"] for i in items] == list(filed.refs.values())
    motion = items[0]
    assert motion["at"] == "2017-09-13T15:00:00.000000+00:00"
    assert motion["local_time"] == "2017-09-13T10:00:00-05:00"
    assert (motion["decision"], motion["notice"]) == ("rejected", "delivered")
    assert motion["subject"] == "Motion to continue [A-number]"
    assert motion["attachments"] == ["[A-number] motion.pdf"]
    assert motion["a_numbers"] == ["[A-number]"]
    assert len(motion["sha256"]) == 64
    refusal = next(i for i in items if i["reference"] == filed.refs["refusal"])
    assert (refusal["kind"], refusal["decision"], refusal["subject"]) == (
        "refusal",
        "refused",
        None,
    )


async def test_an_offices_day_is_taken_in_its_own_zone(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    answer = await ask(
        filed, output="json", tz="office", office="ice-occ-chicago", since="2017-09-14"
    )
    # "untrusted" came at 22:30 on Sep 13 in Chicago (Sep 14 in UTC): not on Sep 14 there.
    assert [json.loads(line)["reference"] for line in answer.out.splitlines()] == [
        filed.refs["second"]
    ]


async def test_csv_parses_back_with_the_same_values(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    answer = await ask(filed, output="csv", sender_domain="other-firm.example", unredacted=True)
    (row,) = list(csv.DictReader(io.StringIO(answer.out)))
    assert row["reference"] == filed.refs["clerk"]
    assert row["sender"] == CLERK.lower()
    assert row["recipients"] == RETIRED
    assert (row["notice"], row["size"]) == ("deferred", row["size"])
    assert int(row["size"]) > 0


async def test_the_store_keeps_what_the_output_redacts(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    shown = await ask(filed, output="json", reference=filed.refs["motion"], unredacted=True)
    assert json.loads(shown.out)["subject"] == "Motion to continue A123456789"


async def test_no_match_says_so(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    answer = await ask(filed, sender="nobody@nowhere.example")
    assert (answer.status, answer.out) == (0, "no attempts match\n")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"since": "last week"}, "--since: 'last week' is not a date"),
        ({"tz": "Mars/Olympus"}, "--tz: unknown time zone"),
        (
            {"tz": "office", "since": "2017-09-13"},
            "--tz office with --since/--until needs --office",
        ),
        ({"action": "show"}, "audit show needs one reference"),
        ({"action": "report"}, "audit report needs --out"),
    ],
)
async def test_a_question_that_cannot_be_answered_says_why_and_exits_2(
    start_gateway: GatewayFactory, request_: dict[str, Any], message: str
) -> None:
    filed = await fill_store(start_gateway)
    answer = await ask(filed, **request_)
    assert answer.status == 2
    assert message in answer.err


# -- show ---------------------------------------------------------------------------------------


async def test_show_tells_arrival_decision_and_each_delivery_attempt_with_times(
    start_gateway: GatewayFactory,
) -> None:
    filed = await fill_store(start_gateway)
    answer = await ask(filed, action="show", targets=(filed.refs["clerk"],), tz="office")
    assert answer.status == 0, answer.err
    text = answer.out
    assert text.startswith(f"attempt {filed.refs['clerk']}: message received to the end of DATA")
    assert "arrived         2017-09-13 10:01:00-05:00  (2017-09-13 15:01:00.000000 UTC)" in text
    assert "phase retired, reject-after-data: address retired; refused after DATA" in text
    assert "  sender          trusted-network\n  notice          deferred\n" in text
    assert "job 1" not in text  # the clerk's notice was the second job
    assert "notice to <clerk@other-firm.example>: deferred after 1 attempt" in text
    assert "attempt 1  2017-09-14 10:00:00-05:00  deferred  127.0.0.1" in text  # worker ran Sep 14
    assert "452  4.2.2 Mailbox full" in text
    timeline = text[text.index("timeline (America/Chicago)") :]
    assert timeline.index("received from") < timeline.index("answered 550")
    assert timeline.index("queued") < timeline.index("attempt 1: deferred 452")


async def test_show_of_a_refusal_and_of_nothing(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    refusal = await ask(filed, action="show", targets=(filed.refs["refusal"],))
    assert refusal.out.startswith(f"attempt {filed.refs['refusal']}: refused at RCPT, refused")
    assert "reject-at-rcpt: address retired; refused at RCPT" in refusal.out
    missing = await ask(filed, action="show", targets=("20170913-0000000000",))
    assert (missing.status, missing.err) == (
        1,
        "gateway: no attempt 20170913-0000000000 in the store\n",
    )


# -- summary and senders ----------------------------------------------------------------------


async def test_summary_per_day_and_office_in_every_format(start_gateway: GatewayFactory) -> None:
    filed = await fill_store(start_gateway)
    as_json = await ask(filed, action="summary", output="json", tz="office")
    rows = [json.loads(line) for line in as_json.out.splitlines()]
    chicago = {r["day"]: r for r in rows if r["office"] == "ice-occ-chicago"}
    assert chicago["2017-09-13"] | {"refused_by_reason": None} == {
        "day": "2017-09-13",
        "office": "ice-occ-chicago",
        "attempts": 4,
        "received": 4,
        "refused": 4,
        "noticed": 2,
        "suppressed": 2,
        "delivered": 1,
        "deferred": 1,
        "failed": 0,
        "refused_by_reason": None,
    }
    assert chicago["2017-09-14"]["failed"] == 1
    as_csv = await ask(filed, action="summary", output="csv", tz="office")
    parsed = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert [(r["day"], r["office"], r["attempts"]) for r in parsed] == [
        (r["day"], r["office"], str(r["attempts"])) for r in rows
    ]
    other = next(r for r in parsed if r["office"] == "other-office")
    assert other["refused: address retired; refused at RCPT"] == "1"
    table = await ask(filed, action="summary", tz="office")
    assert table.out.splitlines()[0].split() == [
        "DAY", "OFFICE", "ATTEMPTS", "RECEIVED", "REFUSED", "NOTICED", "SUPPRESSED",
        "DELIVERED", "DEFERRED", "FAILED",
    ]  # fmt: skip
    assert "refused, by reason:" in table.out


async def test_senders_lists_domains_and_senders_with_whether_notices_reached_them(
    start_gateway: GatewayFactory,
) -> None:
    filed = await fill_store(start_gateway)
    answer = await ask(filed, action="senders", output="csv", since="2017-09-13")
    rows = {(r["domain"], r["sender"]): r for r in csv.DictReader(io.StringIO(answer.out))}
    lawfirm = rows[("lawfirm.example", "")]
    assert (lawfirm["attempts"], lawfirm["senders"], lawfirm["senders_reached"]) == ("4", "1", "1")
    paralegal = rows[("lawfirm.example", SENDER)]
    assert (paralegal["first"], paralegal["last"]) == (
        "2017-09-13T15:00:00+00:00",
        "2017-09-14T15:00:00+00:00",
    )
    assert paralegal["notices_delivered"] == "1"
    clerk = rows[("other-firm.example", CLERK.lower())]
    assert clerk["notices_delivered"] == "0"  # deferred: not reached yet
    later = await ask(filed, action="senders", output="json", since="2017-09-14")
    assert [json.loads(line)["sender"] for line in later.out.splitlines()] == [
        "",
        "attorney@far.example",
        "",
        SENDER,
    ]
    table = await ask(filed, action="senders")
    assert "  paralegal@lawfirm.example  4" in table.out
    assert "1 of 1 sender" in table.out


# -- the log of a real `gateway serve`: verify, tampering, show -------------------------------


@contextlib.asynccontextmanager
async def serving_to(
    config: Path, log: Path, *, stdout: Path | None, env: Mapping[str, str] | None = None
) -> AsyncIterator[int]:
    """`gateway serve` with its standard output going to a file (as `docker logs > file`
    would save it; None: nowhere) and `env` set; yields the SMTP port once `log` says
    gateway.listening, stops it with SIGTERM at the end."""
    before = await asyncio.to_thread(count_lines, log)  # a restart: look past the last run
    with contextlib.ExitStack() as files:
        saved = subprocess.DEVNULL if stdout is None else files.enter_context(stdout.open("ab"))
        process = await start_serve(config, as_of=AFTER_CUTOFF, stdout=saved, env=env)
    try:
        listening = await eventually(
            lambda: event_after(log, before, "gateway.listening"), within=START_TIMEOUT
        )
        yield int(listening["port"])
        process.send_signal(signal.SIGTERM)  # as systemd or `docker stop` would
    except BaseException:
        if process.returncode is None:
            process.kill()
        raise
    finally:
        async with asyncio.timeout(STOP_TIMEOUT):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode(errors="replace")


def count_lines(log: Path) -> int:
    return len(log.read_bytes().splitlines()) if log.is_file() else 0


def event_after(log: Path, skip: int, name: str) -> dict[str, Any] | None:
    """The first event called `name` after the first `skip` lines of `log`, if logged yet."""
    if not log.is_file():
        return None
    for line in log.read_bytes().splitlines()[skip:]:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == name:
                return dict(record)
    return None


async def file_one(port: int, number: int) -> str:
    content = (
        f"From: {SENDER}\r\nTo: {RETIRED}\r\nSubject: Motion A123456789, case {number}\r\n"
        f"Message-ID: <{number}.audit@lawfirm.example>\r\n\r\nPlease file.\r\n"
    ).encode()
    async with smtp_session(port) as client, asyncio.timeout(10):
        await client.mail(SENDER)
        await client.rcpt(RETIRED)
        try:
            await client.data(content)
        except aiosmtplib.SMTPDataError as exc:
            return exc.message.rpartition("(ref ")[2].rstrip(")")
        await client.quit()
    raise AssertionError("the retired address accepted the filing")


def purge(database: Path, reference: str) -> None:
    """What retention does to an old record: the message and all that hangs on it go."""
    with contextlib.closing(connect(database)) as conn:
        purge_message(conn, reference)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("audit", *args, cwd=cwd)


@pytest.mark.parametrize("destination", ["file", "stdout"])
async def test_the_log_of_two_runs_verifies_and_a_later_edit_is_named(
    tmp_path: Path, destination: str
) -> None:
    stdout = tmp_path / "stdout.log"
    log = tmp_path / "gateway.log" if destination == "file" else stdout
    edit = ('log = "-"', f"log = {json.dumps(str(log))}") if destination == "file" else None
    config = write_config(tmp_path, edit=edit)
    references = []
    for run in range(2):  # a restart: the file's chain continues; stdout starts a new one
        async with serving_to(config, log, stdout=stdout) as port:
            references.append(await file_one(port, run))
    files = () if destination == "file" else (str(log),)
    settings = load_settings(config, {})
    logs = tuple(Path(f) for f in files)

    verified = await asyncio.to_thread(cli, "verify", *files, "--config", str(config), cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.splitlines()[-1].startswith("OK: ")
    assert verified.stdout.splitlines()[-1].endswith(" records, chain intact")
    chains = [line for line in verified.stdout.splitlines() if line.startswith("  chain ")]
    assert len(chains) == (1 if destination == "file" else 2)
    assert all("matches its anchor in the store" in line for line in chains)

    # The log never held the A-number; the store does, and `show` joins the two.
    text = log.read_text(encoding="utf-8")
    assert "A123456789" not in text
    assert "Motion [A-number], case 0" in text
    shown = await asyncio.to_thread(
        audit, settings, action="show", targets=(references[0],), logs=logs
    )
    assert shown.status == 0, shown.err
    assert "smtp.session.opened" in shown.out
    assert "smtp.session.closed" in shown.out
    assert "subject         Motion [A-number], case 0" in shown.out

    # Once retention has purged the record, the log still tells what happened.
    await asyncio.to_thread(purge, tmp_path / "state" / "gateway.sqlite3", references[1])
    purged = await asyncio.to_thread(
        audit, settings, action="show", targets=(references[1],), logs=logs
    )
    assert purged.status == 1
    assert f"no attempt {references[1]} in the store" in purged.err
    assert "smtp.message.received" in purged.out

    lines = log.read_bytes().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if b"smtp.message.received" in line)
    lines[number] = lines[number].replace(b"case 0", b"case 7")
    log.write_bytes(b"".join(lines))
    tampered = await asyncio.to_thread(audit, settings, action="verify", targets=files)
    assert tampered.status == 1
    failed = next(line for line in tampered.out.splitlines() if line.startswith("FAILED: "))
    assert failed.startswith(f"FAILED: {log}:{number + 1}: altered: ")


async def test_a_log_cut_short_after_a_clean_stop_fails_against_the_store(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    config = write_config(tmp_path, edit=('log = "-"', f"log = {json.dumps(str(log))}"))
    async with serving_to(config, log, stdout=tmp_path / "stdout.log") as port:
        await file_one(port, 1)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-2]))  # gateway.stopping and gateway.stopped are gone
    settings = load_settings(config, {})
    result = await asyncio.to_thread(audit, settings, action="verify")
    assert result.status == 1
    assert f"FAILED: {log}:{len(lines) - 2}: truncated: the log ends at seq {len(lines) - 2}" in (
        result.out
    )
    alone = await asyncio.to_thread(audit, settings, action="verify", use_store=False)
    assert alone.status == 0  # the file alone cannot know what came after its end
    assert "no state store" in alone.out


def test_verify_of_a_log_on_standard_output_asks_for_the_saved_file(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = cli("verify", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "docker logs gateway > saved.log" in result.stderr


def test_verify_names_every_problem_first_things_first(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    log.write_text('{"event": "gateway.started"}\n', encoding="utf-8")  # before the chain
    chain = ChainedLog.to_file(log, check_every_s=0)
    for n in range(12):
        chain.msg(json.dumps({"event": "smtp.reply.sent", "n": n}))
    chain.close()
    lines = log.read_bytes().splitlines(keepends=True)
    lines[9] = lines[9].replace(b'"n": 8', b'"n": 80')
    del lines[4]
    log.write_bytes(b"".join(lines))
    settings = make_settings(tmp_path)  # no gateway ever ran here: no store
    answer = audit(settings, action="verify", targets=(str(log),))
    assert answer.status == 1
    assert answer.out.splitlines() == [
        f"checked, oldest first: {log}",
        f"  chain {json.loads(lines[1])['chain']}: seq 1-12 (11 records)",
        "  note: 1 line carries no chain, before the first one"
        " (written before the gateway chained its log)",
        "  note: no state store; the chains' beginnings and ends were not checked",
        f"FAILED: {log}:5: missing: record seq 4 is not in the log",
        f"  and {log}:9: altered: record seq 9 was changed:"
        f" its SHA-256 is not the prev of {log}:10",
    ]


async def test_the_command_line_gives_the_same_answers(
    start_gateway: GatewayFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filed = await fill_store(start_gateway)
    config = tmp_path / "audit.toml"
    state = filed.gateway.settings.storage.state_dir
    config.write_text(
        f"[storage]\nstate_dir = {json.dumps(str(state))}\n\n"
        '[[offices]]\nname = "ice-occ-chicago"\ndisplay_name = "ICE OCC Chicago"\n'
        'short_name = "ICE OCC Chicago"\ntimezone = "America/Chicago"\nretires = 2017-09-12\n'
        'portal_url = "https://eservice.ice.gov/"\naddresses = ["filings@occ-chicago.example"]\n',
        encoding="utf-8",
    )
    capsys.readouterr()  # the sessions' own console log
    status = await asyncio.to_thread(
        main, ["audit", "--config", str(config), "--sender", SENDER, "--format", "json"]
    )
    assert status == 0
    listed = [json.loads(line)["reference"] for line in capsys.readouterr().out.splitlines()]
    assert listed == [filed.refs[n] for n in ("motion", "postmaster", "refusal", "second")]
    status = await asyncio.to_thread(
        main, ["audit", "show", filed.refs["motion"], "--config", str(config), "--unredacted"]
    )
    assert status == 0
    assert "subject         Motion to continue A123456789" in capsys.readouterr().out
