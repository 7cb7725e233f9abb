"""Canary promotion: a candidate that passed the offline gate serves `canary_share` of users
first (a hash of its version and the user, sticky), and is promoted only once its live
sessions are not worse than production's beyond `canary_margin`; otherwise it is dropped and
the verdict says why.

    model_canaries   version, production (what it is judged against), share, started_at,
                     state (running | promoted | dropped | superseded), reason

The judge (`judge`, every `canary_check_s` in the trainer; `swipeloop model canary`) waits
for `canary_sessions` sessions on each side (real-time feeds ranked by either version since the
canary started, `sql/training/canary.sql`), then compares the mean watch seconds per session:
the canary passes when its mean is at least production's times (1 - margin), and is dropped
when it is below that by more than the noise (1.96 standard errors of the difference);
within the noise it waits for more sessions, at most four times as many. Its early-skip rate
is reported beside it.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

import msgspec
from clickhouse_connect.driver.client import Client

from models.assignment import bucket
from swipeloop import SQL
from swipeloop.settings import Settings
from training import registry

log = logging.getLogger(__name__)
CANARY_SQL = SQL / "training" / "canary.sql"
COLUMNS = ["version", "production", "share", "started_at", "state", "reason"]
RUNNING = "running"
# Below the bar by more than this many standard errors of the difference: worse beyond noise.
# Within them the judge waits for more sessions, up to PATIENCE times the needed ones.
Z = 1.96
PATIENCE = 4


class Canary(msgspec.Struct, frozen=True, kw_only=True):
    """A candidate on a share of users, and where it stands."""

    version: str
    production: str
    share: int  # percent of users
    started_at: datetime
    state: str = RUNNING  # running | promoted | dropped | superseded
    reason: str = ""


class Side(msgspec.Struct, frozen=True):
    """One version's live sessions since the canary started."""

    sessions: int
    watch_s: float
    watch_sd: float
    early_skip_rate: float | None


class Verdict(msgspec.Struct, frozen=True):
    """What the judge decided (`state`: running while it waits), and why."""

    state: str
    reason: str
    canary: Side | None = None
    production: Side | None = None


def serves(canary: Canary, user_id: str) -> bool:
    """Whether this user's feeds are ranked by the canary."""
    return bucket(f"canary:{canary.version}", user_id) < canary.share


def start(client: Client, version: str, share: int, reason: str) -> Canary:
    """Serve `version` to `share` % of users beside production; a canary already running is
    superseded (its verdict says by what)."""
    production = registry.production(client)
    if production is None:
        raise registry.RegistryError("a canary needs a production model to be judged against")
    registry.info(client, version)  # (refuses a version that does not exist)
    now = datetime.now(UTC)
    if (old := running(client)) is not None:
        _write(client, msgspec.structs.replace(old, state="superseded", reason=f"by {version}"))
    canary = Canary(
        version=version, production=production, share=share, started_at=now, reason=reason
    )
    _write(client, canary)
    return canary


def running(client: Client) -> Canary | None:
    """The canary serving now, if any."""
    found = [c for c in listing(client) if c.state == RUNNING]
    return found[-1] if found else None


def listing(client: Client) -> list[Canary]:
    """Every canary, oldest first."""
    rows = client.query(
        f"SELECT {', '.join(COLUMNS)} FROM model_canaries FINAL ORDER BY started_at"
    ).result_rows
    return [
        Canary(
            version=v,
            production=p,
            share=int(share),
            started_at=at.replace(tzinfo=UTC),
            state=state,
            reason=reason,
        )
        for v, p, share, at, state, reason in rows
    ]


def decide(canary: Side | None, production: Side | None, needed: int, margin: float) -> Verdict:
    """Promote, drop, or wait: `needed` sessions on each side first, then the canary's mean
    watch per session against the bar, production's times (1 - margin): at or above it,
    promoted; below it by more than `Z` standard errors of that difference, dropped; below it
    within the noise, wait for more sessions, until `PATIENCE` times `needed` on each side
    (then below the bar is enough to drop it)."""
    have = (canary.sessions if canary else 0, production.sessions if production else 0)
    if canary is None or production is None or min(have) < needed:
        return Verdict(
            RUNNING,
            f"waiting: {have[0]} canary and {have[1]} production sessions of {needed} each",
            canary,
            production,
        )
    bar = production.watch_s * (1 - margin)
    figures = (
        f"watch {canary.watch_s:.1f} s per session over {canary.sessions} sessions against "
        f"production's {production.watch_s:.1f} s over {production.sessions} (bar "
        f"{bar:.1f} s at margin {margin:g}); early skips {_rate(canary)} against "
        f"{_rate(production)}"
    )
    if canary.watch_s >= bar:
        return Verdict("promoted", f"canary passed: {figures}", canary, production)
    gap = bar - canary.watch_s
    noise = math.sqrt(
        canary.watch_sd**2 / canary.sessions
        + ((1 - margin) * production.watch_sd) ** 2 / production.sessions
    )
    if gap > Z * noise:
        why = f"below the bar by {gap:.1f} s, more than {Z:g} standard errors ({noise:.1f} s)"
    elif min(have) >= PATIENCE * needed:
        why = f"still below the bar after {min(have)} sessions a side"
    else:
        return Verdict(
            RUNNING,
            f"waiting: below the bar by {gap:.1f} s, within {Z:g} standard errors "
            f"({noise:.1f} s), until {PATIENCE * needed} sessions a side: {figures}",
            canary,
            production,
        )
    return Verdict("dropped", f"canary failed: {why}; {figures}", canary, production)


def judge(client: Client, settings: Settings) -> Verdict | None:
    """Judge the running canary now; promote it or drop it once decided (None: no canary)."""
    canary = running(client)
    if canary is None:
        return None
    rows = client.query(
        CANARY_SQL.read_text(),
        parameters={
            "since": canary.started_at,
            "canary": canary.version,
            "production": canary.production,
        },
    ).result_rows
    sides = {
        str(v): Side(int(n), float(w), float(sd or 0.0), None if e is None else float(e))
        for v, n, w, sd, e in rows
    }
    verdict = decide(
        sides.get(canary.version),
        sides.get(canary.production),
        settings.canary_sessions,
        settings.canary_margin,
    )
    if verdict.state == RUNNING:
        return verdict
    if verdict.state == "promoted":
        registry.promote(client, canary.version, verdict.reason)
    _write(client, msgspec.structs.replace(canary, state=verdict.state, reason=verdict.reason))
    log.info("canary %s %s: %s", canary.version, verdict.state, verdict.reason)
    return verdict


def _rate(side: Side) -> str:
    return "n/a" if side.early_skip_rate is None else f"{side.early_skip_rate:.1%}"


def _write(client: Client, c: Canary) -> None:
    client.insert(
        "model_canaries",
        [[c.version, c.production, c.share, c.started_at, c.state, c.reason]],
        column_names=COLUMNS,
        settings=registry.WRITE,
    )
