"""The `gateway` command: parse arguments, load settings, set up logging, run.

main() returns the exit status: 0 on success, 2 for a configuration or usage problem, 1 when
the gateway could not run. Tests call main([...]) directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.arguments import parse
from gateway.config import GatewaySettings, load_settings
from gateway.errors import ConfigError
from gateway.smtp.replies import check_replies

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gateway command line; returns the process exit status."""
    try:
        return _run(parse(argv))
    except BrokenPipeError:
        # The reader went away (`gateway queue list | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    if args.command == "init":
        return _init(args)
    try:
        settings = _settings(args.config)
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        from datetime import UTC, datetime

        from gateway.ops.checkconfig import print_check

        print_check(settings, now=datetime.now(UTC), out=sys.stdout)
        return EXIT_OK
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "migrate":
        from gateway.ops.migrate import run_migrate

        return run_migrate(settings, out=sys.stdout, err=sys.stderr)
    if args.command == "queue":
        from gateway.clock import make_clock
        from gateway.ops.queue import queue_request, run_queue

        return run_queue(
            settings,
            queue_request(args),
            clock=make_clock(None),
            out=sys.stdout,
            err=sys.stderr,
            out_bytes=sys.stdout.buffer,
        )
    if args.command == "preview":
        from gateway.ops.preview import run_preview

        return run_preview(
            settings,
            office=args.office,
            message=args.message,
            output=args.format,
            kind=args.kind,
            sender=args.sender,
            languages=args.languages,
            received=args.received,
            templates=args.templates,
            out=sys.stdout.buffer,
            err=sys.stderr,
        )
    if args.command == "audit":
        return _audit(settings, args)
    if args.command == "postmaster":
        return _postmaster(settings, args)
    if args.command == "console":
        from gateway.ops.consoleusers import run_console_users

        return run_console_users(
            settings.console,
            action=args.action,
            name=args.name,
            password_stdin=args.password_stdin,
            stdin=sys.stdin,
            out=sys.stdout,
            err=sys.stderr,
        )
    if args.command == "dkim-keygen":
        from gateway.ops.preview import run_dkim_keygen

        return run_dkim_keygen(settings, out_file=args.out, out=sys.stdout, err=sys.stderr)
    return EXIT_FAILED  # pragma: no cover - argparse rejects unknown commands


def _serve(settings: GatewaySettings, args: argparse.Namespace) -> int:
    from gateway.app import serve
    from gateway.role import WorkerRole

    worker = None
    if args.worker_index is not None:
        fds = tuple(int(fd) for fd in args.listen_fds.split(",") if fd)
        worker = WorkerRole(args.worker_index, args.workers, fds, args.ready_fd, args.run_dir)
    elif settings.server.workers > 1:
        from gateway.supervisor import supervise

        return supervise(settings, config=args.config, as_of=args.as_of, main=main)
    # SIGHUP reads the same file again, the same way (environment overrides included).
    return serve(settings, as_of=args.as_of, reread=lambda: _settings(args.config), worker=worker)


def _audit(settings: GatewaySettings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gateway.ops.auditcmd import AuditRequest, run_audit

    request = AuditRequest(
        action=args.action,
        targets=tuple(args.targets),
        since=args.since,
        until=args.until,
        tz=args.tz,
        sender=args.sender,
        sender_domain=args.sender_domain,
        address=args.address,
        office=args.office,
        decision=args.decision,
        notice=args.notice,
        message_id=args.message_id,
        reference=args.reference,
        output=args.format,
        out_file=args.out,
        logs=tuple(args.log),
        unredacted=args.unredacted,
        use_store=not args.no_store,
        job=args.job,
        notice_file=args.notice_file,
    )
    return run_audit(
        settings,
        request,
        now=datetime.now(UTC),
        out=sys.stdout,
        err=sys.stderr,
        out_bytes=sys.stdout.buffer,
    )


def _postmaster(settings: GatewaySettings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gateway.smtp.postmaster import PostmasterRequest, run_postmaster
    from gateway.store.backend import StoreLocation

    if args.action != "list" and args.reference is None:
        print(
            f"gateway: postmaster {args.action} needs a reference (see gateway postmaster list)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    request = PostmasterRequest(
        action=args.action,
        reference=args.reference,
        since=args.since,
        limit=args.limit,
        output=args.output,
    )
    return run_postmaster(
        settings.postmaster,
        request,
        store=StoreLocation.from_settings(settings),
        now=datetime.now(UTC),
        out=sys.stdout,
        out_bytes=sys.stdout.buffer,
        err=sys.stderr,
    )


def _init(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gateway.ops.init import InitRequest, run_init

    request = InitRequest(
        config=args.config,
        state_dir=args.state_dir.absolute(),
        domain=args.domain,
        office=args.office,
        hostname=args.hostname,
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        log_format=args.log_format,
        make_key=not args.no_key,
        force=args.force,
    )
    return run_init(request, now=datetime.now(UTC), out=sys.stdout, err=sys.stderr)


def _settings(path: Path | None) -> GatewaySettings:
    if path is None and os.environ.get("GATEWAY_CONFIG"):
        path = Path(os.environ["GATEWAY_CONFIG"])
    settings = load_settings(path, os.environ)
    check_replies(settings.offices, public_url=settings.lookup.public_url)
    return settings
