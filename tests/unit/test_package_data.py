"""The SQL is package data: every file of sql/ is matched by pyproject's package-data
(or a wheel goes out without it), and a folder without migrations is an error, not a no-op."""

import glob
import tomllib
from pathlib import Path

import pytest

from swipeloop import SQL
from swipeloop.migrations import BadMigrations, load

ROOT = Path(__file__).resolve().parents[2]


def test_every_sql_file_is_package_data() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["swipeloop"]
    package = ROOT / "swipeloop"
    shipped = {f for p in patterns for f in glob.glob(p, root_dir=package, recursive=True)}
    present = {str(p.relative_to(package)) for p in (package / "sql").rglob("*") if p.is_file()}
    assert present, "no SQL under sql/"
    assert present <= shipped, f"left out of the wheel: {sorted(present - shipped)}"
    assert (SQL / "migrations" / "0001_events.sql").is_file()


def test_a_folder_without_migrations_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BadMigrations, match="no migration files"):
        load(tmp_path)
    with pytest.raises(BadMigrations, match="no migration files"):
        load(tmp_path / "missing")
    (tmp_path / "1_events.sql").write_text("SELECT 1")
    with pytest.raises(BadMigrations, match="NNNN_snake_name"):
        load(tmp_path)
