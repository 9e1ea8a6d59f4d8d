"""Value types and checks shared by the settings sections: listen addresses, URLs, zones.

Pure: nothing here reads a file or the environment. The underscore names are the package's
own, shared by its modules; everything else imports the public names from `gateway.config`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, datetime
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

__all__ = ["ENV_PREFIX", "Boundary", "Language", "ListenAddress", "ResponseMode", "Seconds", "Url"]

ENV_PREFIX = "GATEWAY_"


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = rf"^{_LABEL}(\.{_LABEL})*$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _parse_listen(value: Any) -> ListenAddress:
    if isinstance(value, ListenAddress):
        return value
    text = str(value).strip()
    match = re.fullmatch(
        r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p6>\d+)|(?P<host>[^:\s]+):(?P<port>\d+)", text
    )
    if match is None:
        raise ValueError(f"{text!r} is not host:port (IPv6 as [addr]:port)")
    host = match["v6"] or match["host"]
    port = int(match["p6"] or match["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    _check_listen_host(host, text)
    return ListenAddress(host, port)


def _check_listen_host(host: str, text: str) -> None:
    # Caught here rather than by bind(), whose "Name or service not known" names no address.
    if re.fullmatch(r"[0-9.]+", host) or ":" in host:
        try:
            ip_address(host)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {host!r} is not an IP address") from exc
    elif not re.fullmatch(_DNS_NAME, host):
        raise ValueError(f"{text!r}: {host!r} is not an IP address or host name")


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc
    return name


def _check_url(url: str) -> str:
    if not re.fullmatch(r"https?://[\x21-\x7e]+", url):
        raise ValueError(f"{url!r} is not an ASCII http(s) URL")
    return url


Url = Annotated[str, AfterValidator(_check_url)]
Seconds = Annotated[float, Field(gt=0)]
# A phase boundary: a bare date (midnight in the office's zone), a local date-time in the
# office's zone, or a date-time with an explicit offset.
Boundary = date | datetime
# The languages the notice templates are written in.
Language = Literal["en", "es"]
_ENGLISH: list[Language] = ["en"]


class ResponseMode(enum.StrEnum):
    REJECT_AT_RCPT = "reject-at-rcpt"
    REJECT_AFTER_DATA = "reject-after-data"
    ACCEPT_AND_NOTIFY = "accept-and-notify"


_LOOPBACK: list[IPv4Network | IPv6Network] = [
    IPv4Network("127.0.0.0/8"),
    IPv6Network("::1/128"),
]
