"""Installing from a checkout: ``pip wheel .`` builds a wheel holding what a service needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.server
def test_the_checkout_builds_a_complete_wheel(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("gql_audit-*-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "gql_audit/py.typed",
        "gql_audit/report.py",
        "gql_audit/migrations/0001_initial.py",
        "gql_audit/management/commands/gql_audit_report.py",
        "gql_audit/management/commands/gql_audit_purge.py",
    ):
        assert needed in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    # Only the package: not the example service, the tests or the benchmarks.
    assert {name.split("/")[0] for name in names} == {"gql_audit", wheel.name.split("-py3")[0] + ".dist-info"}
