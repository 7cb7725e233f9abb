"""Keys, roles and the rule that no SQL string carries a value: pure parts of api.security and
a scan of the sources."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from api.security import Caller, Keys
from dataflows.parse import ROUTES, Rejected
from swipeloop import topics
from swipeloop.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def caller(keys: Keys, token: str, loopback: bool = True) -> Caller:
    return Caller(keys.roles_of(token.encode()), loopback, "test")


def test_keys_give_roles_and_admin_includes_app() -> None:
    keys = Keys(Settings(app_keys=" a1 ,a2,,", admin_keys="root"))
    assert keys.app == (b"a1", b"a2")
    assert keys.roles_of(b"a2") == {"user", "app"}  # tokens off: an app key speaks for users
    assert keys.roles_of(b"root") == {"user", "app", "admin"}
    assert keys.roles_of(b"a") == set() and keys.roles_of(b"a1 ") == set()
    assert keys.roles_of(b"") == set()
    remote = caller(keys, "a1", loopback=False)
    assert keys.allows(remote, "app") and not keys.allows(remote, "admin")
    assert not keys.allows(caller(keys, "nope"), "app"), "keys configured: loopback needs one too"


def test_once_tokens_are_on_an_app_key_opens_uploads_only_and_nothing_is_loopback_open() -> None:
    tokens = Settings(jwt_secret="s" * 32, jwt_issuer="i", jwt_audience="a")
    keys = Keys(tokens.with_(app_keys="a1.b.c", admin_keys="root"))  # (a key with dots)
    assert keys.roles_of(b"a1.b.c") == {"app"}
    assert keys.roles_of(b"root") == {"user", "app", "admin"}
    assert not keys.allows(caller(keys, "", loopback=True), "user")
    bare = Keys(tokens)
    assert bare.configured("user") and not bare.configured("app")
    assert bare.allows(caller(bare, "", loopback=True), "app")  # no keys: uploads stay local


def test_without_keys_only_loopback_callers_get_in() -> None:
    keys = Keys(Settings())
    assert keys.allows(caller(keys, "", loopback=True), "admin")
    assert not keys.allows(caller(keys, "", loopback=False), "app")
    only_app = Keys(Settings(app_keys="a1"))
    assert only_app.allows(caller(only_app, "", loopback=True), "admin")  # admin still local
    assert not only_app.allows(caller(only_app, "", loopback=False), "admin")


def test_keys_stay_out_of_the_settings_repr() -> None:
    text = repr(Settings(app_keys="secret-app", admin_keys="secret-admin"))
    assert "secret" not in text


def test_events_with_a_clock_no_phone_has_are_dead_letters() -> None:
    """A stored event whose client time the API would have clamped did not come through the
    API; the flows reject it rather than fail to store it."""
    body = (
        b'{"event_id":"2b0e8b1e-1c7e-4c43-9d0e-7f4b0e2d1a11","user_id":"u","item_id":"i",'
        b'"kind":"watch","client_ts":"0265-01-01T00:00:00Z","session_id":"s","seq":0,'
        b'"received_at":"2026-11-28T00:00:00Z"}'
    )
    with pytest.raises(Rejected, match="plausible"):
        ROUTES[topics.EVENTS_CONTEXT].parse(body)
    item = (
        b'{"item_id":"v","creator_id":"c","duration_ms":1000,"created_at":"9999-01-01T00:00:00Z"}'
    )
    with pytest.raises(Rejected, match="outside"):
        ROUTES[topics.ITEMS].parse(item)


SQL = re.compile(r"\b(SELECT|INSERT|ALTER|DELETE|CREATE|DROP|WHERE|OPTIMIZE)\b")
# What an SQL string may have formatted in: identifiers the code chose, never a value.
# (`cold`, `where`, `_DLQ_MATCH`: fixed SQL clauses the code picks.)
# identifiers, and the one literal DDL cannot take as a parameter (a TTL's days, an int)
IDENTIFIERS = {
    "db", "table", "key", "cold", "where", "_DLQ_MATCH", "', '.join(COUNTERS)", "column",
    "int(days)",
}  # fmt: skip


def _formatted_parts(node: ast.AST) -> list[ast.AST] | None:
    """The interpolated expressions of an f-string or a string concatenation, if SQL."""
    if isinstance(node, ast.JoinedStr):
        text = "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
        parts: list[ast.AST] = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        pieces: list[Any] = []
        stack: list[ast.AST] = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
                stack += [n.left, n.right]
            else:
                pieces.append(n)
        text = " ".join(
            p.value for p in pieces if isinstance(p, ast.Constant) and isinstance(p.value, str)
        )
        parts = [p for p in pieces if not isinstance(p, ast.Constant)]
    else:
        return None
    return parts if SQL.search(text) else None


def test_no_sql_string_has_a_value_formatted_in() -> None:
    """Values travel as server-side parameters ({name:Type}); only identifiers are formatted."""
    offenders = []
    for package in ("swipeloop", "dataflows", "models", "api"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in (n for n in ast.walk(tree) if isinstance(n, ast.expr)):  # (has a line)
                for part in _formatted_parts(node) or []:
                    if ast.unparse(part) not in IDENTIFIERS:
                        offenders.append(
                            f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(part)}"
                        )
    assert not offenders, offenders
