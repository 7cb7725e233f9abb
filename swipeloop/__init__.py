"""swipeloop, the kernel every other package stands on: contracts, settings, topics, the Kafka
and ClickHouse clients, migrations, metrics, the embedded broker."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: migrations and SQL live under ROOT / "sql"."""
