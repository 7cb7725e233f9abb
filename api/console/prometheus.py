"""The pipeline's series as the Prometheus that scrapes every role holds them (its HTTP API,
one instant query): in production the flows and each API replica run in containers of their
own, so this process's registry holds none of the flows' lag and only its own freshness."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import httpx
from prometheus_client.samples import Sample

TIMEOUT_S = 3.0
SCRAPE_LABELS = frozenset({"instance", "job"})  # what Prometheus adds: which target it was


class Unreachable(Exception):
    """Prometheus did not answer the query (the message says how)."""


def instant(url: str, selector: str, timeout_s: float = TIMEOUT_S) -> list[Sample]:
    """The series a selector matches now, each as a sample (name, labels, value) without the
    labels of the target it was scraped from."""
    try:
        answer = httpx.get(
            f"{url.rstrip('/')}/api/v1/query", params={"query": selector}, timeout=timeout_s
        )
        answer.raise_for_status()
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise Unreachable(f"Prometheus at {url}: {exc}") from exc
    if body.get("status") != "success" or body["data"]["resultType"] != "vector":
        raise Unreachable(f"Prometheus at {url}: {body.get('error', body)}")
    out = []
    for series in body["data"]["result"]:
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        kept = {k: v for k, v in labels.items() if k not in SCRAPE_LABELS}
        out.append(Sample(name, kept, float(series["value"][1])))
    return out


def merged(samples: Iterable[Sample], same: Literal["sum", "max"] = "sum") -> list[Sample]:
    """One sample per name and labels: the targets' values added (a histogram's buckets and
    counts over every replica), or their largest ("max": a gauge that two targets reported,
    such as a flow's restarted process beside its last scrape)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for sample in samples:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        before = out.get(key)
        if before is None:
            out[key] = sample.value
        else:
            out[key] = before + sample.value if same == "sum" else max(before, sample.value)
    return [Sample(name, dict(labels), value) for (name, labels), value in out.items()]
