"""The settings sections: [server], [storage], [audit], [limits], [metrics], [sender_auth],
[dns], [delivery], [notices], [postmaster] and [lookup], each with its own checks.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config.values import (
    _DNS_NAME,
    _LABEL,
    _LOOPBACK,
    Language,
    ListenAddress,
    Seconds,
    _Model,
    _parse_listen,
)

__all__ = [
    "AuditSettings",
    "DeliverySettings",
    "DnsSettings",
    "LimitSettings",
    "LookupSettings",
    "MetricsSettings",
    "NoticeSettings",
    "PostmasterSettings",
    "SenderAuthSettings",
    "ServerSettings",
]


class ServerSettings(_Model):
    listen: list[ListenAddress] = Field(
        default_factory=lambda: [ListenAddress("127.0.0.1", 2525)], min_length=1
    )
    hostname: str = Field(default="localhost", pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
    max_message_size: int = Field(default=25 * 1024 * 1024, ge=1024)
    # RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients per transaction.
    max_recipients: int = Field(default=100, ge=1)
    max_connections: int = Field(default=200, ge=1)
    max_commands: int = Field(default=1000, ge=5)
    idle_timeout: Seconds = 300.0
    session_timeout: Seconds = 1800.0
    # On SIGTERM, transactions in flight get this long (idle sessions get 421 at once): it
    # fits, with the rest of the shutdown, in the 10 s Docker and systemd's stop wait by default.
    drain_timeout: Seconds = 7.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Clients connecting from these networks count as authenticated senders (like Postfix's
    # mynetworks): local trials, or a deployment behind the agency's own relay.
    trusted_networks: list[IPv4Network | IPv6Network] = Field(
        default_factory=lambda: _LOOPBACK.copy()
    )
    # HAProxy's PROXY protocol (v1 or v2) from a load balancer in front: then the address it
    # reports is the client's, for trust, limits and the record. Only these peers may send it.
    proxy_protocol: bool = False
    proxy_from: list[IPv4Network | IPv6Network] = Field(default_factory=lambda: _LOOPBACK.copy())
    # The event loop: "uvloop" (the `fast` extra), "asyncio" (the standard library's), or
    # "auto": uvloop when installed and measured faster, today asyncio (smtp/eventloop.py).
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # SMTP serving processes. One is the plain single process; more make `gateway serve` a
    # supervisor that binds the listeners once and hands them to that many children (one per
    # core by default: one process's event loop is the bound, issue 14).
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # This gateway's name among the MX hosts sharing one store: written on every message,
    # refusal, job, attempt and audit line, so each can be traced to the host that made it.
    # Up to a full DNS name's 253 characters: the default is the host name, and a host that
    # names itself by a long FQDN must still start.
    node: str = Field(
        default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$"
    )

    def is_trusted(self, address: str) -> bool:
        """Whether a client at `address` counts as an authenticated sender."""
        return _within(address, self.trusted_networks)

    def may_send_proxy(self, address: str) -> bool:
        """Whether a peer at `address` may tell us, by PROXY protocol, who the client is."""
        return _within(address, self.proxy_from)

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> list[ListenAddress]:
        items = value if isinstance(value, list) else [value]
        return [_parse_listen(item) for item in items]

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return self


def _within(address: str, networks: list[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def _check_pattern(pattern: str) -> str:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
    if compiled.fullmatch(""):
        raise ValueError(f"{pattern!r} matches the empty string")
    return pattern


class AuditSettings(_Model):
    # "-" is standard output; anything else is a file appended to.
    log: str = "-"
    format: Literal["auto", "json", "console"] = "auto"
    # Redact A-numbers (A and 8 or 9 digits) from subjects and attachment names in the log and
    # in `gateway audit` output. On by default: they identify people in immigration
    # proceedings, and the log travels further than the store (aggregators, `docker logs`);
    # the store keeps them, and the message's reference and SHA-256 still identify it.
    redact_a_numbers: bool = True
    # More regular expressions (Python syntax) to redact the same way.
    redact_patterns: list[Annotated[str, AfterValidator(_check_pattern)]] = Field(
        default_factory=list
    )
    # Seconds between records of the hash chain's head in the state store: a log cut short
    # after its last checkpoint can no longer be told from one that ended there.
    checkpoint_interval: Seconds = 60.0


class LimitSettings(_Model):
    """How much the gateway answers; counted in the state store, shared by all processes."""

    # The same message again (same Message-ID and sender, else same SHA-256) within this many
    # seconds gets the SMTP reply but no second notice.
    dedup_window: Seconds = 86400.0
    # Notices per hour, by scope; past one, the message is refused with 451 4.7.1 naming it.
    notices_per_sender: int = Field(default=30, ge=1)
    notices_per_domain: int = Field(default=200, ge=1)
    notices_per_client: int = Field(default=100, ge=1)
    notices_total: int = Field(default=2000, ge=1)
    # A message that has passed through more relays than this is refused as a loop (RFC 5321
    # §6.3 suggests a limit of at least 100 for relays; an MX answering people can be stricter).
    max_received_headers: int = Field(default=30, ge=5)


class MetricsSettings(_Model):
    # The HTTP endpoint for /metrics, /healthz and /readyz; "" turns it off. Loopback by
    # default: counts by reason and queue depth are for the operator, not for the internet.
    listen: ListenAddress | None = ListenAddress("127.0.0.1", 9125)
    # /readyz fails when the state store does not commit a trivial write within this.
    ready_timeout: Seconds = 2.0
    # /readyz fails when the delivery worker has not looked at the queue for this long.
    stall_after: Seconds = 30.0

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> ListenAddress | None:
        return None if value in (None, "") else _parse_listen(value)


class SenderAuthSettings(_Model):
    """`[sender_auth]`: SPF, DKIM and DMARC checks of senders outside trusted_networks."""

    # Off: only clients from [server] trusted_networks count as authenticated senders.
    enabled: bool = True
    # The time budget for one message's SPF, DKIM and DMARC checks together; each query is
    # also bounded by [dns] timeout.
    timeout: Seconds = 20.0
    # What a temporary DNS failure gets: "tempfail" answers 451 4.4.3 and the sender retries;
    # "refuse" treats the sender as unauthenticated (the 5xx, no notice). Never a silent drop.
    on_temperror: Literal["tempfail", "refuse"] = "tempfail"
    # The RFC 8601 authserv-id in Authentication-Results; None means [server] hostname.
    authserv_id: str | None = Field(default=None, max_length=253, pattern=_DNS_NAME)


class DnsSettings(_Model):
    # "host" or "host:port"; empty: the system's resolvers (/etc/resolv.conf).
    nameservers: list[ListenAddress] = Field(default_factory=list)
    timeout: Seconds = 5.0
    # Answers kept for their TTL (dnspython's LRU cache): sender checks ask the same SPF,
    # DKIM and DMARC records for every message from a firm. 0 turns the cache off.
    cache_size: int = Field(default=10000, ge=0)

    @field_validator("nameservers", mode="before")
    @classmethod
    def _nameservers(cls, value: Any) -> list[ListenAddress]:
        items = value if isinstance(value, list) else [value]
        return [_parse_listen(_with_port(str(item), 53)) for item in items]


def _with_port(text: str, port: int) -> str:
    text = text.strip()
    if text.startswith("[") or text.count(":") == 1:
        return text
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


# Postfix's defaults: retry after 1 min, 5 min, 15 min, 1 h, then every 4 h; give up after
# 5 days (maximal_queue_lifetime).
_RETRY_SCHEDULE = [60.0, 300.0, 900.0, 3600.0, 14400.0]


class DeliverySettings(_Model):
    mode: Literal["file", "smarthost", "mx"] = "file"
    outbox_dir: Path = Path("state/notices")
    smarthost: ListenAddress | None = None
    # "required": never send to the smarthost in clear; "opportunistic": STARTTLS if offered.
    starttls: Literal["required", "opportunistic"] = "required"
    username: str | None = None
    # Only from the environment (GATEWAY_DELIVERY__PASSWORD) or a file, never the config file.
    password: str | None = Field(default=None, repr=False)
    password_file: Path | None = None
    # Extra CA certificates (PEM) trusted for the smarthost, e.g. an agency's private CA.
    ca_file: Path | None = None
    # Port of the recipients' mail exchangers: 25 everywhere but in labs and tests.
    mx_port: int = Field(default=25, ge=1, le=65535)
    # Deliver to exchangers at loopback, private or link-local addresses. Off: a sender's
    # domain could otherwise point its MX at our own internal services.
    mx_internal_addresses: bool = False
    # Processes that render and sign notices, so that work never stalls the SMTP side;
    # 0 does it in a thread of the serving process instead.
    composer_processes: int = Field(default=1, ge=0, le=16)
    concurrency: int = Field(default=20, ge=1, le=1000)
    per_domain_concurrency: int = Field(default=3, ge=1, le=100)
    connect_timeout: Seconds = 30.0
    command_timeout: Seconds = 120.0
    retry_schedule: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: list(_RETRY_SCHEDULE), min_length=1
    )
    retry_jitter: float = Field(default=0.1, ge=0, lt=1)
    max_age: Seconds = 5 * 86400.0
    # How long a claim on a job holds unless renewed. The worker renews it every third of this
    # while an attempt runs, so it need not outlast connect_timeout plus the command_timeouts
    # (no check ties them): it is how long a dead node's jobs wait for another.
    lease: Seconds = 600.0
    poll_interval: Seconds = 1.0

    @field_validator("smarthost", mode="before")
    @classmethod
    def _smarthost(cls, value: Any) -> ListenAddress | None:
        return None if value in (None, "") else _parse_listen(_with_port(str(value), 25))

    @model_validator(mode="after")
    def _complete(self) -> DeliverySettings:
        if self.mode == "smarthost" and self.smarthost is None:
            raise ValueError('mode smarthost needs [delivery] smarthost = "host:port"')
        if self.password_file is not None and not self.password_file.is_file():
            raise ValueError(f"password_file {self.password_file} is not a readable file")
        if (self.password or self.password_file) and not self.username:
            raise ValueError("a smarthost password needs a username")
        return self

    def smarthost_password(self) -> str | None:
        """The AUTH password, read from password_file when that is how it is given."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return self.password


