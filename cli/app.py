"""`swipeloop`: run the whole system, or one role of it, from the command line.

The commands live in a module per group (cli/up.py, flows.py, schema.py, model.py, erasure.py,
sim.py, sql.py); this module puts them on one app. `--help` lists them in this order, the
groups (`flows`, `model`) after the commands.
"""

from __future__ import annotations

import typer

from cli.erasure import erase_user
from cli.flows import flows
from cli.model import model, train, trainer
from cli.schema import migrate, topics
from cli.sim import replay, report, simulate
from cli.sql import sql
from cli.up import api, up

app = typer.Typer(
    help="Real-time short-video recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(up)
app.command()(api)
app.add_typer(flows, name="flows")
app.command()(migrate)
app.command()(topics)
app.command()(train)
app.add_typer(model, name="model")
app.command()(trainer)
app.command("erase-user")(erase_user)
app.command()(simulate)
app.command()(report)
app.command()(replay)
app.command("sql")(sql)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
