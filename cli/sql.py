"""`swipeloop sql`: the named analysis queries of sql/analysis/ (or any SQL) on the
analytics store, printed as a table, CSV or JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from cli.shared import BAD_INPUT, Format, console, env_settings, print_rows

if TYPE_CHECKING:
    from swipeloop.analysis import NamedQuery


def _query_names() -> list[str]:
    from swipeloop.analysis import catalogue

    return list(catalogue())


def sql(
    name: Annotated[
        str | None,
        typer.Argument(help="a named query (--list shows them)", autocompletion=_query_names),
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE, repeatable")
    ] = None,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="how to print the rows")
    ] = Format.table,
    list_: Annotated[
        bool, typer.Option("--list", help="the named queries, their parameters")
    ] = False,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="run this SQL instead (no parameters)")
    ] = None,
) -> None:
    """Run a named analysis query (or --query SQL) on the analytics store and print its rows.

    Examples: `swipeloop sql daily_engagement -p days=14`, `swipeloop sql dlq_reasons -f csv`.
    """
    from cli.stack import running_url
    from swipeloop import analysis
    from swipeloop.clickhouse import connect

    if list_:
        _list_queries(analysis.catalogue())
        return
    if (name is None) == (query is None):
        raise typer.BadParameter("give a query NAME or --query SQL (--list shows the names)")
    if any("=" not in p for p in param or []):
        raise typer.BadParameter("--param takes NAME=VALUE")
    given = dict(p.partition("=")[::2] for p in param or [])
    settings = env_settings()
    url = running_url(settings)
    try:
        if query is not None:
            if url is not None:
                raise typer.BadParameter(
                    f"`swipeloop up` at {url} holds the embedded ClickHouse: run a named query "
                    "(it asks the running stack), or stop it first"
                )
            result = connect(settings).query(query)
            columns, rows = list(result.column_names), [list(r) for r in result.result_rows]
        elif url is not None:  # the running `up` owns the embedded ClickHouse: ask it
            import httpx

            r = httpx.get(
                f"{url}/admin/sql/{name}",
                params=given,
                timeout=600,
                headers=settings.bearer("admin"),
            )
            if r.status_code != 200:
                raise analysis.QueryError(r.json().get("detail", r.text))
            columns, rows = r.json()["columns"], r.json()["rows"]
        else:
            assert name is not None
            columns, rows = analysis.run(connect(settings), analysis.load(name), given)
    except analysis.QueryError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(BAD_INPUT) from exc
    print_rows(columns, rows, fmt)


def _list_queries(queries: dict[str, NamedQuery]) -> None:
    from rich.table import Table

    table = Table("query", "what it answers", "parameters (default)")
    for q in queries.values():
        params = "\n".join(
            f"{p.name} {p.type}" + (f" = {p.default}" if p.default is not None else "")
            for p in q.params.values()
        )
        table.add_row(q.name, q.about, params)
    Console().print(table)
