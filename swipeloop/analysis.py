"""Named analysis queries: `sql/analysis/NAME.sql`, each a parameterized query.

A file opens with comment lines saying what it answers, then one line per parameter:

    -- param: days UInt32 = 7  how many days back from today

and binds each as `{days:UInt32}`: ClickHouse's server-side parameters, so no value is ever
pasted into the SQL text. A value is checked against its type here first, so a wrong one is
refused with the parameter's name rather than a ClickHouse error. `swipeloop sql NAME --param
k=v` runs one (through the running stack's admin API when `swipeloop up` holds the embedded
engine), `bench/analysis.py` times them all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

from clickhouse_connect.driver.client import Client

from swipeloop import SQL, sql_files

ANALYSIS_DIR = SQL / "analysis"
_PARAM = re.compile(r"^--\s*param:\s*(\w+)\s+(\w+)(?:\s*=\s*(\S+))?\s*(.*)$")
_PLACEHOLDER = re.compile(r"\{(\w+):\s*(\w+)\s*\}")
_INTEGER = re.compile(r"^(U?)Int(8|16|32|64)$")


class QueryError(ValueError):
    """A named query, or a value given for it, is wrong (the message says which and why)."""


@dataclass(frozen=True)
class Param:
    """One parameter of a named query."""

    name: str
    type: str  # a ClickHouse type name: UInt32, Float64, String, ...
    default: str | None  # None: it must be given
    help: str

    def check(self, value: str) -> str:
        """The value if it is one of the type's (for integers and floats), else QueryError."""
        integer = _INTEGER.match(self.type)
        try:
            if integer:
                number = int(value)
                bits = int(integer.group(2))
                low, high = (
                    (0, 2**bits) if integer.group(1) else (-(2 ** (bits - 1)), 2 ** (bits - 1))
                )
                if not low <= number < high:
                    raise ValueError
            elif self.type.startswith("Float"):
                float(value)
        except ValueError:
            raise QueryError(f"{self.name}={value!r} is not a {self.type}") from None
        return value


@dataclass(frozen=True)
class NamedQuery:
    """One file of `sql/analysis/`."""

    name: str
    about: str  # the opening comment, without its param lines
    params: dict[str, Param]
    sql: str

    def bind(self, given: Mapping[str, str]) -> dict[str, str]:
        """The values to run with: the given ones, checked, over the defaults."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            takes = ", ".join(self.params) or "none"
            raise QueryError(
                f"{self.name} has no parameter {', '.join(unknown)} (it takes: {takes})"
            )
        values = {name: p.default for name, p in self.params.items()}
        values |= {name: self.params[name].check(v) for name, v in given.items()}
        missing = [name for name, v in values.items() if v is None]
        if missing:
            raise QueryError(
                f"{self.name} needs --param {missing[0]}=… ({self.params[missing[0]].help})"
            )
        return {name: v for name, v in values.items() if v is not None}


def parse(name: str, text: str) -> NamedQuery:
    """A named query from its file's text; QueryError if it binds an undeclared parameter."""
    about, params = [], {}
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        match = _PARAM.match(line)
        if match:
            pname, ptype, default, help_ = match.groups()
            params[pname] = Param(pname, ptype, default, help_.strip())
        else:
            about.append(line.removeprefix("--").strip())
    for pname, ptype in _PLACEHOLDER.findall(text):
        declared = params.get(pname)
        if declared is None or declared.type != ptype:
            raise QueryError(f"{name}.sql binds {{{pname}:{ptype}}} without a matching param line")
    return NamedQuery(name, " ".join(about), params, text)


def catalogue(directory: Traversable = ANALYSIS_DIR) -> dict[str, NamedQuery]:
    """Every named query, by name."""
    return {_stem(p): parse(_stem(p), p.read_text()) for p in sql_files(directory)}


def load(name: str, directory: Traversable = ANALYSIS_DIR) -> NamedQuery:
    """One named query; QueryError naming the ones there are if there is no such file."""
    path = directory / f"{name}.sql"
    if not re.fullmatch(r"\w+", name) or not path.is_file():
        known = ", ".join(_stem(p) for p in sql_files(directory))
        raise QueryError(f"no query named {name!r}; there are: {known}")
    return parse(name, path.read_text())


def _stem(path: Traversable) -> str:
    return path.name.removesuffix(".sql")


def run(
    client: Client, query: NamedQuery, given: Mapping[str, str]
) -> tuple[list[str], list[list[Any]]]:
    """Column names and rows of the query with the given parameter values."""
    result = client.query(query.sql, parameters=query.bind(given))
    return list(result.column_names), [list(row) for row in result.result_rows]
