"""A ClickHouse statement as tokens: enough of SQL to find a clause outside parentheses and a
table name outside strings and comments, and to splice text in at exact spans."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LEX = re.compile(
    r"""(?P<skip>\s+|--[^\n]*|/\*.*?\*/)
      |(?P<string>'(?:[^'\\]|\\.|'')*')
      |(?P<name>[A-Za-z_][A-Za-z0-9_$]*|`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
      |(?P<number>\d[\w.]*)
      |(?P<param>\{[^{}]*\})
      |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)


class Unexpected(ValueError):
    """The statement has not the shape its reader expected (the message says where)."""


@dataclass(frozen=True)
class Token:
    """One token: its text, where it lies in the statement, and how deep in parentheses."""

    text: str
    start: int
    end: int
    depth: int  # parentheses around it; a parenthesis itself counts as outside
    kind: str  # string, name, number, param or other

    @property
    def word(self) -> str:
        """The upper-cased bare word ('' for anything else: a keyword is never quoted)."""
        return self.text.upper() if self.kind == "name" and self.text[0] not in '`"' else ""


@dataclass(frozen=True)
class Ref:
    """A table named in a statement, `[database.]table`, spanning `start`:`end` of it."""

    database: str | None
    table: str
    start: int
    end: int


def lex(sql: str) -> list[Token]:
    """The tokens of `sql`, without whitespace and comments."""
    tokens, depth = [], 0
    for match in _LEX.finditer(sql):
        kind, text = match.lastgroup or "other", match.group()
        if kind == "skip":
            continue
        depth -= text == ")"
        tokens.append(Token(text, match.start(), match.end(), depth, kind))
        depth += text == "("
    return tokens


def skip(tokens: list[Token], at: int, *words: str) -> int:
    """Past `words` if they come at `at` (an optional clause such as IF EXISTS), else `at`."""
    found = [t.word for t in tokens[at : at + len(words)]]
    return at + len(words) if found == list(words) else at


def find(tokens: list[Token], start: int, *words: str) -> int | None:
    """Where `words` next come outside any parentheses, from `start` (None: nowhere)."""
    for i in range(start, len(tokens) - len(words) + 1):
        run = tokens[i : i + len(words)]
        if all(t.depth == 0 and t.word == w for t, w in zip(run, words, strict=True)):
            return i
    return None


def top(tokens: list[Token], start: int, *words: str) -> int:
    """Where `words` next come outside any parentheses, from `start`; Unexpected if nowhere."""
    found = find(tokens, start, *words)
    if found is None:
        raise Unexpected(f"no {' '.join(words)} where expected")
    return found


def closing(tokens: list[Token], at: int) -> int:
    """The parenthesis closing the one at `at`."""
    depth = tokens[at].depth
    for i in range(at + 1, len(tokens)):
        if tokens[i].text == ")" and tokens[i].depth == depth:
            return i
    raise Unexpected("a parenthesis never closed")


def name(tokens: list[Token], at: int) -> Ref:
    """The `[database.]table` at `at`; Unexpected if there is none."""
    if at >= len(tokens) or tokens[at].kind != "name":
        raise Unexpected("no name where expected")
    if at + 2 < len(tokens) and tokens[at + 1].text == "." and tokens[at + 2].kind == "name":
        first, last = tokens[at], tokens[at + 2]
        return Ref(_unquote(first.text), _unquote(last.text), first.start, last.end)
    return Ref(None, _unquote(tokens[at].text), tokens[at].start, tokens[at].end)


def after(tokens: list[Token], ref: Ref) -> int:
    """The index of the token after the name `ref` (len(tokens) at the end)."""
    return next((i for i, t in enumerate(tokens) if t.start >= ref.end), len(tokens))


def splice(sql: str, *edits: tuple[int, int, str]) -> str:
    """`sql` with each span start:end replaced by its text (spans must not overlap)."""
    for start, end, text in sorted(edits, reverse=True):
        sql = sql[:start] + text + sql[end:]
    return sql


def ident(text: str) -> str:
    """`text` as an identifier, back-quoted unless it is a plain one."""
    if _PLAIN.fullmatch(text):
        return text
    return "`" + text.replace("\\", "\\\\").replace("`", "\\`") + "`"


def literal(text: str) -> str:
    """`text` as a string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unquote(text: str) -> str:
    if text[0] not in '`"':
        return text
    quote = text[0]
    return re.sub(r"\\(.)", r"\1", text[1:-1].replace(quote * 2, quote))
