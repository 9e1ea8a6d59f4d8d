"""The whole configuration (GatewaySettings) and how it is read: file, environment, secrets.

Settings are read once, by `load_settings()`, and passed to the objects that need them.
Nothing here opens sockets or starts tasks; the only I/O is reading the file and secrets.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    model_validator,
)

from gateway.config.console import ConsoleSettings
from gateway.config.offices import OfficeSettings
from gateway.config.problems import describe
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
from gateway.config.storage import StorageSettings
from gateway.config.values import ENV_PREFIX, _Model
from gateway.errors import ConfigError
from gateway.mail.addresses import AddressBook

__all__ = ["GatewaySettings", "default_config_path", "load_settings"]


class GatewaySettings(_Model):
    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    sender_auth: SenderAuthSettings = Field(default_factory=SenderAuthSettings)
    notices: NoticeSettings = Field(default_factory=NoticeSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    postmaster: PostmasterSettings = Field(default_factory=PostmasterSettings)
    lookup: LookupSettings = Field(default_factory=LookupSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    offices: list[OfficeSettings] = Field(min_length=1)

    @cached_property
    def address_book(self) -> AddressBook:
        return AddressBook.build((o.name, a) for o in self.offices for a in o.addresses)

    def office(self, name: str) -> OfficeSettings:
        return next(o for o in self.offices if o.name == name)

    @model_validator(mode="after")
    def _offices_consistent(self) -> GatewaySettings:
        names = [o.name for o in self.offices]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"offices: name {duplicates[0]!r} is used twice")
        try:
            self.address_book  # noqa: B018 -- building it checks addresses across offices
        except ValueError as exc:
            raise ValueError(f"offices: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _forward_leaves(self) -> GatewaySettings:
        # Forwarding to a domain we serve would bring the copy back to us: a mail loop.
        served = self.address_book.served_domains
        for address in self.postmaster.forward_to:
            if address.rpartition("@")[2].lower() in served:
                raise ValueError(
                    f"postmaster.forward_to: {address} is at a domain this gateway serves"
                    " (the forwarded copy would come back: a loop)"
                )
        return self

    @model_validator(mode="after")
    def _subject_prefix_per_language(self) -> GatewaySettings:
        # The notices' Subject is in an office's first language; previews may put any of its
        # languages first, so each needs a prefix.
        prefix = self.notices.subject_prefix
        for office in self.offices:
            languages = ", ".join(office.languages)
            if isinstance(prefix, str) and len(office.languages) > 1:
                raise ValueError(
                    f"notices.subject_prefix: office {office.name!r} sends notices in"
                    f' {languages}; give one prefix per language, as subject_prefix = {{en = "...",'
                    ' es = "..."}'
                )
            missing = [] if isinstance(prefix, str) else set(office.languages) - set(prefix)
            if missing:
                raise ValueError(
                    f"notices.subject_prefix: no prefix in {min(missing)!r}, one of the"
                    f" languages of office {office.name!r} ({languages})"
                )
        return self

    @model_validator(mode="after")
    def _stall_after_polls(self) -> GatewaySettings:
        # The worker looks at the queue once per poll_interval; fewer than two intervals would
        # call a healthy worker stalled.
        if self.metrics.stall_after < 2 * self.delivery.poll_interval:
            raise ValueError(
                "metrics.stall_after must be at least twice delivery.poll_interval"
                f" ({self.delivery.poll_interval} s)"
            )
        return self


# ---------------------------------------------------------------------------------------------
# Loading


def default_config_path() -> Path:
    """The built-in configuration: packaged with the wheel, or config/ in a source checkout."""
    packaged = resources.files("gateway").joinpath("_data/config/gateway.toml")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "config" / "gateway.toml"


def load_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> GatewaySettings:
    """Read the TOML file (the built-in default when None), apply overrides, validate.

    Raises:
        ConfigError: with the dotted key and the problem, first of every problem found.
    """
    source = path or default_config_path()
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("", f"cannot read {source}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"{source} is not valid TOML: {exc}") from exc
    if "password" in data.get("delivery", {}):
        raise ConfigError(
            "delivery.password",
            "never put the password in the config file; use GATEWAY_DELIVERY__PASSWORD,"
            " GATEWAY_DELIVERY__PASSWORD_FILE or password_file",
        )
    if "password" in data.get("storage", {}):
        raise ConfigError(
            "storage.password",
            "never put the password in the config file; use GATEWAY_STORAGE__PASSWORD,"
            " GATEWAY_STORAGE__PASSWORD_FILE, or the libpq service or password file",
        )
    _apply_environment(data, os.environ if environ is None else environ)
    try:
        return GatewaySettings.model_validate(data)
    except ValidationError as exc:
        raise _all_problems(exc) from exc


def _all_problems(exc: ValidationError) -> ConfigError:
    (key, problem), *more = describe(exc, GatewaySettings)
    return ConfigError(key, problem, more=more)


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Overlay GATEWAY_<SECTION>__<KEY> variables; <KEY>_FILE reads the value from a file.

    Raises:
        ConfigError: a variable names no known setting, or its file cannot be read.
    """
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or "__" not in variable:
            continue
        section, _, key = variable.removeprefix(ENV_PREFIX).lower().partition("__")
        value = environ[variable]
        field = _section_field(section, key)
        if field is None and key.endswith("_file"):
            key = key.removesuffix("_file")
            field = _section_field(section, key)
            value = _read_secret(variable, value)
        if field is None:
            # Listed from the same table the lookup uses, so the hint cannot drift from it.
            sections = ", ".join(_environment_sections())
            raise ConfigError(variable, f"no such setting (sections: {sections})")
        if typing.get_origin(field) is list:
            data.setdefault(section, {})[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            data.setdefault(section, {})[key] = value


def _environment_sections() -> dict[str, type[BaseModel]]:
    """The sections a GATEWAY_<SECTION>__<KEY> variable may name, in the file's order.

    Read from GatewaySettings itself so that a new section is overridable, and named in the
    unknown-variable error, without a second list to keep in step. `offices` is a list of
    tables, which an environment variable cannot address.
    """
    return {
        name: field.annotation
        for name, field in GatewaySettings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }


def _section_field(section: str, key: str) -> Any | None:
    model = _environment_sections().get(section)
    if model is None or key not in model.model_fields:
        return None
    return model.model_fields[key].annotation


def _read_secret(variable: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path}: {exc.strerror or exc}") from exc
