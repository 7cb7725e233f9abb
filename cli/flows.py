"""`swipeloop flows list | run | status`: the dataflows, one at a time, as production runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cli.shared import Format, console, env_settings, print_rows, setup_logging

flows = typer.Typer(help="The dataflows: list them, run one, see where each stands.")


def _flow_names() -> list[str]:
    from dataflows.runner import FLOWS

    return list(FLOWS)


@flows.command("list")
def flows_list() -> None:
    """The dataflows there are, what each does and where it keeps its recovery store."""
    from rich.table import Table

    from dataflows.runner import FLOWS, describe, recovery_dir

    settings = env_settings()
    table = Table("flow", "what it does", "recovery store")
    for name, (_, recover, _) in FLOWS.items():
        store = str(recovery_dir(settings, name)) if recover else "-"
        table.add_row(name, describe(name), store)
    Console().print(table)


@flows.command("run")
def flows_run(
    name: Annotated[
        str, typer.Argument(help="ingest, features or embeddings", autocompletion=_flow_names)
    ],
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-w", min=1, help="worker threads in each process [SWIPELOOP_FLOW_WORKERS]"
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            "-n",
            min=1,
            help="processes of this flow's cluster [SWIPELOOP_FLOW_PROCESSES]",
        ),
    ] = None,
    process_id: Annotated[
        int | None,
        typer.Option(
            "--process-id",
            "-i",
            min=0,
            help="this process's index, from 0 [SWIPELOOP_FLOW_PROCESS_ID]",
        ),
    ] = None,
    addresses: Annotated[
        str | None,
        typer.Option(
            "--addresses",
            "-a",
            help="every process's host:port, ';'-separated, in process order: the same list for "
            "all [SWIPELOOP_FLOW_ADDRESSES]",
        ),
    ] = None,
    recovery: Annotated[
        Path | None,
        typer.Option(
            help="recovery store (default: SWIPELOOP_DATA_DIR/recovery/NAME-EPOCH); created "
            "on the first run with one partition per worker"
        ),
    ] = None,
    drain: Annotated[
        bool,
        typer.Option(
            help="exit once every partition is read to its end (features: and close every "
            "window; embeddings: and publish what changed)"
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one dataflow in this process, alone or as one process of a cluster.

    A cluster of N processes (one container or machine each) runs the same command with
    the same --processes and --addresses, and each its own --process-id; the broker's
    partitions spread over every worker, and each key's state lives with one worker. It
    resumes from its last snapshot in its recovery store; SIGTERM or Ctrl-C stops it after
    the current batch. SWIPELOOP_FLOW_API_PORT turns on Bytewax's dataflow API server
    (/dataflow, /metrics with consumer lag) on that port.
    """
    from dataflows.runner import FLOWS, ClusterShapeError, PeerLost, run_process

    setup_logging(verbose)
    if name not in FLOWS:
        raise typer.BadParameter(f"unknown flow {name!r}; one of: {', '.join(FLOWS)}")
    flags = {
        "flow_workers": workers,
        "flow_processes": processes,
        "flow_process_id": process_id,
        "flow_addresses": addresses,
    }
    settings = env_settings().with_(**{k: v for k, v in flags.items() if v is not None})
    if settings.embedded_broker:
        raise typer.BadParameter("set SWIPELOOP_KAFKA_BOOTSTRAP (or use `swipeloop up`)")
    drained: dict[str, Any] = {"drain": True} if drain else {}
    try:
        run_process(name, settings, recovery=recovery, **drained)
    except (PeerLost, ClusterShapeError) as exc:  # (the supervisor restarts it: exit non-zero)
        console.print(escape(str(exc)), style="red")
        raise typer.Exit(1) from None


@flows.command("status")
def flows_status(
    fmt: Annotated[Format, typer.Option("--format", "-f", help="how to print it")] = Format.table,
) -> None:
    """Each flow's recovery store: partitions, runs, last committed epoch and snapshot, and
    how far its snapshotted offsets trail the broker (when the broker can be reached)."""
    import time

    from dataflows.runner import FLOWS, status
    from swipeloop.kafka import end_offsets

    settings = env_settings()
    columns = ["flow", "partitions", "runs", "epoch", "snapshot_s_ago", "read", "lag", "store"]
    rows = []
    for name, (_, recover, _) in FLOWS.items():
        if not recover:
            continue
        st = status(settings, name)
        ends = end_offsets(settings, list(st.offsets)) if st.offsets else {}
        lag = sum(max(ends[k] - v, 0) for k, v in st.offsets.items() if k in ends)
        ago = None if st.snapshot_at is None else round(time.time() - st.snapshot_at)
        read = sum(st.offsets.values())
        rows.append(
            [
                name,
                st.partitions,
                st.executions,
                st.committed_epoch,
                ago,
                read,
                lag if ends else None,
                str(st.store),
            ]
        )
    print_rows(columns, rows, fmt)
    if fmt is Format.table:
        console.print("partitions 0: never ran here; lag: messages on the broker past the snapshot")
