"""Typed settings: the TOML file, environment overrides and every validation.

Settings are read once, by `load_settings()`, and passed to the objects that need them.
Nothing here opens sockets or starts tasks; the only I/O is reading the file and secrets.
The package is split by concept (values, sections, offices, settings); import from here.
"""

from __future__ import annotations

from gateway.config.console import ConsoleSettings
from gateway.config.offices import Lifecycle, OfficeSettings, OfficeTexts
from gateway.config.sections import (
    AuditSettings,
    DeliverySettings,
    DnsSettings,
    LimitSettings,
    LookupSettings,
    MetricsSettings,
    NoticeSettings,
    PostmasterSettings,
    SenderAuthSettings,
    ServerSettings,
)
from gateway.config.settings import GatewaySettings, default_config_path, load_settings
from gateway.config.storage import StorageSettings
from gateway.config.values import ENV_PREFIX, Language, ListenAddress, ResponseMode

__all__ = [
    "ENV_PREFIX",
    "AuditSettings",
    "ConsoleSettings",
    "DeliverySettings",
    "DnsSettings",
    "GatewaySettings",
    "Language",
    "Lifecycle",
    "LimitSettings",
    "ListenAddress",
    "LookupSettings",
    "MetricsSettings",
    "NoticeSettings",
    "OfficeSettings",
    "OfficeTexts",
    "PostmasterSettings",
    "ResponseMode",
    "SenderAuthSettings",
    "ServerSettings",
    "StorageSettings",
    "default_config_path",
    "load_settings",
]
