"""`gateway queue show-message ID`: a job's mail, byte for byte, like Postfix's postcat -q.

A delivered notice is printed as it was sent (kept by store/sentmail.py). Anything else is
built now the way the delivery worker would build it (delivery/composer.py), signed with the
existing DKIM key when there is one; building never creates a key, queues or sends.
"""

from __future__ import annotations

from datetime import datetime
from typing import BinaryIO, TextIO

from gateway.config import GatewaySettings
from gateway.errors import DeliveryError
from gateway.notices.context import NoticeContext
from gateway.notices.dkim import DkimKey, default_key_path, dkim_domain, load_key
from gateway.store.interface import OperatorQueue
from gateway.store.outbox import Job, JobState

__all__ = ["write_job_message"]


def write_job_message(
    settings: GatewaySettings,
    queue: OperatorQueue,
    job_id: int,
    *,
    now: datetime,
    out: BinaryIO,
    err: TextIO,
) -> int:
    """Write job `job_id`'s mail to `out`; returns the exit status (1: no such job or mail)."""
    queued = queue.read_job(job_id)
    if queued is None:
        err.write(f"gateway: no job {job_id}\n")
        return 1
    job = queued.job
    data = queue.sent_data(job.reference, job.id) if job.state is JobState.DELIVERED else None
    if data is None:
        try:
            data = _build(settings, job, now=now, err=err)
        except DeliveryError as exc:
            err.write(f"gateway: job {job_id} has no mail to show: {exc}\n")
            return 1
    out.write(data)
    out.flush()
    return 0


def _build(settings: GatewaySettings, job: Job, *, now: datetime, err: TextIO) -> bytes:
    # Imported here: rendering pulls in jinja2 and the templates, which list and show never need.
    from gateway.delivery.composer import ComposerSettings, MailBuilder
    from gateway.notices.render import NoticeRenderer

    composing = ComposerSettings.from_settings(settings)
    renderer = NoticeRenderer(composing.notices)
    builder = MailBuilder(composing, renderer, _existing_key(composing.notices, err))
    try:
        return builder.build(job, now).data
    finally:
        builder.close()  # its own reader of the store (a bounce reads the relay it reports)


def _existing_key(context: NoticeContext, err: TextIO) -> DkimKey | None:
    path = context.notices.dkim_key_file or default_key_path(context)
    try:
        return load_key(path, selector=context.notices.dkim_selector, domain=dkim_domain(context))
    except (OSError, ValueError) as exc:
        err.write(f"gateway: shown unsigned (DKIM key {path}: {exc})\n")
        return None
