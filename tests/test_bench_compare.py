"""bench/compare.py runs end to end on one small row and cleans up after itself.

A smoke test of the benchmark script, not a timed test: it asserts that a user running
`--quick --only ROW` gets the Markdown table row with a figure for bare aiosmtpd and for the
gateway and their ratio, that the script exits 0, and that its work directory is gone.
Postfix is left out (`--no-postfix`): the suite's network is loopback only, so it may not
download the package, and it may not create the system user Postfix's daemons need.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "compare.py"


def _table_row(output: str, label: str) -> list[str]:
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0] == label and cells[2] == "reused":
            return cells
    raise AssertionError(f"no table row {label!r} in:\n{output}")


def _number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


def test_quick_row_reports_bare_and_gateway_side_by_side(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = [sys.executable, str(SCRIPT), "--quick", "--no-postfix", "--only", "rcpt-10-reused"]
    result = subprocess.run(
        argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    _label, sessions, _, postfix, bare, gateway, _, gateway_bare = _table_row(
        result.stdout, "refused at RCPT"
    )
    assert sessions == "10"
    assert postfix.startswith("n/a")
    assert _number(bare) > 0
    assert _number(gateway) > 0
    assert abs(float(gateway_bare) - _number(gateway) / _number(bare)) < 0.02
    assert "--quick --no-postfix --only rcpt-10-reused" in result.stdout
    assert list(tmp_path.iterdir()) == []  # the work directory was removed
