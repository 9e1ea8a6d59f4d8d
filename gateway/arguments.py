"""The `gateway` command line's grammar: every command, its options and its positionals.

cli.py runs what is parsed here; the tests walk command_parsers() to try every command's
options before, among and after its positionals.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.ops.queue import add_queue_arguments

__all__ = ["command_parsers", "parse"]


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser, and each command's own parser by name."""
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="The MX for retired filing addresses: refuse or notify, record every attempt.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    by_name: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        by_name[name] = sub
        sub.add_argument(
            "--config",
            type=Path,
            default=None,
            help="TOML settings file (default: $GATEWAY_CONFIG, else the built-in config)",
        )
        return sub

    serve = command("serve", "Run the SMTP server until SIGTERM or SIGINT.")
    serve.add_argument(
        "--as-of",
        metavar="ISO-8601",
        default=None,
        help="run the clock as if it were this moment (trials and rehearsals; logged loudly)",
    )
    _add_worker(serve)
    command(
        "check-config",
        "Validate the settings and print what is in force (like postconf -n), each office's"
        " phases, the phase now and the next boundary, and the address table.",
    )
    command(
        "migrate",
        "Bring the store ([storage] url, or the SQLite file) to this version's schema and say"
        " from which version; a store of a newer gateway is refused untouched.",
    )
    _add_preview(command("preview", "Render the notice a message would get; nothing is sent."))
    add_queue_arguments(
        command(
            "queue",
            "Show and manage the outbox: list, show ID, show-message ID, flush, hold, release,"
            " retry, delete (by ID or by filter).",
        )
    )
    keygen = command(
        "dkim-keygen",
        "Print the DNS TXT record for the notices' DKIM key, creating the key if there is none.",
    )
    keygen.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        default=None,
        help="write a new key to FILE instead (never overwrites), for [notices] dkim_key_file",
    )
    _add_audit(
        command(
            "audit",
            "Find and account for attempts: list (default), show REF, notice REF (the notice"
            " as sent, .eml), summary, report --out FILE, senders, verify [FILE ...] (the log's"
            " hash chain).",
        )
    )
    _add_init(commands, by_name)
    console = command(
        "console",
        "The operator console's basic-auth users ([console] users_file): adduser NAME"
        " (asks for the password twice, or --password-stdin), deluser NAME.",
    )
    console.add_argument("action", choices=["adduser", "deluser"])
    console.add_argument("name", metavar="NAME")
    console.add_argument(
        "--password-stdin", action="store_true", help="adduser: read the password from stdin"
    )
    _add_postmaster(
        command(
            "postmaster",
            "Mail to postmaster: list, show REF, export REF [--output FILE], forward REF"
            " (to [postmaster] forward_to).",
        )
    )
    return parser, by_name


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser by name: what the tests walk to try every command's options in
    every position, so that a command added later is tried too."""
    return _parser()[1]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line, options and positionals in any order after the command.

    argparse's plain parsing stops filling optional positionals at the first option, so
    `audit show --tz office REF` left REF unrecognised. Intermixed parsing collects the
    options first and then the positionals; it cannot span a subparser, so the command's own
    parser does it once the command word is known.
    """
    parser, commands = _parser()
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or words[0] not in commands:
        return parser.parse_args(words)  # --help, --version, or a usage error naming COMMAND
    args = commands[words[0]].parse_intermixed_args(words[1:])
    args.command = words[0]
    return args


def _add_worker(serve: argparse.ArgumentParser) -> None:
    # How a supervisor ([server] workers above 1, supervisor.py) starts each of its workers;
    # not for people, so not in --help.
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    serve.add_argument("--listen-fds", default="", help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", type=int, default=-1, help=argparse.SUPPRESS)
    serve.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)


def _add_init(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    by_name: dict[str, argparse.ArgumentParser],
) -> None:
    # Not made by command(): here --config names the file to write, not one to read.
    text = (
        "Write a starting config (the built-in one, with these values), create the state"
        " directory and the DKIM key, and print the DNS records to publish."
    )
    init = by_name["init"] = commands.add_parser("init", help=text, description=text)
    init.add_argument(
        "--config",
        type=Path,
        default=Path("/etc/eservice-gateway/gateway.toml"),
        metavar="FILE",
        help="where to write the config (default: %(default)s)",
    )
    init.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/eservice-gateway"),
        metavar="DIR",
        help="the state directory, made mode 0750 (default: %(default)s)",
    )
    init.add_argument("--domain", help="mail domain of the retired addresses (and mx.DOMAIN)")
    init.add_argument("--office", metavar="NAME", help="the office's short name (a-z, 0-9, -)")
    init.add_argument("--hostname", help="the name the MX record points at (default: mx.DOMAIN)")
    init.add_argument("--listen", metavar="HOST:PORT", help="the SMTP listener")
    init.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help='/metrics and /readyz ("" turns them off)'
    )
    init.add_argument("--log-format", choices=["auto", "json", "console"])
    init.add_argument(
        "--no-key",
        action="store_true",
        help="make no DKIM key now (an image build: the gateway makes it on first start)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing config file")


