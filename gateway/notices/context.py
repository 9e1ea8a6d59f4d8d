"""NoticeContext: the settings notices are made from, taken from the whole configuration once.

Rendering (render.py), signing (dkim.py) and the delivery composer read the [notices]
section, the offices a notice speaks for, and the few values of other sections that decide a
notice's From address and where a generated key lives. `NoticeContext.from_settings()` is
the one place those are picked out of GatewaySettings; nothing in notices/ reads the whole
configuration. This module reads no file and renders nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewaySettings, NoticeSettings, OfficeSettings

__all__ = ["NoticeContext"]


@dataclass(frozen=True, slots=True)
class NoticeContext:
    """What notices are made from: [notices], the offices, and the gateway's own names."""

    notices: NoticeSettings
    offices: tuple[OfficeSettings, ...]
    hostname: str  # [server] hostname: the default From domain, and one of our own
    served_domains: frozenset[str]  # the offices' domains: mail from them is our own
    state_dir: Path  # [storage] state_dir: where a generated DKIM key is kept
    public_url: str | None = None  # [lookup] public_url: each notice links to its receipt

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> NoticeContext:
        """The notices' part of `settings`."""
        return cls(
            notices=settings.notices,
            offices=tuple(settings.offices),
            hostname=settings.server.hostname,
            served_domains=settings.address_book.served_domains,
            state_dir=settings.storage.state_dir,
            public_url=settings.lookup.public_url,
        )

    @property
    def from_address(self) -> str:
        """The notices' From address: the configured one, else no-reply@<server.hostname>."""
        return self.notices.from_address or f"no-reply@{self.hostname}"

    @property
    def own_domains(self) -> frozenset[str]:
        """Domains whose mail comes from us: the offices' and the gateway's host name."""
        return self.served_domains | {self.hostname.lower()}

    def office(self, name: str) -> OfficeSettings:
        """The office called `name` (a job's office is always a configured one)."""
        return next(o for o in self.offices if o.name == name)
