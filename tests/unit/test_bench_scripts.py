import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted(p.stem for p in (Path(__file__).parents[2] / "bench").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_imports(name: str) -> None:
    """A benchmark is not run by the suite; it must at least still fit the code it measures."""
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main)
