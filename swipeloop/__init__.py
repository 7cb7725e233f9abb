"""swipeloop, the kernel every other package stands on: contracts, settings, topics, the Kafka
and ClickHouse clients, migrations, metrics, the embedded broker, and the SQL they run."""

from importlib.resources import files
from importlib.resources.abc import Traversable

SQL: Traversable = files(__name__) / "sql"
"""The package's SQL: migrations/, analysis/, training/, checks/. Package data, so an installed
wheel and a checkout find it the same way."""


def sql_files(directory: Traversable) -> list[Traversable]:
    """The `.sql` files of a folder of SQL, by name (none if there is no such folder)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
