"""`swipeloop report`: a simulation's (and optionally a replay's) figures as PNG plots and a
Markdown summary.

engagement.png   watch seconds per impression over time, per policy arm, the burst shaded
adaptation.png   the burst topic's share of each arm's impressions over time
new_uploads.png  cumulative views of the gem uploads by minutes since upload, per arm
report.md        the per-arm table, the lift over batch, the replay's HR@10 / NDCG@10
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from sim.figures import ReplayFigures, Summary

ARMS = ("realtime", "batch", "popularity", "random")


def render(simulation: Summary, out: Path, replay: ReplayFigures | None = None) -> list[Path]:
    """Write the plots and report.md to `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [
        _engagement(simulation, out / "engagement.png"),
        _adaptation(simulation, out / "adaptation.png"),
        _new_uploads(simulation, out / "new_uploads.png"),
    ]
    report = out / "report.md"
    report.write_text(markdown(simulation, replay))
    return [*written, report]


def _timeline(simulation: Summary, arm: str) -> np.ndarray[Any, Any]:
    rows = simulation.timeline.get(arm, [])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def _shade_bursts(ax: Any, simulation: Summary) -> None:
    for b in simulation.bursts:
        ax.axvspan(b.start_s, b.end_s, color="orange", alpha=0.15, label=f"burst: {b.topic}")


def _over_time(simulation: Summary, path: Path, column: int, ylabel: str, title: str) -> Path:
    """A timeline column per impression, one line per arm, the bursts shaded."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for arm in ARMS:
        t = _timeline(simulation, arm)
        if len(t):
            ax.plot(t[:, 0], t[:, column] / np.maximum(t[:, 1], 1), label=arm)
    _shade_bursts(ax, simulation)
    ax.set(xlabel="seconds", ylabel=ylabel, title=title)
    return _save(fig, ax, path)


def _engagement(simulation: Summary, path: Path) -> Path:
    return _over_time(simulation, path, 3, "watch seconds per impression", "Engagement over time")


def _adaptation(simulation: Summary, path: Path) -> Path:
    title = "Adaptation: the burst topic's share of each arm's feed"
    return _over_time(simulation, path, 2, "share of impressions", title)


def _save(fig: Any, ax: Any, path: Path) -> Path:
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _new_uploads(simulation: Summary, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    for arm in ARMS:
        counts = simulation.gem_views_by_minute.get(arm, [])
        if counts:
            ax.step(np.arange(1, len(counts) + 1), np.cumsum(counts), where="post", label=arm)
        else:
            ax.plot([], [], label=f"{arm} (none)")
    ax.set(
        xlabel="minutes since upload",
        ylabel="views of gem uploads (all gems)",
        title="Exposure of new uploads",
    )
    return _save(fig, ax, path)


def _new_upload_table(simulation: Summary) -> list[str]:
    """Views per new upload (gems against the others) and the gems' minutes to N views."""
    shares = simulation.views_per_upload
    reach = sorted(simulation.reach, key=lambda r: r.views)
    lines = [
        f"New uploads: {simulation.gem_uploads} gems; each arm has "
        f"{simulation.people_per_arm} people, and nobody is shown a video twice.",
        "",
        "| arm | views per gem | per other upload "
        + "".join(f"| gems to {r.views} views (median min) " for r in reach)
        + "|",
        "| --- | --- | --- " + "| --- " * len(reach) + "|",
    ]
    for arm in ARMS:
        cells = [_fmt(shares[arm].gem, 1), _fmt(shares[arm].other, 1)]
        cells += [f"{r.gems[arm]} ({_fmt(r.minutes[arm], 1)})" for r in reach]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(simulation: Summary, replay: ReplayFigures | None = None) -> str:
    """The summary as Markdown."""
    lines = [
        "# swipeloop: policy comparison",
        "",
        f"Measured {simulation.measured_s} s on one simulated population, one policy arm "
        f"per person; catalogue {simulation.catalog} videos; errors "
        f"{simulation.errors}.",
        "",
        "| arm | sessions | watch s / session | during bursts | like rate | early-skip rate "
        "| coverage | creator Gini | adaptation lag s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lags = simulation.adaptation_lag_s
    for arm in ARMS:
        f = simulation.arms[arm]
        lines.append(
            f"| {arm} | {f.sessions} | {_fmt(f.watch_s_per_session, 1)} "
            f"| {_fmt(f.burst_watch_s_per_session, 1)} | {_fmt(f.like_rate)} "
            f"| {_fmt(f.early_skip_rate)} | {_fmt(f.coverage)} "
            f"| {_fmt(f.creator_gini)} | {_fmt(lags.get(arm), 0)} |"
        )
    lift = simulation.lift_vs_batch
    lines += [
        "",
        f"Real time over batch during bursts: {'-' if lift is None else f'{lift:+.0%}'}.",
        "",
        *_new_upload_table(simulation),
        "![engagement](engagement.png)",
        "![adaptation](adaptation.png)",
        "![new uploads](new_uploads.png)",
    ]
    if replay is not None:
        lines += [
            "",
            f"## Replay ({replay.ratings} ratings, {replay.users} users, leave-last-out)",
            "",
            "| ranker | HR@10 | NDCG@10 |",
            "| --- | --- | --- |",
        ]
        for name, r in (
            ("swipeloop", replay.swipeloop),
            ("item_knn", replay.item_knn),
            ("recent_item_knn", replay.recent_item_knn),
            ("popularity", replay.popularity),
        ):
            if r is None:
                continue  # (a replay file from before that baseline)
            lines.append(f"| {name} | {r.hr_at_10:.3f} | {r.ndcg_at_10:.3f} |")
    return "\n".join(lines) + "\n"
