"""The aiosmtpd internals gateway/smtp/server.py overrides are still there, as checked.

GatewaySMTP overrides methods aiosmtpd does not promise to keep (issue 10, item 5). The
dependency is held to the minor series they were checked against; these tests fail first when
an upgrade within it, or a loosened pin, moves one of them. What each override does is tested
through the server itself (test_smtpserver.py compares our _getaddr with aiosmtpd's).
"""

from __future__ import annotations

import inspect
from importlib.metadata import requires, version

import pytest
from aiosmtpd.smtp import SMTP
from packaging.requirements import Requirement
from packaging.version import Version

from gateway.smtp.server import GatewaySMTP

# The series the overrides were read against (pyproject.toml says why).
CHECKED_SERIES = "1.4"

# Name -> the parameters aiosmtpd's own method takes; ours must take the same ones.
OVERRIDDEN = {
    "_getaddr": ["self", "arg"],
    "_timeout_cb": ["self"],
    "_handle_client": ["self"],
    # These two are the documented way to supply our Session and Envelope (aiosmtpd's
    # smtp.rst: "a method subclasses can override"), underscore notwithstanding.
    "_create_session": ["self"],
    "_create_envelope": ["self"],
}


def aiosmtpd_requirement() -> Requirement:
    (line,) = (r for r in requires("eservice-gateway") or [] if r.startswith("aiosmtpd"))
    return Requirement(line)


def test_the_pin_admits_only_the_series_the_overrides_were_checked_against() -> None:
    specifier = aiosmtpd_requirement().specifier
    assert specifier.contains("1.4.6")
    assert not specifier.contains("1.5.0")
    assert not specifier.contains("1.4.5")


def test_the_installed_aiosmtpd_is_of_the_checked_series() -> None:
    installed = Version(version("aiosmtpd"))
    assert f"{installed.major}.{installed.minor}" == CHECKED_SERIES


@pytest.mark.parametrize(("name", "parameters"), OVERRIDDEN.items())
def test_each_overridden_internal_exists_upstream_with_the_same_parameters(
    name: str, parameters: list[str]
) -> None:
    upstream = getattr(SMTP, name)
    ours = getattr(GatewaySMTP, name)
    assert ours is not upstream, f"GatewaySMTP no longer overrides {name}"
    assert list(inspect.signature(upstream).parameters) == parameters
    assert list(inspect.signature(ours).parameters) == parameters
    assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(upstream)


def test_the_reply_hook_the_enhanced_codes_ride_on_is_a_coroutine_taking_a_status() -> None:
    # Enhanced codes on aiosmtpd's own reply texts are added in push(), its public method for
    # "subclasses and handlers" to send statuses: no reply text of aiosmtpd's is patched.
    assert inspect.iscoroutinefunction(SMTP.push)
    assert list(inspect.signature(SMTP.push).parameters) == ["self", "status"]