def _add_postmaster(postmaster: argparse.ArgumentParser) -> None:
    postmaster.add_argument("action", choices=["list", "show", "export", "forward"])
    postmaster.add_argument("reference", nargs="?", metavar="REF", help="a message reference")
    postmaster.add_argument("--since", metavar="DATE", help="list: from this date (UTC) on")
    postmaster.add_argument("--limit", type=int, default=50, help="list: at most this many")
    postmaster.add_argument(
        "--output", type=Path, metavar="FILE", help="export: write here (default: stdout)"
    )


def _add_audit(audit: argparse.ArgumentParser) -> None:
    audit.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "show", "notice", "summary", "report", "senders", "verify"],
    )
    audit.add_argument(
        "targets",
        nargs="*",
        metavar="REF|FILE",
        help="show, notice: a reference; verify: log files (default: the configured log and its"
        " rotations)",
    )
    find = audit.add_argument_group("which attempts (all when none is given)")
    find.add_argument("--since", metavar="DATE", help="from this date or date-time on")
    find.add_argument("--until", metavar="DATE", help="up to this date-time, or to the end of DATE")
    find.add_argument(
        "--tz",
        default="UTC",
        metavar="ZONE",
        help="zone of --since/--until and of the times shown: UTC (default), office (the office's"
        " own), or an IANA name",
    )
    find.add_argument("--sender", metavar="ADDRESS", help="envelope sender (<> for the null one)")
    find.add_argument("--sender-domain", metavar="DOMAIN")
    find.add_argument("--address", metavar="ADDRESS", help="retired address written to")
    find.add_argument("--office", metavar="NAME")
    find.add_argument(
        "--decision", metavar="D", help="accepted, rejected, deferred, refused, or an action"
    )
    find.add_argument(
        "--notice", metavar="S", help="none, suppressed[:why], queued, deferred, delivered, failed"
    )
    find.add_argument("--message-id", metavar="ID")
    find.add_argument("--reference", metavar="REF", help="the queue id quoted in the reply")
    audit.add_argument("--format", choices=["table", "json", "csv"], default="table")
    audit.add_argument("--out", type=Path, metavar="FILE.html", help="report: where to write")
    audit.add_argument(
        "--log", type=Path, action="append", default=[], metavar="FILE", help="show: log files"
    )
    audit.add_argument(
        "--unredacted", action="store_true", help="show subjects and A-numbers as stored"
    )
    audit.add_argument(
        "--no-store", action="store_true", help="verify: do not check against the store"
    )
    audit.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        dest="notice_file",
        help="notice: write the .eml to FILE (default: standard output), exactly as sent",
    )
    audit.add_argument(
        "--job", type=int, metavar="ID", help="notice: which job's, when a reference has several"
    )


def _add_preview(preview: argparse.ArgumentParser) -> None:
    preview.add_argument(
        "--office",
        metavar="NAME",
        help="office to render for (default: the "
        "office of the message's retired address, else the first office)",
    )
    preview.add_argument(
        "--message",
        type=Path,
        metavar="FILE.eml",
        help="the message to answer (default: a built-in sample filing)",
    )
    preview.add_argument(
        "--format",
        choices=["text", "html", "eml"],
        default="text",
        help="the plain-text part, the HTML part, or the whole message",
    )
    preview.add_argument(
        "--kind",
        choices=["not-filed", "advisory"],
        default="not-filed",
        help="the notice after the cutoff, or the advisory before it",
    )
    preview.add_argument(
        "--sender",
        metavar="ADDRESS",
        help="envelope sender to pretend (default: Return-Path, else From)",
    )
    preview.add_argument(
        "--languages", metavar="en,es", help="languages to show, in order (default: the office's)"
    )
    preview.add_argument(
        "--received", metavar="ISO-8601", help="arrival time (default: the message's Date header)"
    )
    preview.add_argument(
        "--templates",
        type=Path,
        metavar="DIR",
        help="template sets to use instead of the configured ones",
    )
