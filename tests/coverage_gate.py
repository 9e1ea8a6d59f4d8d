"""A pytest plugin: the run fails unless each package in `coverage_complete` is fully covered.

coverage's own `fail_under` (pyproject.toml, [tool.coverage.report]) holds the whole package
to a floor; this holds the pure packages to 100 % branch coverage, each on its own, so a gap
in one cannot hide behind a surplus elsewhere. A directory is named, not its modules, so a
module added to gateway/policy/ is held to it from its first commit.

Runs only when pytest-cov measures (it does by default, see addopts; `--no-cov` turns both
gates off for a quick run of a few tests).
"""

from __future__ import annotations

import io
from collections.abc import Generator
from pathlib import Path

import pytest
from coverage import Coverage
from coverage.exceptions import NoDataError

__all__ = ["pytest_addoption", "pytest_runtestloop"]

_INI = "coverage_complete"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(_INI, "directories that must have 100% branch coverage", type="linelist")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    # tryfirst makes this the outermost wrapper: pytest-cov has stopped measuring and saved
    # its data by the time the code after the yield runs.
    result = yield
    coverage = _measured(session.config)
    if coverage is None or session.config.option.collectonly:
        return result
    for directory in session.config.getini(_INI):
        shortfall = _shortfall(coverage, session.config.rootpath / directory)
        if shortfall:
            session.testsfailed += 1
            _report(session.config, f"{directory} must have 100% branch coverage:\n{shortfall}")
    return result


def _measured(config: pytest.Config) -> Coverage | None:
    """The Coverage object pytest-cov measured with; None when coverage is off."""
    plugin = config.pluginmanager.getplugin("_cov")
    controller = getattr(plugin, "cov_controller", None)
    cov = getattr(controller, "cov", None)
    return cov if isinstance(cov, Coverage) else None


def _shortfall(coverage: Coverage, directory: Path) -> str:
    """The report of `directory`'s files that are not fully covered; "" when all are."""
    out = io.StringIO()
    try:
        total = coverage.report(
            include=[str(directory / "*")],
            show_missing=True,
            skip_covered=True,
            ignore_errors=True,
            file=out,
        )
    except NoDataError:
        # Nothing measured there at all: a misspelt directory must not pass for a covered one.
        return f"no measured files under {directory}\n"
    return "" if total >= 100.0 else out.getvalue()


def _report(config: pytest.Config, message: str) -> None:
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write(f"\nERROR: {message}\n", red=True, bold=True)
