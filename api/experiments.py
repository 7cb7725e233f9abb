"""Online experiments: users split between feed policies by a hash, sticky, with set shares.

An experiment names its arms, each a feed policy (`api.policies`: realtime, batch, popularity,
random) with a share of users in percent (the shares add up to 100). A user's arm is
`assign(experiment, user)`: a hash of the two, so every replica gives the same user the same
arm for the experiment's life without remembering anything, and a new experiment shuffles
users afresh. One experiment runs at a time; each feed it serves logs its name and the arm
with every impression (`impressions.experiment`, `.arm`); `sql/analysis/experiment_arms.sql`
compares the arms. The experiments live in ClickHouse (`experiments`), where every replica
looks for the running one every `model_poll_s`.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import msgspec
from clickhouse_connect.driver.client import Client

from api.policies import POLICIES, Policy
from api.watch import Watched
from models.assignment import BUCKETS, bucket

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
COLUMNS = ["name", "arms", "shares", "started_at", "stopped_at"]


class ExperimentError(ValueError):
    """An experiment that cannot start or stop as asked (the message says why)."""


class BadArms(ExperimentError):
    """Arms that are not two or more policies with shares adding up to 100, or a bad name."""


class NoSuchExperiment(ExperimentError):
    """No experiment has that name."""


class Arm(msgspec.Struct, frozen=True):
    """One arm: the feed policy it serves and its share of users (percent)."""

    policy: Policy
    share: int


class Experiment(msgspec.Struct, frozen=True, kw_only=True):
    """An experiment and its life."""

    name: str
    arms: list[Arm]
    started_at: datetime
    stopped_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at is None


def parse_arms(text: str) -> list[Arm]:
    """`realtime:90,batch:10` as arms; ExperimentError saying what is wrong."""
    arms = []
    for part in (p.strip() for p in text.split(",")):
        policy, _, share = part.partition(":")
        if policy not in POLICIES:
            raise BadArms(f"arm {part!r}: the policy is one of {', '.join(POLICIES)}")
        if not share.isdigit() or not 0 < int(share) <= BUCKETS:
            raise BadArms(f"arm {part!r}: expected POLICY:SHARE, a share of 1-100 %")
        arms.append(Arm(policy, int(share)))
    return checked(arms)


def checked(arms: list[Arm]) -> list[Arm]:
    """The arms, if they are two or more distinct policies whose shares add up to 100."""
    policies = [a.policy for a in arms]
    if len(arms) < 2 or len(set(policies)) != len(policies):
        raise BadArms(f"arms {policies}: expected two or more distinct policies")
    if sum(a.share for a in arms) != BUCKETS or any(a.share <= 0 for a in arms):
        raise BadArms(f"arms' shares {[a.share for a in arms]}: expected them to add up to 100")
    return arms


def assign(experiment: str, user_id: str, arms: list[Arm]) -> Policy:
    """The user's arm: their bucket (a hash of experiment and user, 0-99) in the arms' shares,
    in the order the arms are listed."""
    at = bucket(experiment, user_id)
    for arm in arms:
        if at < arm.share:
            return arm.policy
        at -= arm.share
    raise AssertionError("the shares add up to 100")  # (checked() made sure)


def listing(client: Client) -> list[Experiment]:
    """Every experiment, newest first."""
    rows = client.query(
        "SELECT name, arms, shares, started_at, stopped_at FROM experiments FINAL "
        "ORDER BY started_at DESC, name"
    ).result_rows
    return [
        Experiment(
            name=name,
            arms=[Arm(p, int(s)) for p, s in zip(arms, shares, strict=True)],
            started_at=started.replace(tzinfo=UTC),
            stopped_at=None if stopped is None else stopped.replace(tzinfo=UTC),
        )
        for name, arms, shares, started, stopped in rows
    ]


def running(client: Client) -> Experiment | None:
    """The experiment running now, if any."""
    return next((e for e in listing(client) if e.running), None)


def start(client: Client, name: str, arms: list[Arm], now: datetime | None = None) -> Experiment:
    """Start `name` (a new name: a stopped experiment's results stay its own)."""
    if not _NAME.match(name):
        raise BadArms(f"name {name!r}: expected lower-case letters, digits, - and _")
    checked(arms)
    known = listing(client)
    if any(e.name == name for e in known):
        raise ExperimentError(f"experiment {name!r} exists already (names are never reused)")
    if (on := next((e for e in known if e.running), None)) is not None:
        raise ExperimentError(f"experiment {on.name!r} is running: stop it first")
    experiment = Experiment(name=name, arms=arms, started_at=now or datetime.now(UTC))
    _write(client, experiment)
    return experiment


def stop(client: Client, name: str, now: datetime | None = None) -> Experiment:
    """Stop `name`: its users get the real-time feed again."""
    found = next((e for e in listing(client) if e.name == name), None)
    if found is None:
        raise NoSuchExperiment(f"no experiment {name!r}")
    if not found.running:
        raise ExperimentError(f"experiment {name!r} stopped already")
    stopped = msgspec.structs.replace(found, stopped_at=now or datetime.now(UTC))
    _write(client, stopped)
    return stopped


def _write(client: Client, e: Experiment) -> None:
    client.insert(
        "experiments",
        [
            [
                e.name,
                [a.policy for a in e.arms],
                [a.share for a in e.arms],
                e.started_at,
                e.stopped_at,
            ]
        ],
        column_names=COLUMNS,
    )


class ExperimentHolder(Watched):
    """The experiment a replica serves under (`current`), followed every `poll_s`."""

    def __init__(self, client: Client, poll_s: float) -> None:
        super().__init__("running experiment", poll_s)
        self.current: Experiment | None = None
        self._client = client

    def refresh(self) -> None:
        """Look up the running experiment now."""
        with self._lock:
            self.current = running(self._client)
