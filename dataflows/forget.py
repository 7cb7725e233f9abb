"""Erasure at the sinks: rows of erased users never land, and what landed before a sink knew
of an erasure is deleted once it does (`swipeloop.erasure`).

Each sink follows `erasures` before each insert. An insert that started before an erasure was
recorded may land after the API's delete; the sink learns of the erasure before its next
insert and deletes again (every table of user data, those filled by materialized views too),
so nothing of the user remains.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client

from swipeloop.clickhouse import with_retry
from swipeloop.erasure import Erased, delete_user

# A sink that starts deletes again for the users erased this recently: a run that crashed
# between landing an insert and learning of an erasure may have left their rows.
RECENT = timedelta(minutes=10)


class Forgetting:
    """One sink's view of the erasures."""

    def __init__(self, cluster: str = "") -> None:
        self.erased = Erased()
        self._started = False
        self._cluster = cluster  # deletes run on a cluster's local tables (swipeloop.cluster)

    def learn(self, client: Client) -> set[str]:
        """Ids to delete again: erased since the last call (at the first, recently)."""
        new = with_retry("read of erasures", lambda: self.erased.refresh(client))
        if not self._started:
            self._started = True
            since = datetime.now(UTC) - RECENT
            new = {user for user in new if self.erased.at[user] > since}
        return new

    def kept(self, users: list[str]) -> list[int] | None:
        """Positions of the rows to keep (None: all of them)."""
        gone = self.erased.users
        if not gone or gone.isdisjoint(users):
            return None
        return [i for i, user in enumerate(users) if user not in gone]

    def rows(self, columns: list[str], rows: list[list[Any]]) -> list[list[Any]]:
        """`rows` less those of erased users."""
        if "user_id" not in columns:
            return rows
        at = columns.index("user_id")
        keep = self.kept([r[at] for r in rows])
        return rows if keep is None else [rows[i] for i in keep]

    def arrow(self, data: Any) -> Any:
        """A pyarrow table less the rows of erased users."""
        if "user_id" not in data.column_names or not self.erased.users:
            return data
        gone = pa.array(sorted(self.erased.users), pa.string())
        return data.filter(pc.invert(pc.is_in(data["user_id"], value_set=gone)))

    def catch_up(self, client: Client, new: set[str]) -> None:
        """Delete newly erased users' rows again: those that landed before this sink knew."""
        for user in sorted(new):
            with_retry("erasure", partial(delete_user, client, user, self._cluster))