# An ASCII addr-spec without display name or quoting: the notices' From must be a plain mailbox.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = rf"^{_ATOM}(\.{_ATOM})*@{_LABEL}(\.{_LABEL})*$"
# Header text that an operator writes: printable, so that it can never fold or split a header.
_HEADER_TEXT = r"^[^\x00-\x1f\x7f\u2028\u2029]*$"


_Prefix = Annotated[str, Field(max_length=60, pattern=_HEADER_TEXT)]
_SUBJECT_PREFIXES: dict[Language, str] = {
    "en": "Auto: NOT FILED - ",
    "es": "Auto: NO PRESENTADO - ",
}

# One prefix for every language, or a table of them. The discriminator validates a value as
# one or the other, so that an error names only the problem with what was given.
_PrefixSetting = Annotated[
    Annotated[_Prefix, Tag("plain")] | Annotated[dict[Language, _Prefix], Tag("per-language")],
    Discriminator(lambda value: "per-language" if isinstance(value, Mapping) else "plain"),
]


class NoticeSettings(_Model):
    # The notices' From. None means no-reply@<server.hostname>; RFC 3834 §5.1 asks for an
    # address whose replies do no harm, so it should be a mailbox that nobody reads.
    from_address: str | None = Field(default=None, pattern=_PLAIN_ADDRESS, max_length=254)
    from_name: str = Field(
        default="eService filing notices (no-reply)",
        min_length=1,
        max_length=80,
        pattern=_HEADER_TEXT,
    )
    # RFC 3834 §3.1.5 suggests the "Auto:" prefix so that people and filters see a reply.
    # One value, or one per language ({en = "...", es = "..."}); the subject is in the first
    # of an office's languages, and every office language needs a prefix (see GatewaySettings).
    subject_prefix: _PrefixSetting = Field(default_factory=lambda: dict(_SUBJECT_PREFIXES))
    # How much of the original Subject is quoted in the notice's Subject and body.
    subject_max_chars: int = Field(default=150, ge=20, le=400)
    dkim_selector: str = Field(default="gateway", max_length=63, pattern=_DNS_NAME)
    # None: the domain of the From address (DMARC alignment needs the two to match).
    dkim_domain: str | None = Field(default=None, max_length=253, pattern=_DNS_NAME)
    # PEM RSA private key; None: one is generated under storage.state_dir/dkim on first start.
    dkim_key_file: Path | None = None
    # A directory of template sets to use instead of the built-in templates/.
    templates_dir: Path | None = None

    def subject_prefix_in(self, lang: Language) -> str:
        """The Subject prefix for a notice whose first language is `lang`.

        Raises:
            KeyError: no prefix for `lang` (load_settings() refuses such a configuration).
        """
        prefix = self.subject_prefix
        return prefix if isinstance(prefix, str) else prefix[lang]

    @field_validator("dkim_key_file")
    @classmethod
    def _key_readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path} is not a readable file")
        return path

    @field_validator("templates_dir")
    @classmethod
    def _templates_present(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_dir():
            raise ValueError(f"{path} is not a directory")
        return path

    @field_validator("dkim_domain")
    @classmethod
    def _aligned(cls, domain: str | None, info: ValidationInfo) -> str | None:
        # DMARC (RFC 7489 §3.1.1): the signature only helps if d= is the From domain or a
        # parent of it.
        sender = info.data.get("from_address")
        if domain is None or not sender:
            return domain
        from_domain = sender.rpartition("@")[2].lower()
        if from_domain != domain.lower() and not from_domain.endswith("." + domain.lower()):
            raise ValueError(f"{domain!r} does not align with the from_address domain")
        return domain


class PostmasterSettings(_Model):
    """`[postmaster]`: what becomes of mail to postmaster@ a served domain (RFC 5321 §4.5.1)."""

    # People who read it: each message is relayed to them, unchanged below our Received line.
    # Empty: it is only kept in the store (`gateway postmaster list`).
    forward_to: list[Annotated[str, Field(pattern=_PLAIN_ADDRESS, max_length=254)]] = Field(
        default_factory=list
    )


# An absolute http(s) URL in printable ASCII: it goes into SMTP replies (7-bit, RFC 5321) and
# notices as is, with the reference appended.
_PUBLIC_URL = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$"


class LookupSettings(_Model):
    """`[lookup]`: the public receipt page, where a sender looks up what became of a message."""

    # Its own HTTP listener, apart from [metrics] (which is the operator's); "" turns it off.
    listen: ListenAddress | None = None
    # Where senders reach the page, ending where the reference goes: replies after DATA,
    # refusals naming a reference, and notices then carry <public_url><reference>. Empty: they
    # carry the reference alone (the page may still be served, e.g. behind a proxy).
    public_url: str | None = Field(default=None, max_length=120, pattern=_PUBLIC_URL)
    # Lookups per client address: `burst` at once, then `per_minute` (a token bucket), so that
    # nobody can walk the reference space; past it, 429 with Retry-After.
    per_minute: int = Field(default=30, ge=1, le=6000)
    burst: int = Field(default=10, ge=1, le=1000)
    # Lookups per second from all clients together: the page shares a process (and, with one
    # worker, the event loop) with SMTP, and many addresses must not starve it of its CPU.
    # bench/receipt.py measured 50 a second costing one process's SMTP side about 10 %.
    total_per_second: int = Field(default=50, ge=1, le=100_000)
    # Days after arrival a receipt can be looked up; 0: as long as the record is kept.
    max_age_days: int = Field(default=0, ge=0)
    # Show the SHA-256 of the message as received, for a firm to match against its sent copy.
    show_sha256: bool = True
    # Reverse proxies in front of the page (the agency's TLS proxy): from these peers the
    # client is read from X-Forwarded-For, for the per-client limit and the audit event.
    # Empty (the default): the header is ignored, since any client could write it.
    proxy_from: list[IPv4Network | IPv6Network] = Field(default_factory=list)

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> ListenAddress | None:
        return None if value in (None, "") else _parse_listen(value)

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, value: Any) -> Any:
        return None if value == "" else value

    def receipt_url(self, reference: str) -> str | None:
        """Where the receipt of `reference` is published, or None when no public_url is set."""
        return None if self.public_url is None else f"{self.public_url}{reference}"
