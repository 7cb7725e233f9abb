"""Named analysis queries: their parameter lines, and values checked before ClickHouse sees them."""

import json
from pathlib import Path

import pytest

from swipeloop import analysis

ROOT = Path(__file__).resolve().parents[2]


def test_a_query_file_must_declare_what_it_binds() -> None:
    with pytest.raises(analysis.QueryError, match=r"binds \{days:UInt32\}"):
        analysis.parse("q", "-- about\nSELECT {days:UInt32}")
    query = analysis.parse("q", "-- about it\n-- param: n UInt8 = 3  a number\nSELECT {n:UInt8}")
    assert query.about == "about it" and query.bind({}) == {"n": "3"}
    with pytest.raises(analysis.QueryError, match="n='300' is not a UInt8"):
        query.bind({"n": "300"})
    with pytest.raises(analysis.QueryError, match="no parameter m"):
        query.bind({"m": "1"})


def test_every_query_file_parses_and_declares_its_parameters() -> None:
    queries = analysis.catalogue()
    assert len(queries) >= 6
    assert all(q.about for q in queries.values())
    with pytest.raises(analysis.QueryError, match=r"there are: .*daily_engagement"):
        analysis.load("../migrations/0001_events")


def test_the_experiment_panel_is_the_named_query_for_the_latest_experiment() -> None:
    """Grafana's panel cannot bind a parameter: it runs the same SQL on the latest experiment."""
    board = json.loads((ROOT / "grafana" / "dashboards" / "model.json").read_text())
    (panel,) = [p for p in board["panels"] if p["title"].startswith("Experiment arms")]
    sql = (ROOT / "sql" / "analysis" / "experiment_arms.sql").read_text()
    body = "\n".join(line for line in sql.splitlines() if not line.startswith("--")).strip()
    latest = "(SELECT name FROM experiments FINAL ORDER BY started_at DESC LIMIT 1)"
    assert panel["targets"][0]["rawSql"] == body.replace("{experiment:String}", latest)


def test_the_context_panel_is_the_named_query_over_the_dashboard_s_time_range() -> None:
    board = json.loads((ROOT / "grafana" / "dashboards" / "engagement.json").read_text())
    (panel,) = [p for p in board["panels"] if p["title"].startswith("Completion by network")]
    sql = (ROOT / "sql" / "analysis" / "context_completion.sql").read_text()
    body = "\n".join(line for line in sql.splitlines() if not line.startswith("--")).strip()
    window = "e.client_ts >= now64(3) - toIntervalHour({hours:UInt32})"
    assert panel["targets"][0]["rawSql"] == body.replace(window, "$__timeFilter(e.client_ts)")
