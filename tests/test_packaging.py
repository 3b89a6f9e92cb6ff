"""The release: ``python -m build`` makes a wheel holding what a service needs, whose
metadata admits every supported Python and Django, and which installs in a fresh
virtual environment beside this run's Django, where the example service passes its checks."""

from __future__ import annotations

import email.message
import fcntl
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import django
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.index

#: pip's words when the package index cannot be reached.
OFFLINE = (
    "NewConnectionError",
    "Could not fetch URL",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


def run_or_skip_offline(args: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a command that installs from the package index; outside CI, no index is a skip."""
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    output = done.stdout + done.stderr
    if done.returncode != 0 and os.environ.get("CI") != "true" and any(word in output for word in OFFLINE):
        pytest.skip(f"needs the package index (pip could not reach it): {output.strip().splitlines()[-1]}")
    assert done.returncode == 0, output[-4000:]
    return done


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``python -m build`` makes of this checkout: built once a session, also
    when several pytest-xdist workers ask for it (they share the session's directory)."""
    shared = tmp_path_factory.getbasetemp().parent / "gql_audit-wheel"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = list(shared.glob("gql_audit-*-py3-none-any.whl"))
        if not built:
            out = shared / "build"
            run_or_skip_offline([sys.executable, "-m", "build", "--wheel", "--outdir", out, ROOT], timeout=600)
            (made,) = out.glob("gql_audit-*-py3-none-any.whl")
            built = [made.rename(shared / made.name)]
    return built[0]


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def test_the_wheel_holds_the_package_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "gql_audit/py.typed",
        "gql_audit/report.py",
        "gql_audit/migrations/0001_initial.py",
        "gql_audit/management/commands/gql_audit_report.py",
        "gql_audit/management/commands/gql_audit_purge.py",
    ):
        assert needed in names
    assert any(name.startswith("gql_audit/templates/") for name in names)
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    # Only the package: not the example service, the tests or the benchmarks.
    assert {name.split("/")[0] for name in names} == {"gql_audit", wheel.name.split("-py3")[0] + ".dist-info"}


def test_the_wheel_admits_every_supported_python_and_django(wheel):
    meta = metadata(wheel)
    import gql_audit

    assert meta["Version"] == gql_audit.__version__
    python = SpecifierSet(meta["Requires-Python"])
    assert all(version in python for version in ("3.11.0", "3.12.0", "3.13.0", "3.13.9"))
    requirements = {Requirement(r).name.lower(): Requirement(r) for r in meta.get_all("Requires-Dist")}
    supported = ("5.2.13", "5.2.99", "6.0", "6.0.99", "6.1", "6.1.99")
    assert all(version in requirements["django"].specifier for version in supported)
    assert "6.2" not in requirements["django"].specifier and "5.1.99" not in requirements["django"].specifier
    cockroach = [r for r in meta.get_all("Requires-Dist") if r.startswith("django-cockroachdb")]
    (spec,) = {Requirement(r).specifier for r in cockroach}
    assert all(version in spec for version in ("5.2.2", "6.0.1", "6.1.1"))
    assert all(version in requirements["graphql-core"].specifier for version in ("3.2.14", "3.3.2"))
    classifiers = set(meta.get_all("Classifier"))
    for series in ("5.2", "6.0", "6.1"):
        assert f"Framework :: Django :: {series}" in classifiers
    for series in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {series}" in classifiers


@pytest.mark.venv
def test_the_wheel_installs_beside_this_django_and_the_example_passes_its_checks(wheel, tmp_path):
    """In a fresh virtual environment, from the package index: no checkout on the path."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GQL_AUDIT_", "PYTHON"))}
    pip_install = [python, "-m", "pip", "install", "--quiet", "--no-compile"]
    run_or_skip_offline(
        [*pip_install, f"{wheel}[example]", f"Django=={django.__version__}"],
        timeout=900,
        env=environ,
    )
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, env=environ)
    assert check.returncode == 0, check.stdout
    # The example service, copied away from the checkout, run on the installed wheel.
    example = shutil.copytree(ROOT / "example_service", tmp_path / "example_service")
    environ["EXAMPLE_SQLITE_PATH"] = str(tmp_path / "example.sqlite3")

    def manage(*args: str) -> str:
        done = subprocess.run(
            [python, "manage.py", *args], cwd=example, capture_output=True, text=True, timeout=300, env=environ
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    assert "System check identified no issues" in manage("check")
    manage("seed_demo", "--migrate", "--quiet")
    # gql_audit's migrations describe its models on this Django.
    assert manage("makemigrations", "--check", "--dry-run", "gql_audit").strip() == (
        "No changes detected in app 'gql_audit'"
    )
    probe = (
        "import json, django, gql_audit; from django.test import Client; "
        "body = Client(HTTP_HOST='localhost').post('/graphql/', json.dumps({'query': '{ serviceStatus { ok } }'}), "
        "content_type='application/json').json(); "
        "print(django.__version__, gql_audit.__file__, body)"
    )
    # The last line: the request's own log line comes first.
    version, location, body = manage("shell", "--verbosity", "0", "-c", probe).strip().splitlines()[-1].split(" ", 2)
    assert version == django.__version__
    assert Path(location).is_relative_to(env_dir) and not Path(location).is_relative_to(ROOT)
    assert body == "{'data': {'serviceStatus': {'ok': True}}}"
