"""What a sink keeps of a batch once users are erased (dataflows.forget), without ClickHouse."""

from __future__ import annotations

import pyarrow as pa

from dataflows.forget import Forgetting


def forgetting(*erased: str) -> Forgetting:
    f = Forgetting()
    f.erased.users = frozenset(erased)
    return f


def test_rows_of_erased_users_are_dropped_and_others_kept_in_order() -> None:
    f = forgetting("gone")
    assert f.kept(["a", "b"]) is None, "nobody erased in the batch: kept as it is"
    assert f.kept(["a", "gone", "b", "gone"]) == [0, 2]
    rows = [["a", 1], ["gone", 2], ["b", 3]]
    assert f.rows(["user_id", "n"], rows) == [["a", 1], ["b", 3]]
    assert f.rows(["item_id", "n"], rows) is rows, "a table without users is not touched"
    table = pa.table({"user_id": ["gone", "a"], "n": [1, 2]})
    assert f.arrow(table).to_pylist() == [{"user_id": "a", "n": 2}]
    assert forgetting().arrow(table) is table
