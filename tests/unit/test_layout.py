"""The layout stays true: every import runs down the floors, never up or sideways."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each package and its floor: a module may import its own package and any lower floor.
# api and dataflows stand side by side and know nothing of each other.
FLOORS = {
    "swipeloop": 0,  # the kernel: contracts, settings, clients, migrations, metrics, broker
    "models": 1,  # pure functions and data structures
    "training": 2,  # the nightly job
    "dataflows": 3,
    "api": 3,
    "sim": 4,  # evaluation tools that drive the API
    "cli": 5,  # the command and the embedded one-process stack
}
# models/ is pure: besides the kernel, only these third-party libraries.
PURE = {"numpy", "pyarrow", "scipy", "msgspec", "xxhash", "_typeshed"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level name) of every import in a file, lazy ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str) -> list[str]:
    floor = FLOORS[package]
    wrong: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        where = path.relative_to(ROOT)
        for line, name in imports(path):
            if name in FLOORS and name != package and FLOORS[name] >= floor:
                wrong.append(f"{where}:{line} imports {name} (floor {FLOORS[name]} >= {floor})")
    return wrong


def test_every_import_runs_down_the_floors() -> None:
    wrong = [v for package in FLOORS for v in violations(package)]
    assert not wrong, "upward or sideways imports:\n" + "\n".join(wrong)


def test_models_are_pure() -> None:
    import sys

    allowed = PURE | {"swipeloop", "models"} | set(sys.stdlib_module_names)
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "models").rglob("*.py"))
        for line, name in imports(path)
        if name not in allowed
    ]
    assert not wrong, "models/ imports beyond the kernel and numpy-level libraries:\n" + "\n".join(
        wrong
    )


def test_every_package_is_installed_and_in_the_image() -> None:
    """A package left out of pyproject's list or the Dockerfile imports here and fails there."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(found) == sorted(f"{package}*" for package in FLOORS)
    assert sorted(project["tool"]["mypy"]["packages"]) == sorted([*FLOORS, "tests", "bench"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    missing = [p for p in FLOORS if f"COPY {p}/ {p}/" not in dockerfile]
    assert not missing, f"the Dockerfile does not copy {missing}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from api.app import create_app\n")
    assert imports(module) == [(2, "api")]
