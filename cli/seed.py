"""`swipeloop seed`: the demo catalog onto the items topic, for an install that wants one
(`swipeloop up` seeds its own on a fresh start; compose seeds nothing unless asked)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cli.shared import FAILED, console, env_settings
from swipeloop.settings import Settings

log = logging.getLogger(__name__)


def seed_catalog(settings: Settings, items: int) -> int:
    """Post `items` demo videos to the items topic, all acknowledged; how many were not."""
    import msgspec

    from sim.demo_catalog import demo_catalog
    from swipeloop import topics
    from swipeloop.kafka import durable_producer

    producer = durable_producer(settings)
    for item in demo_catalog(items):
        producer.produce(topics.ITEMS, key=item.item_id, value=msgspec.json.encode(item))
        producer.poll(0)
    left = int(producer.flush(30))
    log.info("seeded a demo catalog of %d items", items - left)
    return left


def seed(
    items: Annotated[int, typer.Option(min=1, help="demo videos to post")] = 5000,
) -> None:
    """Post a demo catalog to the items topic (the flows and APIs take it from there).

    The same catalog every time: its item ids repeat, so seeding again replaces, never adds.
    """
    settings = env_settings()
    if settings.embedded_broker:
        raise typer.BadParameter("set SWIPELOOP_KAFKA_BOOTSTRAP (`swipeloop up` seeds its own)")
    left = seed_catalog(settings, items)
    if left:
        console.print(f"[red]swipeloop seed:[/] {left} of {items} items not acknowledged")
        raise typer.Exit(FAILED)
    console.print(f"posted {items} demo items to the items topic")
