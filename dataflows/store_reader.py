"""Reading a flow's recovery partitions from a child process, so that a running flow's own
process can ask where it is.

Bytewax writes its SQLite files through its own bundled SQLite. A second SQLite library in
the same process (Python's `sqlite3`) that opens and closes one of those files drops every
POSIX lock the process holds on it, Bytewax's included, and the next checkpoint can corrupt
the file ("database disk image is malformed": https://sqlite.org/howtocorrupt.html, 2.2.1
and 2.3). A child process has locks of its own, so it reads safely beside the writer.

`python -m dataflows.store_reader FILE...` prints one JSON line per file: null for a
partition being created right now, else [executions, committed epoch, offsets]."""

from __future__ import annotations

import contextlib
import json
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

Part = tuple[int, int | None, dict[str, int]]  # executions, committed epoch, source offsets


def read_parts(files: list[Path]) -> list[Part | None]:
    """Each file's part, read by a child process (None: a partition not yet created)."""
    if not files:
        return []
    done = subprocess.run(
        [sys.executable, "-m", "dataflows.store_reader", *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return [_part(json.loads(line)) for line in done.stdout.splitlines()]


def _part(found: Any) -> Part | None:
    return None if found is None else (found[0], found[1], found[2])


def read_part(file: Path) -> Part | None:
    """One partition's executions, committed epoch and snapshotted source offsets (in a
    process that does not run the flow)."""
    offsets = {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as db:
            # executions are numbered across the store, each recorded in one of its partitions
            executions = int(
                db.execute("SELECT COALESCE(MAX(ex_num) + 1, 0) FROM exs").fetchone()[0]
            )
            committed = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0]
            rows = db.execute(
                "SELECT state_key, ser_change FROM snaps AS s WHERE ser_change IS NOT NULL "
                "AND state_key LIKE '%:%' AND snap_epoch = (SELECT MAX(snap_epoch) FROM snaps "
                "WHERE step_id = s.step_id AND state_key = s.state_key)"
            ).fetchall()
    except sqlite3.OperationalError:  # a partition being created right now: not yet
        return None
    for key, blob in rows:
        value = pickle.loads(blob)  # (Bytewax pickles state; this store is our own)
        if isinstance(value, int):
            offsets[key] = value
    return executions, committed, offsets


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(json.dumps(read_part(Path(name))))
