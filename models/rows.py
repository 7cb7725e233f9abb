"""Rows held as parallel numpy arrays: a dataclass per table whose fields are columns."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


def run_starts(ordered: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    """Where each run of equal values begins in a sorted array."""
    return np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def take_rows(rows: R, at: npt.NDArray[np.int64] | slice) -> R:
    """The rows at positions `at` (a slice gives views), every column alike; a column that
    is None stays None."""
    columns = {f.name: getattr(rows, f.name) for f in fields(rows)}
    return replace(rows, **{k: None if v is None else v[at] for k, v in columns.items()})


def concat_rows(parts: list[R]) -> R:
    """Several batches of rows as one, column by column (None stays None)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    columns = {}
    for f in fields(first):
        values = [getattr(p, f.name) for p in parts]
        columns[f.name] = None if values[0] is None else np.concatenate(values)
    return replace(first, **columns)
