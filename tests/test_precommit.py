"""pre-commit runs on a host that cannot reach GitHub (issue 10): every hook is local.

The hooks are programs the dev extra installs (pre-commit-hooks' console scripts, ruff,
mypy), so `pre-commit run` needs no network. The run itself needs pre-commit, which the test
extra does not install: without it that test is skipped, and the config check still runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".pre-commit-config.yaml"
# The hygiene hooks that once came from github.com/pre-commit/pre-commit-hooks.
HYGIENE = (
    "trailing-whitespace-fixer",
    "end-of-file-fixer",
    "check-toml",
    "check-yaml",
    "check-merge-conflict",
    "check-added-large-files",
)


def config_values(key: str) -> list[str]:
    """Every value of `key` in the config, read line by line (the test extra has no YAML
    parser, and the file keeps one key per line)."""
    pattern = re.compile(rf"^\s*(?:-\s+)?{key}:\s*(\S.*?)\s*$")
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    return [found[1] for line in lines if (found := pattern.match(line))]


def test_every_hook_is_local_and_runs_an_installed_program() -> None:
    assert config_values("repo") == ["local"]
    ids = config_values("id")
    assert config_values("language") == ["system"] * len(ids)
    entries = {entry.split()[0] for entry in config_values("entry")}
    assert entries == {*HYGIENE, "ruff", "mypy"}


def test_pre_commit_run_all_files_passes(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent  # the venv's scripts: the hooks' programs are there
    pre_commit = shutil.which("pre-commit", path=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    if pre_commit is None:
        pytest.skip("pre-commit is not installed (it comes with the dev extra)")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: pre-commit runs on the files git tracks")
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PRE_COMMIT_HOME": str(tmp_path / "cache"),
        # mypy runs on its own in CI and in the checks before each commit; keep this cheap.
        "SKIP": "mypy",
    }
    run = subprocess.run(
        [pre_commit, "run", "--all-files", "--color", "never"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Failed" not in run.stdout
