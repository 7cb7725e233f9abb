"""swipeloop: the shared kernel (contracts, settings, broker and ClickHouse clients, CLI)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: migrations and SQL live under ROOT / "sql"."""
