"""`gateway init`: a starting configuration, a state directory and the DNS records to publish.

The config written is the built-in one with the operator's domain, office name, paths and
endpoints put in, checked by the same validation `serve` applies before it replaces nothing.
Must not start the gateway or touch an existing config file unless told to (--force).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from gateway.config import GatewaySettings, default_config_path, load_settings
from gateway.durable import write_durably
from gateway.errors import ConfigError
from gateway.notices import dkim
from gateway.notices.context import NoticeContext

__all__ = ["InitRequest", "run_init", "starting_config"]

# The founding case's names in the built-in config, replaced by the operator's own.
_FOUNDING_DOMAIN = "occ-chicago.example"
_FOUNDING_OFFICE = "ice-occ-chicago"
# The state directory holds the store, raw evidence and the DKIM key: no access for others.
_STATE_MODE = 0o750
# The config holds no secret (a password in it is refused), so the service user may read it.
_CONFIG_MODE = 0o644


@dataclass(frozen=True, slots=True)
class InitRequest:
    """What `gateway init` was asked to write; None keeps the built-in value."""

    config: Path
    state_dir: Path
    domain: str | None = None
    office: str | None = None
    hostname: str | None = None
    listen: str | None = None
    metrics_listen: str | None = None
    log_format: str | None = None
    make_key: bool = True
    force: bool = False


def starting_config(builtin: str, request: InitRequest, *, written_at: datetime) -> str:
    """The built-in config text with the request's values put in; comments are kept."""
    # The built-in file's opening describes the founding case, not this install: keep only
    # its note on environment overrides onwards.
    text = builtin[builtin.find("# Every key") :] if "# Every key" in builtin else builtin
    if request.domain is not None:
        text = text.replace(_FOUNDING_DOMAIN, request.domain)
    if request.office is not None:
        text = _set_key(text, "offices", "name", request.office)
    state = request.state_dir
    edits = [
        ("server", "listen", [request.listen] if request.listen else None),
        ("server", "hostname", request.hostname),
        ("storage", "state_dir", str(state)),
        ("delivery", "outbox_dir", str(state / "notices")),
        ("metrics", "listen", request.metrics_listen),
        ("audit", "format", request.log_format),
    ]
    for section, key, value in edits:
        if value is not None:
            text = _set_key(text, section, key, value)
    header = (
        f"# Written by `gateway init` on {written_at:%Y-%m-%d} from the built-in configuration.\n"
        "# Before going live, edit the [[offices]] entry (addresses, time zone, phase dates,\n"
        "# portal, contact, paper service), then run `gateway check-config`.\n#\n"
    )
    return header + text


def _set_key(text: str, section: str, key: str, value: str | list[str]) -> str:
    """Replace the first `key = ...` line after the section's header with `value`.

    Raises:
        ValueError: the built-in config has no such key in that section (a packaging bug).
    """
    header = re.search(rf"^\[\[?{re.escape(section)}\]\]?$", text, re.M)
    if header is None:
        raise ValueError(f"the built-in config has no [{section}]")
    line = re.compile(rf"^{re.escape(key)} = .*$", re.M)
    found = line.search(text, header.end())
    if found is None:
        raise ValueError(f"the built-in config has no {section}.{key}")
    return f"{text[: found.start()]}{key} = {_toml(value)}{text[found.end() :]}"


def _toml(value: str | list[str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def run_init(request: InitRequest, *, now: datetime, out: TextIO, err: TextIO) -> int:
    """Write the config and the state directory, then print the DNS records; exit status."""
    if request.config.exists() and not request.force:
        print(f"gateway: {request.config} exists; keep it, or give --force to replace it", file=err)
        return 1
    text = starting_config(
        default_config_path().read_text(encoding="utf-8"), request, written_at=now
    )
    try:
        settings = _checked(request.config, text)
        _make_state_dir(request.state_dir)
        notices = NoticeContext.from_settings(settings)
        key = dkim.ensure_key(notices)[0] if request.make_key else None
        write_durably(request.config, text.encode("utf-8"), mode=_CONFIG_MODE)
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=err)
        return 2
    except OSError as exc:
        print(f"gateway: cannot write {exc.filename}: {exc.strerror or exc}", file=err)
        return 1
    out.write(f"; wrote {request.config}; state directory {request.state_dir}\n")
    _print_records(settings, key, out)
    return 0


def _checked(path: Path, text: str) -> GatewaySettings:
    """The settings the text makes, checked as `serve` would, from a draft beside `path`.

    Raises:
        ConfigError: an option's value does not make a valid config; nothing is written.
        OSError: the draft or its directory cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.draft")
    draft.write_text(text, encoding="utf-8")
    try:
        # No environment: the file must stand on its own, whatever this shell exports.
        settings = load_settings(draft, {})
    finally:
        draft.unlink()
    return settings


def _make_state_dir(state_dir: Path) -> None:
    for directory in (state_dir, state_dir / "notices"):
        directory.mkdir(mode=_STATE_MODE, parents=True, exist_ok=True)
        os.chmod(directory, _STATE_MODE)  # mkdir's mode is cut by the umask; make it exact


def _print_records(settings: GatewaySettings, key: dkim.DkimKey | None, out: TextIO) -> None:
    host = settings.server.hostname
    out.write("; DNS records to publish (zone-file lines):\n")
    for domain in sorted(settings.address_book.served_domains):
        out.write(f"{domain}. IN MX 10 {host}.\n")
    if key is None:
        out.write(
            "; DKIM: the gateway makes its key on first start; `gateway dkim-keygen` prints"
            " its TXT record\n"
        )
    else:
        out.write(f"{dkim.zone_record(key)}\n")
    sender = NoticeContext.from_settings(settings).from_address.rpartition("@")[2]
    # Notices go out with MAIL FROM:<>, so receivers check SPF on the HELO name (RFC 7208
    # §2.3); DMARC then aligns the From domain through the DKIM signature.
    out.write(
        "; SPF for the notices (HELO name and From domain); through a smarthost,"
        " name the relay's addresses instead of a:\n"
    )
    out.write(f'{host}. IN TXT "v=spf1 a -all"\n')
    out.write(f'{sender}. IN TXT "v=spf1 a:{host} -all"\n')
