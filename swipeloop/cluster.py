"""ClickHouse on a cluster: each migration statement rewritten for `SWIPELOOP_CLICKHOUSE_CLUSTER`,
so the same SQL files serve one server and a sharded, replicated cluster.

On a cluster a table `t` becomes two: `t_local`, a Replicated*MergeTree on every replica of
every shard, and `t`, a Distributed table over them, sharded by a hash of the first ORDER BY
column (a key's rows, and so FINAL and merges, stay on one shard). Inserts and SELECTs name `t`
as on one server; DDL runs ON CLUSTER, mutations on `t_local` (a Distributed table takes none).
Every name the rewrite writes is qualified with the database: a host running ON CLUSTER DDL
resolves bare names (and `currentDatabase()`) in its own default database.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from swipeloop.sqltokens import (
    Ref,
    Token,
    Unexpected,
    after,
    closing,
    find,
    ident,
    lex,
    literal,
    name,
    skip,
    splice,
    top,
)

LOCAL = "_local"
# the Keeper path of a replicated table: each host's shard and database macros, so one
# statement ON CLUSTER makes the right replica everywhere
REPLICA_PATH = "/clickhouse/tables/{{shard}}/{{database}}/{table}"
_CLAUSES = frozenset({"PARTITION", "PRIMARY", "SAMPLE", "TTL", "SETTINGS", "COMMENT"})
_COLUMN_VERBS = frozenset({"ADD", "DROP", "MODIFY", "RENAME", "COMMENT"})


class UnsupportedStatement(ValueError):
    """A statement the cluster rewrite does not know: run as written it would change one
    server only (the message says which; teach `swipeloop.cluster` its shape)."""


@dataclass(frozen=True)
class Cluster:
    """Where DDL runs: a cluster of the servers' `remote_servers`, and the database on it."""

    name: str
    database: str


def named(cluster: str, database: str) -> Cluster | None:
    """The cluster `cluster` with `database` (None when `cluster` is empty: one server)."""
    return Cluster(cluster, database) if cluster else None


def of(client: Client, cluster: str) -> Cluster | None:
    """The cluster `cluster` with the client's database (None when `cluster` is empty)."""
    if not cluster:
        return None
    return Cluster(cluster, str(client.command("SELECT currentDatabase()")))


def on_cluster(statement: str, cluster: Cluster | None) -> str:
    """A mutation or DDL the app issues at run time (DELETE, ALTER ... DELETE, OPTIMIZE,
    TRUNCATE, CREATE DATABASE) as it runs on `cluster`: ON CLUSTER, on the local tables."""
    rewritten = rewrite(statement, cluster)
    if len(rewritten) != 1:
        raise UnsupportedStatement(f"not one statement on a cluster: {_head(statement)}")
    return rewritten[0]


def rewrite(statement: str, cluster: Cluster | None) -> list[str]:
    """One migration statement as it runs on `cluster` (unchanged without one): its tables as
    Replicated `_local` tables under Distributed ones, everything ON CLUSTER."""
    if cluster is None:
        return [statement]
    try:
        return _rewrite(statement, lex(statement), cluster)
    except (Unexpected, IndexError) as exc:  # IndexError: the statement ended too soon
        raise UnsupportedStatement(f"cannot read ({exc}): {_head(statement)}") from exc


