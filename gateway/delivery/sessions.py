"""SMTP sessions kept open per destination server, so that a backlog of notices to one
smarthost goes over a few connections rather than a new one (TCP, EHLO, STARTTLS) each.

A session carries one mail at a time: it is out of the pool while in use, goes back only
after the mail it carried was answered 2xx, and is closed after any failure or unexpected
reply, once it has been idle IDLE_S seconds and once it is AGE_S old. Sessions are kept per
server and TLS requirement (SessionKey), so a mail never rides on a session set up with
weaker security than its own would have had. Nothing here speaks SMTP beyond QUIT, decides
about mail or logs: transport.py opens sessions, uses them and gives them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import aiosmtplib

__all__ = [
    "AGE_S",
    "IDLE_S",
    "Security",
    "Session",
    "SessionKey",
    "SessionPool",
    "is_reusable",
]

# Postfix's smtpd drops a client idle for 300 s (smtpd_timeout), and many servers far
# sooner; 5 s is Postfix's own smtp_connection_cache_time_limit for reuse.
IDLE_S = 5.0
# A session older than this is not reused: a server's per-connection limits (Postfix's
# smtpd max_use, session timers) and a smarthost's DNS changes then take effect.
AGE_S = 300.0
_QUIT_S = 2.0  # how long a polite QUIT may take before the socket is just closed


class Security(StrEnum):
    """What a session was set up with, as the mail's route asked for it."""

    REQUIRED = "required"  # STARTTLS with a verified certificate, or no mail
    VERIFIED = "verified"  # STARTTLS with a verified certificate when offered (smarthost)
    OPPORTUNISTIC = "opportunistic"  # STARTTLS without checks when offered (MX, legacy host)
    CLEAR = "clear"  # after a failed handshake (RFC 7435 §3)


@dataclass(frozen=True, slots=True)
class SessionKey:
    """The server a session talks to and how it was secured; sessions are shared only
    between mails whose keys are equal."""

    name: str  # the name TLS checks and logs use
    address: str
    port: int
    security: Security
    login: str | None  # the AUTH user, or None


@dataclass(eq=False, slots=True)
class Session:
    key: SessionKey
    client: aiosmtplib.SMTP
    opened_at: float  # time.monotonic()
    idle_since: float = field(default=0.0)
    mails: int = 0  # mails it carried, answered 2xx

    @property
    def is_reused(self) -> bool:
        return self.mails > 0


def is_reusable(
    *, opened_at: float, idle_since: float, now: float, idle_s: float, age_s: float
) -> bool:
    """Whether a session idle since `idle_since` may carry another mail at `now`."""
    return now - idle_since < idle_s and now - opened_at < age_s


class SessionPool:
    """Idle sessions by key, at most `max_idle` in all; close() before the loop ends."""

    def __init__(
        self,
        *,
        max_idle: int,
        idle_s: float = IDLE_S,
        age_s: float = AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_idle = max_idle
        self.idle_s = idle_s
        self.age_s = age_s
        self.clock = clock
        self._idle: dict[SessionKey, list[Session]] = {}
        self._timers: dict[Session, asyncio.TimerHandle] = {}
        self._quitting: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def idle(self) -> int:
        """How many sessions wait in the pool."""
        return len(self._timers)

    @property
    def servers(self) -> int:
        """How many servers (keys) have a session waiting."""
        return len(self._idle)

    def take(self, key: SessionKey) -> Session | None:
        """An idle session for `key`, now the caller's alone; None when there is none."""
        sessions = self._idle.get(key, [])
        while sessions:
            session = sessions[-1]  # the most recently used: the likeliest to be alive
            self._forget(session)
            if self._is_reusable(session):
                return session
            self._quit(session)
        return None

    def give_back(self, session: Session) -> None:
        """Keep `session` for the next mail to its server, after a mail it carried was
        answered 2xx; sessions past their age, or beyond max_idle, are closed instead."""
        session.idle_since = self.clock()
        if self._closed or not session.client.is_connected or not self._is_reusable(session):
            self._quit(session)
            return
        if self.idle >= self.max_idle:
            self._quit_oldest()
        self._idle.setdefault(session.key, []).append(session)
        loop = asyncio.get_running_loop()
        self._timers[session] = loop.call_later(self.idle_s, self._expire, session)

    async def close(self) -> None:
        """QUIT every idle session and wait for them; the pool keeps nothing after this."""
        self._closed = True
        for sessions in self._idle.values():
            for session in sessions:
                self._timers.pop(session).cancel()
                self._quit(session)
        self._idle.clear()
        await asyncio.gather(*self._quitting, return_exceptions=True)

    def _is_reusable(self, session: Session) -> bool:
        return is_reusable(
            opened_at=session.opened_at,
            idle_since=session.idle_since,
            now=self.clock(),
            idle_s=self.idle_s,
            age_s=self.age_s,
        )

    def _expire(self, session: Session) -> None:
        self._forget(session)
        self._quit(session)

    def _quit_oldest(self) -> None:
        oldest = min(self._timers, key=lambda s: s.idle_since)
        self._forget(oldest)
        self._quit(oldest)

    def _forget(self, session: Session) -> None:
        """Take an idle session out of the pool, and its server's entry once it has none:
        in mx mode the servers are every sender domain's, over years."""
        self._timers.pop(session).cancel()
        sessions = self._idle[session.key]
        sessions.remove(session)
        if not sessions:
            del self._idle[session.key]

    def _quit(self, session: Session) -> None:
        # A task of the pool's own, awaited by close(): a QUIT must not hold up the mail
        # that found the session expired.
        task = asyncio.get_running_loop().create_task(_quit(session.client))
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)


async def _quit(client: aiosmtplib.SMTP) -> None:
    """RFC 5321 §4.1.1.10: QUIT, then close, whatever the server says or fails to."""
    try:
        async with asyncio.timeout(_QUIT_S):
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
    except TimeoutError:
        pass
    finally:
        client.close()
