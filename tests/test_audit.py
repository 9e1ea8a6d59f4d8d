"""The audit log is an operator contract: every event the code logs is declared in audit/log.py."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import structlog

import gateway
from gateway.audit.log import EVENTS, configure_logging
from gateway.config import AuditSettings

SOURCES = sorted(Path(gateway.__file__).parent.rglob("*.py"))
# Bound per connection or added by structlog itself.
CONTEXT_KEYS = {"session_id", "peer_ip", "exc_info"}


def logged_events() -> list[tuple[str, str, set[str]]]:
    """(file, event name, keys) of every `log.<level>("event", key=...)` call in gateway/."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                keys = {k.arg for k in node.keywords if k.arg is not None}
                found.append((path.name, str(node.args[0].value), keys))
    return found


def test_every_logged_event_is_declared_with_its_keys() -> None:
    events = logged_events()
    assert len(events) > 20  # the walk really found the calls
    for source, name, keys in events:
        assert name in EVENTS, f"{source}: {name} is not declared in audit.EVENTS"
        undeclared = keys - set(EVENTS[name]) - CONTEXT_KEYS
        assert not undeclared, f"{source}: {name} logs undeclared keys {undeclared}"


def test_event_names_are_dotted_area_and_past_tense() -> None:
    for name in EVENTS:
        area, *rest = name.split(".")
        assert rest, name
        assert area in {
            "gateway",
            "smtp",
            "policy",
            "notice",
            "outbox",
            "delivery",
            "store",
            "dkim",
            "receipt",  # the public receipt page (http/lookup.py)
            "console",  # the operator console (http/console.py)
        }


def test_json_lines_carry_a_utc_timestamp_level_and_event() -> None:
    out = io.StringIO()
    configure_logging(AuditSettings(format="json"), stream=out)
    try:
        structlog.get_logger().info(
            "smtp.reply.sent", reference="20170913-ABCDEFGHJK", reply_code=550
        )
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert line["event"] == "smtp.reply.sent"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert line["reference"] == "20170913-ABCDEFGHJK"