def _rewrite(sql: str, tokens: list[Token], cluster: Cluster) -> list[str]:
    if find(tokens, 0, "ON", "CLUSTER") is not None:
        raise UnsupportedStatement(f"names its own cluster: {_head(sql)}")
    verb = tokens[0].word
    if verb in ("SELECT", "INSERT", "WITH"):  # they name the Distributed tables
        return [sql]
    kind = skip(tokens, 1, "OR", "REPLACE")
    if verb == "CREATE" and tokens[kind].word == "TABLE":
        return _create_table(sql, tokens, skip(tokens, kind + 1, "IF", "NOT", "EXISTS"), cluster)
    if verb == "CREATE" and tokens[kind].word in ("VIEW", "MATERIALIZED"):
        return _create_view(sql, tokens, kind, cluster)
    if verb == "CREATE" and tokens[kind].word == "DATABASE":
        ref = name(tokens, skip(tokens, kind + 1, "IF", "NOT", "EXISTS"))
        return [splice(sql, (ref.start, ref.end, ident(ref.table) + _on(cluster)))]
    if verb == "ALTER" and tokens[1].word == "TABLE":
        return _alter(sql, tokens, cluster)
    if verb == "DROP" and tokens[1].word in ("TABLE", "VIEW", "DICTIONARY", "DATABASE"):
        return _drop(sql, tokens, cluster)
    for words in (("DELETE", "FROM"), ("TRUNCATE", "TABLE"), ("TRUNCATE",), ("OPTIMIZE", "TABLE")):
        if [t.word for t in tokens[: len(words)]] == list(words):  # a mutation: each shard's rows
            ref = name(tokens, skip(tokens, len(words), "IF", "EXISTS"))
            return [splice(sql, (ref.start, ref.end, _local(ref, cluster)))]
    raise UnsupportedStatement(f"unknown on a cluster: {_head(sql)}")


def _create_table(sql: str, tokens: list[Token], at: int, cluster: Cluster) -> list[str]:
    """`t` as a Replicated `t_local` on every host, then `t` as a Distributed table over them."""
    ref = name(tokens, at)
    columns = after(tokens, ref)
    if tokens[columns].text != "(":
        raise UnsupportedStatement(f"a table without its column list: {_head(sql)}")
    engine = top(tokens, closing(tokens, columns), "ENGINE")
    family_at = engine + (2 if tokens[engine + 1].text == "=" else 1)
    family = tokens[family_at]
    if not family.text.endswith("MergeTree") or family.text.startswith(("Replicated", "Shared")):
        raise UnsupportedStatement(f"engine {family.text} on a cluster: {_head(sql)}")
    args, span = "", (family.end, family.end)  # the engine's own arguments, after the replica's
    if family_at + 1 < len(tokens) and tokens[family_at + 1].text == "(":
        close = tokens[closing(tokens, family_at + 1)]
        args = sql[tokens[family_at + 1].end : close.start].strip()
        span = (tokens[family_at + 1].start, close.end)
    local = ref.table + LOCAL
    replica = ", ".join(
        a for a in (literal(REPLICA_PATH.format(table=local)), "'{replica}'", args) if a
    )
    settings = find(tokens, engine, "SETTINGS") or len(tokens)
    renames = [  # the retry window the author sized, kept: replicated tables dedupe by token
        (t.start, t.end, "replicated_deduplication_window")
        for t in tokens[settings:]
        if t.depth == 0 and t.word == "NON_REPLICATED_DEDUPLICATION_WINDOW"
    ]
    replicated = splice(
        sql,
        (ref.start, ref.end, _local(ref, cluster)),
        (family.start, family.end, "Replicated" + family.text),
        (*span, f"({replica})"),
        *renames,
    )
    database = ref.database or cluster.database
    key = _sharding_key(sql, tokens, engine)
    over = ", ".join((literal(cluster.name), literal(database), literal(local), key))
    distributed = (
        f"{sql[: ref.start]}{_qualified(ref, cluster)}{_on(cluster)} "
        f"AS {_qualified(ref, cluster, LOCAL)} ENGINE = Distributed({over})"
    )
    return [replicated, distributed]


def _sharding_key(sql: str, tokens: list[Token], engine: int) -> str:
    """A hash of the first ORDER BY column (`rand()` for a table ordered by nothing)."""
    at = top(tokens, engine, "ORDER", "BY") + 2
    if tokens[at].word == "TUPLE" or tokens[at].text == "(":  # a tuple: its first element
        at += 2 if tokens[at].word == "TUPLE" else 1
        outside = tokens[at - 1].depth
        ends = (
            (t.text == "," and t.depth == outside + 1) or (t.text == ")" and t.depth == outside)
            for t in tokens[at:]
        )
    else:
        ends = (t.depth == 0 and t.word in _CLAUSES for t in tokens[at:])
    last = next((at + i for i, end in enumerate(ends) if end), len(tokens)) - 1
    if last < at:
        return "rand()"
    return f"cityHash64({sql[tokens[at].start : tokens[last].end]})"


