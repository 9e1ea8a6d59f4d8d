"""The import contracts in pyproject.toml hold, and a broken one fails the run.

Both tests run import-linter's own command line in a real process, as a developer would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first, so that a copied package is the one analysed, not the installed one.
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(project / "pyproject.toml")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_imports_follow_the_layers_contract() -> None:
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def copy_project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "gateway", tmp_path / "gateway", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_an_import_against_the_direction_breaks_the_contract(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    # The pure address parser reaching up into the SMTP handler: the kind of shortcut the
    # contract exists to stop.
    addresses = project / "gateway" / "mail" / "addresses.py"
    addresses.write_text(
        addresses.read_text(encoding="utf-8") + "\nimport gateway.smtp.handler\n",
        encoding="utf-8",
    )
    run = lint_imports(project)
    assert run.returncode == 1
    assert "gateway.mail.addresses -> gateway.smtp.handler" in run.stdout


def test_a_new_top_level_module_must_be_given_a_layer(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    (project / "gateway" / "helpers.py").write_text('"""Unplaced."""\n', encoding="utf-8")
    run = lint_imports(project)
    assert run.returncode == 1
    assert "gateway.helpers" in run.stdout
