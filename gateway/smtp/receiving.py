"""ReceiveSettings: what the SMTP side reads, taken from the whole configuration once.

The server, the hooks and the two desks (RCPT, end of DATA) read the [server] section, the
address book, the verdict's rules (offices, limits, our own addresses), the sender checks'
sections and the raw-message retention. `ReceiveSettings.from_settings()` is the one place
those are picked out of GatewaySettings; a reload builds a new one, and every session keeps
the one it connected with. This module holds values only: it serves and decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from gateway.config import (
    DnsSettings,
    GatewaySettings,
    SenderAuthSettings,
    ServerSettings,
    StorageSettings,
)
from gateway.mail.addresses import AddressBook
from gateway.notices.context import NoticeContext
from gateway.policy.decision import NoticeScope
from gateway.policy.verdict import VerdictRules

__all__ = ["ReceiveSettings"]


@dataclass(frozen=True, slots=True)
class ReceiveSettings:
    """The settings SMTP sessions are served with."""

    server: ServerSettings
    book: AddressBook  # whose address is it
    rules: VerdictRules  # the end-of-DATA verdict's settings, the offices by name among them
    sender_auth: SenderAuthSettings
    dns: DnsSettings
    storage: StorageSettings  # keep_raw and raw_retention_days
    # [lookup] public_url: replies naming a reference carry <public_url><reference>.
    public_url: str | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ReceiveSettings:
        """The SMTP side's part of `settings`."""
        return cls(
            server=settings.server,
            book=settings.address_book,
            rules=_verdict_rules(settings),
            sender_auth=settings.sender_auth,
            dns=settings.dns,
            storage=settings.storage,
            public_url=settings.lookup.public_url,
        )


def _verdict_rules(settings: GatewaySettings) -> VerdictRules:
    """The settings the end-of-DATA verdict depends on."""
    notices = NoticeContext.from_settings(settings)
    limits = settings.limits
    return VerdictRules(
        offices={o.name: o for o in settings.offices},
        # Mail from these comes back to us: answering it would start a loop.
        own_domains=notices.own_domains,
        own_addresses=frozenset({notices.from_address.lower()}),
        notice_domain=notices.from_address.rpartition("@")[2],
        max_received=limits.max_received_headers,
        should_tempfail_on_dns=settings.sender_auth.on_temperror == "tempfail",
        dedup_window=timedelta(seconds=limits.dedup_window),
        notice_limits={
            NoticeScope.SENDER: limits.notices_per_sender,
            NoticeScope.DOMAIN: limits.notices_per_domain,
            NoticeScope.CLIENT: limits.notices_per_client,
            NoticeScope.TOTAL: limits.notices_total,
        },
        forward_to=tuple(settings.postmaster.forward_to),
    )