def _create_view(sql: str, tokens: list[Token], at: int, cluster: Cluster) -> list[str]:
    """A view ON CLUSTER; a materialized one fires on each shard's inserts into its source's
    local table and writes to its target's local table on that shard (so the two must be
    sharded alike)."""
    materialized = tokens[at].word == "MATERIALIZED"
    ref = name(tokens, skip(tokens, at + (2 if materialized else 1), "IF", "NOT", "EXISTS"))
    edits = [(ref.start, ref.end, _qualified(ref, cluster) + _on(cluster))]
    if materialized:
        to = after(tokens, ref)
        if tokens[to].word != "TO":
            raise UnsupportedStatement(f"a materialized view without TO: {_head(sql)}")
        target = name(tokens, to + 1)
        source_at = top(tokens, top(tokens, after(tokens, target), "AS"), "FROM") + 1
        if tokens[source_at].text == "(":
            raise UnsupportedStatement(f"a materialized view over a subquery: {_head(sql)}")
        source = name(tokens, source_at)
        edits += [(r.start, r.end, _qualified(r, cluster, LOCAL)) for r in (target, source)]
    return [splice(sql, *edits)]


def _alter(sql: str, tokens: list[Token], cluster: Cluster) -> list[str]:
    """Column changes on both tables; anything else (mutations, TTL, indexes) on the local
    tables only."""
    ref = name(tokens, 2)
    first = after(tokens, ref)
    actions = [
        (t.word, tokens[i + 1].word if i + 1 < len(tokens) else "")
        for i, t in enumerate(tokens[first:], first)
        if i == first or (tokens[i - 1].text == "," and tokens[i - 1].depth == 0)
    ]
    columns = [verb in _COLUMN_VERBS and noun == "COLUMN" for verb, noun in actions]
    local = splice(sql, (ref.start, ref.end, _local(ref, cluster)))
    if not any(columns):
        return [local]
    if not all(columns):
        raise UnsupportedStatement(f"column and other changes at once: {_head(sql)}")
    distributed = splice(sql, (ref.start, ref.end, _qualified(ref, cluster) + _on(cluster)))
    # never a moment where the Distributed table has a column its local tables lack
    dropping = all(verb == "DROP" for verb, _ in actions)
    return [distributed, local] if dropping else [local, distributed]


def _drop(sql: str, tokens: list[Token], cluster: Cluster) -> list[str]:
    """Dropped everywhere, SYNC: a table created again at once reuses its Keeper path."""
    ref = name(tokens, skip(tokens, 2, "IF", "EXISTS"))
    sync = "" if any(t.word == "SYNC" for t in tokens) else " SYNC"
    if tokens[1].word == "DATABASE":
        return [splice(sql, (ref.start, ref.end, ident(ref.table) + _on(cluster))) + sync]
    dropped = [splice(sql, (ref.start, ref.end, _qualified(ref, cluster) + _on(cluster))) + sync]
    if tokens[1].word == "TABLE":  # the Distributed table first: nothing reads a dropped local
        dropped.append(splice(sql, (ref.start, ref.end, _local(ref, cluster))) + sync)
    return dropped


def _on(cluster: Cluster) -> str:
    return f" ON CLUSTER {ident(cluster.name)}"


def _local(ref: Ref, cluster: Cluster) -> str:
    return _qualified(ref, cluster, LOCAL) + _on(cluster)


def _qualified(ref: Ref, cluster: Cluster, suffix: str = "") -> str:
    return f"{ident(ref.database or cluster.database)}.{ident(ref.table + suffix)}"


def _head(sql: str) -> str:
    """The start of a statement, for a message."""
    return " ".join(sql.split())[:80]
