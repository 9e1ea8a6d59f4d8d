"""Reloading on SIGHUP: what changed between the settings in force and those just read, and
which of the changes must wait for a restart.

`plan_reload()` is pure: two settings in, a `ReloadPlan` out. Reading the file, checking the
templates and swapping what serves new sessions are app.py's; this module does no I/O except
`templates_digest()`, which reads the template files a set of settings uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from gateway.config import GatewaySettings
from gateway.notices.render import templates_dir

__all__ = ["RESTART_ONLY", "ReloadPlan", "digest", "plan_reload", "templates_digest"]

# Settings a running process cannot take up: bound sockets, open files, the store, the
# delivery worker and its resolver, the metrics endpoint, the DKIM key loaded at start. A
# change to one of them is reported as needing a restart, and the value in force is kept.
RESTART_ONLY: tuple[str, ...] = (
    "server.listen",
    "server.tls_cert",
    "server.tls_key",
    "server.max_connections",
    "server.drain_timeout",
    "server.workers",
    "storage",
    "audit",
    "delivery",
    "dns",
    "metrics",
    "lookup",
    "notices.dkim_selector",
    "notices.dkim_domain",
    "notices.dkim_key_file",
)

# Never hashed: a digest of a file whose other contents are known would let a weak password
# be guessed offline.
_SECRETS: dict[str, Any] = {"delivery": {"password"}}


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does: the settings to serve new sessions with, and what changed."""

    settings: GatewaySettings  # the new settings, with the restart-only values still in force
    changed: tuple[str, ...]  # top-level sections whose values take effect now
    needs_restart: tuple[str, ...]  # dotted restart-only keys that differ, ignored until then
    digest_before: str
    digest_after: str

    @property
    def is_noop(self) -> bool:
        return not self.changed and not self.needs_restart


def plan_reload(old: GatewaySettings, new: GatewaySettings) -> ReloadPlan:
    """Compare the settings in force with those just read; the restart-only keys stay old."""
    effective = _keep_restart_only(old, new)
    before, after, read = _dump(old), _dump(effective), _dump(new)
    changed = tuple(section for section in after if after[section] != before[section])
    needs_restart = tuple(path for path in RESTART_ONLY if _at(read, path) != _at(before, path))
    return ReloadPlan(effective, changed, needs_restart, digest(old), digest(effective))


def digest(settings: GatewaySettings) -> str:
    """A short SHA-256 of the settings' values (secrets left out), to tell two configs apart."""
    canonical = json.dumps(_dump(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def templates_digest(settings: GatewaySettings) -> str:
    """A short SHA-256 of every template file the offices' template sets hold.

    Raises:
        OSError: a template directory cannot be read.
    """
    root = settings.notices.templates_dir or templates_dir()
    hashed = hashlib.sha256()
    for name in sorted({office.templates for office in settings.offices}):
        for path in sorted(p for p in (root / name).rglob("*") if p.is_file()):
            hashed.update(str(path.relative_to(root)).encode() + b"\0")
            hashed.update(path.read_bytes() + b"\0")
    return hashed.hexdigest()[:16]


def _keep_restart_only(old: GatewaySettings, new: GatewaySettings) -> GatewaySettings:
    """`new` with every RESTART_ONLY value taken from `old`.

    model_copy skips validation, which is sound here: `new` was validated whole, and the
    cross-section checks (stall_after against poll_interval) only pair restart-only values
    with each other."""
    sections: dict[str, Any] = {}
    for path in RESTART_ONLY:
        section, _, key = path.partition(".")
        if not key:
            sections[section] = getattr(old, section)
            continue
        current = sections.get(section, getattr(new, section))
        sections[section] = current.model_copy(update={key: getattr(getattr(old, section), key)})
    return new.model_copy(update=sections)


def _dump(settings: GatewaySettings) -> dict[str, Any]:
    dumped: dict[str, Any] = settings.model_dump(mode="json", exclude=_SECRETS)
    return dumped


def _at(dumped: dict[str, Any], path: str) -> Any:
    value: Any = dumped
    for part in path.split("."):
        value = value[part]
    return value
