"""`[console]`: the private operator console, read-only, for records officers and operators.

Its checks are the ones an agency's security review asks first: a listener needs a way to
know who is asking (a users file, or a reverse proxy that authenticates), and passwords never
cross a network in clear (basic auth off loopback needs the console's own TLS).
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from gateway.config.values import ListenAddress, _Model, _parse_listen

__all__ = ["ConsoleSettings"]

# An HTTP header name (RFC 9110 token), e.g. X-Remote-User.
_HEADER = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


class ConsoleSettings(_Model):
    # Its own HTTP listener, apart from the receipt page and /metrics; "" turns it off.
    listen: ListenAddress | None = None
    # The console's own certificate and key (PEM); both or neither.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # HTTP basic users, one "name:scrypt$..." line each (`gateway console adduser NAME`).
    users_file: Path | None = None
    # A reverse proxy that authenticates (the agency's SSO) and names the user in
    # `user_header`; the header is honoured only from these peers, ignored from any other.
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    user_header: str | None = Field(default=None, pattern=_HEADER, max_length=64)
    # Attempts per page; pages are walked by keyset (arrival time, reference), never OFFSET.
    page_size: int = Field(default=100, ge=10, le=1000)

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> ListenAddress | None:
        return None if value in (None, "") else _parse_listen(value)

    @field_validator("tls_cert", "tls_key", "users_file", "user_header", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _safe(self) -> ConsoleSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("console.tls_cert and console.tls_key go together: give both")
        if (self.user_header is None) != (not self.trusted_proxies):
            raise ValueError(
                "console.user_header and console.trusted_proxies go together: the header is"
                " honoured only from the proxies named"
            )
        if self.listen is None:
            return self
        if self.users_file is None and self.user_header is None:
            raise ValueError(
                f"console.listen = {self.listen}: no authentication is configured; set"
                " console.users_file (gateway console adduser NAME) or console.trusted_proxies"
                " with console.user_header"
            )
        if self.users_file is not None and self.tls_cert is None and not _is_loopback(self.listen):
            raise ValueError(
                f"console.listen = {self.listen} is not loopback and has no TLS: basic auth"
                " would send passwords in clear; set console.tls_cert and console.tls_key, or"
                " listen on 127.0.0.1 behind a TLS proxy"
            )
        return self


def _is_loopback(listen: ListenAddress) -> bool:
    if listen.host == "localhost":
        return True
    try:
        return ip_address(listen.host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
