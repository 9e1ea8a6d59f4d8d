"""Options go before, between or after the positionals of every command that takes them.

The commands are read from the parser itself (`command_parsers()`): each command with
positionals, and each word of its first positional's choices (`queue hold`, `audit verify`),
must have a case below, so a command added later cannot escape. Each case runs three times,
its options before, between and after the positionals, each on a fresh copy of one filled
store (the changing commands, `queue hold` or `postmaster forward`, must find the same
store); a user expects the same answer from each, and never "unrecognized arguments".
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.arguments import command_parsers
from gateway.cli import main
from gateway.passwords import hash_password, write_users
from gateway.store.db import connect
from gateway.store.queueactions import JobFilter, QueueAction, change_jobs, select_jobs
from tests.conftest import GatewayFactory
from tests.filings import Filed, fill_store

# In the filled store job 1 is delivered, 2 deferred and 3 failed; the copy every run starts
# from has job 3 retried and then held, for `queue release`.
DEFERRED_JOB, HELD_JOB = "2", 3


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    out: str
    err: str
    written: bytes | None  # what the command wrote to OUT, for those that write a file


@dataclass(frozen=True, slots=True)
class Case:
    positionals: tuple[str, ...]
    options: tuple[str, ...]


def subcommands() -> set[tuple[str, ...]]:
    """Every command that takes positionals, as the words that name it."""
    found: set[tuple[str, ...]] = set()
    for name, parser in command_parsers().items():
        # argparse lists its arguments only in _actions; there is no public way to walk them.
        positionals = [a for a in parser._actions if not a.option_strings]
        if not positionals:
            continue
        first = positionals[0]
        if first.choices is None:
            found.add((name,))
        else:
            found.update((name, str(choice)) for choice in first.choices)
    return found


def test_the_derived_commands_include_those_users_met_breaking() -> None:
    # The walk above finds the commands issue 11 saw fail ("audit show --tz office REF").
    assert {("audit", "show"), ("audit", "verify"), ("queue", "hold")} <= subcommands()
    assert not any(a == "serve" for a, *_ in subcommands())  # no positionals: nothing to order


def cases(filed: Filed, work: Path) -> dict[tuple[str, ...], Case]:
    """Every subcommand's positionals (after its words) and options, on the filled store."""
    motion, postmaster = filed.refs["motion"], filed.refs["postmaster"]
    out, log = str(work / "out.file"), str(work / "audit.log")
    return {
        ("audit", "list"): Case((), ("--format", "json", "--tz", "office")),
        ("audit", "show"): Case((motion,), ("--tz", "office", "--unredacted")),
        ("audit", "notice"): Case((motion,), ("--output", out)),
        ("audit", "summary"): Case((), ("--since", "2017-09-13", "--tz", "office")),
        ("audit", "report"): Case((), ("--out", out, "--since", "2017-09-13")),
        ("audit", "senders"): Case((), ("--format", "csv")),
        ("audit", "verify"): Case((log,), ("--no-store",)),
        ("postmaster", "list"): Case((), ("--limit", "5")),
        ("postmaster", "show"): Case((postmaster,), ("--limit", "5")),
        ("postmaster", "export"): Case((postmaster,), ("--output", out)),
        ("postmaster", "forward"): Case((postmaster,), ("--limit", "5")),
        ("queue", "list"): Case((), ("--all", "--kind", "notice")),
        ("queue", "show"): Case((DEFERRED_JOB,), ("--message",)),
        ("queue", "show-message"): Case((DEFERRED_JOB,), ("--all",)),
        ("queue", "flush"): Case((), ("--kind", "notice")),
        ("queue", "hold"): Case((DEFERRED_JOB,), ("--kind", "notice")),
        ("queue", "release"): Case((str(HELD_JOB),), ("--kind", "notice")),
        ("queue", "retry"): Case((DEFERRED_JOB,), ("--kind", "notice")),
        ("queue", "delete"): Case((DEFERRED_JOB,), ("--yes",)),
        ("console", "adduser"): Case(("records",), ("--password-stdin",)),
        ("console", "deluser"): Case(("records",), ()),
    }


def orders(words: list[str], positionals: list[str], options: list[str]) -> list[list[str]]:
    """The options before the command's words, after its last positional, and among them."""
    everything = [*words[1:], *positionals]
    return [
        [words[0], *options, *everything],
        [words[0], *everything, *options],
        [words[0], *everything[:1], *options, *everything[1:]],
    ]


