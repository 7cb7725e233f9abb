"""The simulated world behind `swipeloop simulate` (pure, deterministic by seed).

people     a latent taste per topic (three loved, the rest mildly disliked) that drifts as
           a random walk, a patience (early skips in a row before the session ends), the
           policy arm they are served by (`POLICIES`, round robin), and their phone: a
           network (one in three on cellular, where videos of 30 s and more appeal less)
           and a device class, which every event and feed request reports
creators   a quality each; most of their videos share one topic
videos     a topic, a length (5-60 s) and a quality (their creator's, give or take); the
           catalogue is days old, the uploads are new
uploads    new videos keep arriving (`upload_every_s`); one in five is a gem (quality +1.5)
bursts     a topic's appeal jumps by `lift` for everyone, for a while (a meme, a news story)

A reaction follows appeal = taste[topic] + quality/2 + burst lift, plus noise: the watched
fraction, a loop, a like, a share, a follow, "not interested", a block. Only the world knows
these; the system sees the swipes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sim.demo_catalog import TAGS
from swipeloop.arrays import Floats
from swipeloop.contracts import DeviceClass, Network

POLICIES = ("realtime", "batch", "popularity", "random")
NETWORKS: tuple[Network, ...] = ("wifi", "wifi", "cellular")  # round robin, as the policies
DEVICES: tuple[DeviceClass, ...] = ("phone", "phone", "phone", "tablet")
BANDWIDTH_KBPS: dict[Network, int] = {"wifi": 48_000, "cellular": 6_000}
CELLULAR_LONG_S = 30.0  # on cellular, a video this long or longer ...
CELLULAR_LONG_APPEAL = -0.5  # ... appeals this much less (it stalls, it costs data)


@dataclass
class Person:
    """A simulated user: what they like (hidden), how patient they are, which arm serves them."""

    user_id: str
    taste: Floats
    patience: int
    policy: str
    network: Network = "wifi"
    device_class: DeviceClass = "phone"
    session: int = 0  # how many sessions so far
    seq: int = 0  # the next event's number in this session
    skips_in_row: int = 0


@dataclass(frozen=True)
class Video:
    """A video as the world knows it (the system gets its item without the quality)."""

    item_id: str
    creator_id: str
    topic: int
    duration_ms: int
    quality: float
    created_s: float
    gem: bool = False  # an upload far better than its creator's usual (new uploads are timed
    # on these: minutes to 1,000 views)


@dataclass(frozen=True)
class Burst:
    """A topic everyone suddenly wants more of, during [start_s, end_s)."""

    topic: int
    start_s: float
    end_s: float
    lift: float

    def during(self, t: float) -> bool:
        """Whether the burst is on at time t."""
        return self.start_s <= t < self.end_s


@dataclass(frozen=True)
class Reaction:
    """What one person did with one video."""

    watched_ms: int
    fraction: float
    early_skip: bool
    looped: bool
    liked: bool
    shared: bool
    followed: bool
    not_interested: bool
    blocked: bool

    def kinds(self) -> list[tuple[str, int]]:
        """The swipes a phone reports, in order: (kind, watch_ms)."""
        out = [("impression", 0), ("skip" if self.early_skip else "watch", self.watched_ms)]
        for kind, did in (
            ("loop", self.looped),
            ("like", self.liked),
            ("share", self.shared),
            ("follow", self.followed),
            ("not_interested", self.not_interested),
            ("block", self.blocked),
        ):
            if did:
                out.append((kind, 0))
        return out


GEM_QUALITY = 1.5  # what a gem adds to its creator's quality
EARLY = 0.1  # a watched fraction below this is an early skip


@dataclass
class World:
    """Everyone and everything in one simulation, drawn from one seed."""

    seed: int
    people: list[Person]
    videos: list[Video]
    bursts: list[Burst]
    creators: dict[str, float] = field(default_factory=dict)  # quality by creator
    homes: dict[str, int] = field(default_factory=dict)  # each creator's usual topic
    upload_every_s: float = 2.0
    drift_per_s: float = 0.01  # taste random-walk step (standard deviation per √s)
    _uploaded: int = 0

    @classmethod
    def create(
        cls,
        seed: int,
        users: int,
        videos: int,
        creators: int | None = None,
        bursts: list[Burst] | None = None,
        upload_every_s: float = 2.0,
        now_s: float = 0.0,
    ) -> World:
        """A world of `users` people and a catalogue of `videos` videos uploaded 3 to 30
        days before (older than the feed's fresh window: the new uploads are the world's)."""
        rng = np.random.default_rng(seed)
        creators = creators or max(videos // 20, 1)
        quality = {f"wc{c:05d}": float(rng.normal(0.0, 0.5)) for c in range(creators)}
        homes = {c: int(rng.integers(len(TAGS))) for c in quality}
        world = cls(seed, [], [], bursts or [], quality, homes, upload_every_s)
        for _ in range(videos):
            age_s = float(rng.uniform(3 * 86_400, 30 * 86_400))
            world.videos.append(world._video(rng, now_s - age_s))
        for u in range(users):
            taste = rng.normal(-0.3, 0.3, len(TAGS))
            taste[rng.choice(len(TAGS), size=3, replace=False)] = rng.uniform(0.8, 1.5, 3)
            world.people.append(
                Person(
                    user_id=f"w{seed}-u{u:05d}",
                    taste=taste,
                    patience=int(rng.integers(3, 7)),
                    policy=POLICIES[u % len(POLICIES)],
                    network=NETWORKS[u % len(NETWORKS)],
                    device_class=DEVICES[u % len(DEVICES)],
                )
            )
        return world

    def _video(self, rng: np.random.Generator, created_s: float, gem: bool = False) -> Video:
        creator = list(self.creators)[int(rng.integers(len(self.creators)))]
        topic = self.homes[creator] if rng.random() < 0.8 else int(rng.integers(len(TAGS)))
        quality = self.creators[creator] + float(rng.normal(0.0, 0.5)) + (GEM_QUALITY if gem else 0)
        n = len(self.videos)
        return Video(
            item_id=f"w{self.seed}-v{n:06d}",
            creator_id=creator,
            topic=topic,
            duration_ms=int(rng.integers(5_000, 60_000)),
            quality=quality,
            created_s=created_s,
            gem=gem,
        )

    def uploads(self, t: float) -> list[Video]:
        """New videos uploaded up to time t (since the world began at 0), each once."""
        due = int(t // self.upload_every_s)
        out = []
        while self._uploaded < due:  # each upload drawn from its own seed: any call order
            rng = np.random.default_rng([self.seed, 1, self._uploaded])
            at = (self._uploaded + 1) * self.upload_every_s
            video = self._video(rng, at, gem=self._uploaded % 5 == 0)
            self.videos.append(video)
            out.append(video)
            self._uploaded += 1
        return out

    def lift(self, topic: int, t: float) -> float:
        """How much more everyone likes this topic at time t."""
        return sum(b.lift for b in self.bursts if b.topic == topic and b.during(t))

    def react(self, person: Person, video: Video, t: float, rng: np.random.Generator) -> Reaction:
        """What this person does with this video at time t (noise from `rng`)."""
        appeal = person.taste[video.topic] + 0.5 * video.quality + self.lift(video.topic, t)
        if person.network == "cellular" and video.duration_ms >= CELLULAR_LONG_S * 1000:
            appeal += CELLULAR_LONG_APPEAL
        fraction = _sigmoid(3.0 * appeal - 1.0 + float(rng.normal(0.0, 0.7)))
        early = fraction < EARLY
        looped = fraction > 0.9 and rng.random() < 0.4
        liked = not early and rng.random() < _sigmoid(4.0 * appeal - 3.5)
        shared = liked and rng.random() < 0.1
        followed = liked and rng.random() < 0.05
        hidden = early and appeal < -0.3 and rng.random() < 0.1
        blocked = hidden and rng.random() < 0.1
        person.skips_in_row = person.skips_in_row + 1 if early else 0
        return Reaction(
            watched_ms=int(fraction * video.duration_ms),
            fraction=fraction,
            early_skip=early,
            looped=looped,
            liked=liked,
            shared=shared,
            followed=followed,
            not_interested=hidden,
            blocked=blocked,
        )

    def bored(self, person: Person) -> bool:
        """The session ends: too many early skips in a row."""
        return person.skips_in_row >= person.patience

    def drift(self, person: Person, seconds: float, rng: np.random.Generator) -> None:
        """Tastes wander a little with time."""
        step = self.drift_per_s * math.sqrt(max(seconds, 0.0))
        person.taste = person.taste + rng.normal(0.0, step, len(person.taste))


def one_burst(
    seed: int, start_s: float, length_s: float, lift: float = 1.5, draw: int = 4
) -> list[Burst]:
    """A burst of a topic drawn from the seed (another `draw`: most likely another topic)."""
    topic = int(np.random.default_rng([seed, draw]).integers(len(TAGS)))
    return [Burst(topic, start_s, start_s + length_s, lift)]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def gini(counts: Floats) -> float:
    """Inequality of exposure: 0 when every creator got the same, toward 1 when one got all."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)
