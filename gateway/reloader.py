"""The reload driver: SIGHUP and SIGUSR1 turned into a reopened audit log and a reload.

A thin driver around reload.py's pure plan: read the config and templates again (in a thread),
check everything that can fail, and only then swap what new SMTP sessions take at connect
(smtp/server.py's Serving) and the delivery worker's composer. It must not decide what a
change means (reload.py does) nor build the server or the worker (app.py does).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import structlog

from gateway.audit.chain import ChainedLog
from gateway.config import GatewaySettings
from gateway.delivery.composer import Composer, ComposerSettings, make_composer
from gateway.delivery.worker import DeliveryWorker
from gateway.errors import ConfigError
from gateway.notices.context import NoticeContext
from gateway.notices.dkim import DkimKey
from gateway.notices.render import NoticeRenderer
from gateway.reload import ReloadPlan, plan_reload, templates_digest
from gateway.smtp.receiving import ReceiveSettings
from gateway.smtp.replies import check_replies
from gateway.smtp.server import Serving

__all__ = ["HangupSignals", "Reloader"]

log = structlog.get_logger()


class HangupSignals:
    """SIGHUP (reopen the audit log, then reload) and SIGUSR1 (reopen the log), handled one
    at a time in the order they came: two quick SIGHUPs are two reloads, never overlapping."""

    SIGNALS = (signal.SIGHUP, signal.SIGUSR1)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._received: asyncio.Queue[signal.Signals] = asyncio.Queue()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self._received.put_nowait, signum)

    async def serve(self, reloader: Reloader, chain: ChainedLog | None) -> None:
        """Act on each signal as it comes; runs until cancelled."""
        while True:
            signum = await self._received.get()
            try:
                if chain is not None:
                    await _reopen_log(chain, signum)
                if signum is signal.SIGHUP:
                    await reloader.reload()
            except Exception as exc:  # the task's boundary: a reload must never end the process
                log.error("gateway.reload.refused", error=f"{type(exc).__name__}: {exc}")

    def remove(self) -> None:
        for signum in self.SIGNALS:
            self._loop.remove_signal_handler(signum)


async def _reopen_log(chain: ChainedLog, signum: signal.Signals) -> None:
    # logrotate's `create` renames the file, then signals: the lines go to the new file now.
    rotated = await asyncio.to_thread(chain.reopen)
    log.info("gateway.log.reopened", log=chain.destination, signal=signum.name, rotated=rotated)


class Reloader:
    """The settings in force and the parts built from them that a reload replaces: the
    snapshot new SMTP sessions take, and the delivery worker's composer (the templates)."""

    def __init__(
        self,
        settings: GatewaySettings,
        templates: str,
        serving: Serving,
        worker: DeliveryWorker,
        dkim_key: DkimKey,
        reread: Callable[[], GatewaySettings] | None,
    ) -> None:
        self.settings = settings
        self.templates = templates  # templates_digest() of the templates in force
        self._serving = serving
        self._worker = worker
        self._dkim_key = dkim_key
        self._reread = reread

    async def reload(self) -> None:
        """Read the config and templates again and serve new sessions with them; if either
        fails to load, log why and keep the old ones."""
        if self._reread is None:
            return
        try:
            plan, renderer, templates = await asyncio.to_thread(self._prepare, self._reread)
            if plan.changed:  # else the handler in use (and its DNS cache) stays
                self._serving.use(ReceiveSettings.from_settings(plan.settings))
        except ConfigError as exc:
            log.error("gateway.reload.refused", error=str(exc))
            return
        except OSError as exc:  # a template directory that cannot be read
            log.error("gateway.reload.refused", error=exc.strerror or str(exc))
            return
        changed = [*plan.changed, *(["templates"] if templates != self.templates else [])]
        old: Composer | None = None
        if changed:
            old = self._worker.composer
            composing = ComposerSettings.from_settings(plan.settings)
            self._worker.composer = make_composer(composing, renderer, self._dkim_key)
        log.info(
            "gateway.reloaded",
            changed=changed,
            needs_restart=list(plan.needs_restart),
            config_before=plan.digest_before,
            config_after=plan.digest_after,
            templates_before=self.templates,
            templates_after=templates,
        )
        self.settings, self.templates = plan.settings, templates
        if old is not None:
            # The jobs already handed to the old composer are composed by it, with the old
            # templates (a job in flight keeps what it started with, as a session does).
            await asyncio.to_thread(old.retire)

    def _prepare(
        self, reread: Callable[[], GatewaySettings]
    ) -> tuple[ReloadPlan, NoticeRenderer, str]:
        """Everything that can fail, before anything is replaced (in a thread: files).

        Raises:
            ConfigError: the config, its replies or its templates do not load.
            OSError: a template directory cannot be read.
        """
        plan = plan_reload(self.settings, reread())
        check_replies(plan.settings.offices, public_url=plan.settings.lookup.public_url)
        # Compiles and trial-renders every set.
        renderer = NoticeRenderer(NoticeContext.from_settings(plan.settings))
        return plan, renderer, templates_digest(plan.settings)