def snapshot(filed: Filed, pristine: Path) -> None:
    """A closed copy of the filled state directory, one job held, for each run to start from."""
    state = filed.gateway.settings.storage.state_dir
    shutil.copytree(state, pristine, ignore=shutil.ignore_patterns("gateway.sqlite3*"))
    source = filed.gateway.settings.storage.database
    with (
        contextlib.closing(connect(source, readonly=True)) as live,
        contextlib.closing(sqlite3.connect(pristine / source.name)) as copy,
    ):
        live.backup(copy)
    with contextlib.closing(connect(pristine / source.name)) as conn:
        for action in (QueueAction.RETRY, QueueAction.HOLD):
            changed = change_jobs(
                conn, action, JobFilter(ids=(HELD_JOB,)), now=datetime.now(UTC), operator="t"
            )
            assert changed == [HELD_JOB], select_jobs(conn, JobFilter())


def write_config(work: Path, state: Path) -> Path:
    """A config on the run's copy of the store, with somebody to forward postmaster mail to."""
    config = work / "order.toml"
    config.write_text(
        f"[storage]\nstate_dir = {json.dumps(str(state))}\n\n"
        '[postmaster]\nforward_to = ["hostmaster@agency.example"]\n\n'
        f"[console]\nusers_file = {json.dumps(str(state / 'console-users'))}\n\n"
        '[[offices]]\nname = "ice-occ-chicago"\ndisplay_name = "ICE OCC Chicago"\n'
        'short_name = "ICE OCC Chicago"\ntimezone = "America/Chicago"\nretires = 2017-09-12\n'
        'portal_url = "https://eservice.ice.gov/"\naddresses = ["filings@occ-chicago.example"]\n',
        encoding="utf-8",
    )
    return config


def fresh_copy(pristine: Path, state: Path, out_file: Path) -> None:
    shutil.rmtree(state, ignore_errors=True)
    shutil.copytree(pristine, state)
    out_file.unlink(missing_ok=True)


def written_to(out_file: Path) -> bytes | None:
    # An HTML report names the second it was generated in (report.html.j2): two runs a
    # second apart differ there and nowhere else.
    if not out_file.exists():
        return None
    return _GENERATED.sub(b"Generated", out_file.read_bytes())


_GENERATED = re.compile(rb"Generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


async def answer(
    argv: list[str],
    *,
    pristine: Path,
    state: Path,
    out_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> Answer:
    """Run `argv` on a fresh copy of the store; what it printed and wrote."""
    await asyncio.to_thread(fresh_copy, pristine, state, out_file)
    capsys.readouterr()
    async with asyncio.timeout(30):
        status = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    written = await asyncio.to_thread(written_to, out_file)
    return Answer(status, steady(captured.out), captured.err, written)


# What a notice rendered now (`queue show-message`) has of the moment: its date, its DKIM
# signature (over that date) and its MIME boundaries.
_OF_THE_MOMENT = re.compile(
    r"^Date: .*$|^DKIM-Signature:.*(?:\r?\n[ \t].*)*$|={5,}\d+==", re.MULTILINE
)


def steady(printed: str) -> str:
    """What was printed, without what differs between two renderings of one notice."""
    return _OF_THE_MOMENT.sub("", printed)


async def test_every_command_takes_its_options_in_every_position(
    start_gateway: GatewayFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    filed = await fill_store(start_gateway)
    pristine, state, work = tmp_path / "pristine", tmp_path / "run" / "state", tmp_path
    snapshot(filed, pristine)
    write_users(pristine / "console-users", {"records": hash_password("an old password")})
    config = write_config(work, state)
    (work / "audit.log").write_text("", encoding="utf-8")
    table = cases(filed, work)
    assert set(table) == subcommands(), "every command with positionals has a case here"
    for words, case in sorted(table.items()):
        options = [*case.options, "--config", str(config)]
        runs = orders(list(words), list(case.positionals), options)
        answers = []
        for argv in runs:
            # `console adduser --password-stdin` reads its password from standard input.
            monkeypatch.setattr("sys.stdin", io.StringIO("a new long password\n"))
            answers.append(
                await answer(
                    argv, pristine=pristine, state=state, out_file=work / "out.file", capsys=capsys
                )
            )
        first = answers[0]
        assert "unrecognized arguments" not in first.err, (words, first)
        assert first.status == 0, (words, first)
        assert answers[1:] == [first, first], words


def test_a_missing_or_unknown_command_is_still_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in ([], ["frobnicate"], ["--config", "x.toml", "serve"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
