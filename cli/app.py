"""`swipeloop`: run the whole system, or one role of it, from the command line.

The commands live in a module per group (cli/up.py, flows.py, schema.py, model.py, erasure.py,
sim.py, sql.py); this module puts them on one app. `--help` lists them in this order, the
groups (`flows`, `model`) after the commands.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import httpx
import typer
from clickhouse_connect.driver.exceptions import DatabaseError
from confluent_kafka import KafkaException
from rich.markup import escape

from cli.erasure import erase_user
from cli.experiment import experiment
from cli.flows import flows
from cli.model import model, train, trainer
from cli.schema import migrate, topics
from cli.seed import seed
from cli.shared import BAD_INPUT, FAILED, UNREACHABLE, console
from cli.sim import replay, report, simulate
from cli.sql import sql
from cli.token import token
from cli.up import api, up
from cli.version import version_option
from swipeloop.broker import BrokerStartError
from swipeloop.clickhouse import transient
from swipeloop.extras import MissingExtra
from swipeloop.migrations import BadMigrations
from swipeloop.settings import SettingsError

app = typer.Typer(
    help="Real-time short-video recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.callback()(version_option)
app.command()(up)
app.command()(api)
app.add_typer(flows, name="flows")
app.command()(migrate)
app.command()(topics)
app.command()(seed)
app.command()(train)
app.add_typer(model, name="model")
app.add_typer(experiment, name="experiment")
app.command()(trainer)
app.command("erase-user")(erase_user)
app.command()(token)
app.command()(simulate)
app.command()(report)
app.command()(replay)
app.command("sql")(sql)


def main() -> None:
    """Console-script entry point: what goes wrong outside the program (a bad variable, a
    broker, ClickHouse or API that does not answer) is one line and an exit code (cli.shared),
    not a traceback; a bug in the program keeps its traceback."""
    # the HTTP driver warns of each failed request before it raises; the raise is reported below
    logging.getLogger("clickhouse_connect.driver._backend.http_sync").setLevel(logging.ERROR)
    try:
        app()
    except (SettingsError, MissingExtra) as exc:
        _fail(BAD_INPUT, str(exc))
    except BadMigrations as exc:  # an install without its SQL
        _fail(FAILED, str(exc))
    except (KafkaException, BrokerStartError) as exc:
        _fail(UNREACHABLE, f"the broker did not answer: {exc}")
    except DatabaseError as exc:
        if not transient(exc):
            raise
        _fail(UNREACHABLE, f"ClickHouse did not answer: {exc}")
    except httpx.TransportError as exc:  # train and sql ask a running `up` through its API
        _fail(UNREACHABLE, f"the running swipeloop API did not answer: {exc}")


def _fail(code: int, message: str) -> NoReturn:
    lines = message.strip().splitlines() or [""]
    console.print(f"[red]swipeloop:[/] {escape(lines[0])}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
