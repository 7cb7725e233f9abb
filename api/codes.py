"""Names as dense integer codes, so a feed filters, joins and ranks numpy arrays, not strings.

A code is handed out the first time a name is seen (an item id in the catalog, an impression,
a vector, a user's block) and never reused, so any array indexed by code stays valid as the
catalog grows. Interning takes a lock; reading names by code does not (the name array is
only ever replaced by a larger copy, and a code is read only after it was handed out).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from swipeloop.arrays import Codes


class Interner:
    """Name -> code, code -> name."""

    def __init__(self, capacity: int = 1024) -> None:
        self._code: dict[str, int] = {}
        self._names: npt.NDArray[np.object_] = np.full(capacity, "", dtype=object)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._code)

    def get(self, name: str) -> int | None:
        """The name's code, or None if it was never seen."""
        return self._code.get(name)

    def code(self, name: str) -> int:
        """The name's code, handed out now if it is new."""
        code = self._code.get(name)
        if code is None:
            code = int(self.codes([name])[0])
        return code

    def codes(self, names: Iterable[str]) -> Codes:
        """The codes of many names, new ones handed out in order."""
        names = list(names)
        code = self._code
        with self._lock:
            out = np.fromiter(
                (code.setdefault(name, len(code)) for name in names), np.int64, len(names)
            )
            if len(code) > len(self._names):
                grown = np.full(max(len(code), 2 * len(self._names)), "", dtype=object)
                grown[: len(self._names)] = self._names
                self._names = grown
            self._names[out] = np.array(names, dtype=object)
        return out

    def known(self, names: Iterable[str]) -> Codes:
        """The codes of the names already seen (unknown names are skipped)."""
        code = self._code
        return np.fromiter((code[n] for n in names if n in code), np.int64)

    def names(self, codes: Codes) -> list[str]:
        """The names of codes."""
        out: list[str] = self._names[codes].tolist()
        return out

    def name(self, code: int) -> str:
        """The name of one code."""
        return str(self._names[code])
