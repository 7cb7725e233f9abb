"""Domain errors, mapped to HTTP in one place."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import TooManyRequestsException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap

from swipeloop.analysis import QueryError


class TooLarge(ValueError):
    """More items in one batch than allowed (413)."""


class BrokerDown(RuntimeError):
    """The broker did not acknowledge in time (503 with Retry-After; nothing was accepted)."""


class StoreDown(RuntimeError):
    """ClickHouse did not answer (503 with Retry-After; the request may be repeated)."""


class Conflict(RuntimeError):
    """The request is valid but cannot be done in the current state (409)."""


class Problem(msgspec.Struct, frozen=True):
    """The body of every error response: the status, what is wrong and where."""

    status_code: int
    detail: str
    extra: Any = None


_MEANING = {
    400: "malformed request (e.g. a body that is not JSON)",
    401: "no valid key (Authorization: Bearer <key>)",
    403: "a key that does not hold this route's role",
    404: "no such resource",
    409: "valid, but not possible in the current state",
    413: "body or batch over its limit",
    422: "a body or parameter that does not match its contract: what is wrong and where",
    429: "over the key's rate limit (Retry-After says when to try again)",
    503: "a dependency did not answer in time (Retry-After)",
}


def documented(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI entries of the errors a route may answer."""
    return {
        code: ResponseSpec(data_container=Problem, description=_MEANING[code]) for code in codes
    }


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response({"status_code": status, "detail": detail}, status_code=status, headers=headers)


def invalid_request(_request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """A body or parameter that does not match its contract: 422, saying what and where
    (`Invalid enum value 'teleport' - at $.events[1].kind`)."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    where = [f"{p.get('message')} - at {_path(p)}" for p in problems if isinstance(p, dict)]
    return _json(422, "; ".join(where) or str(exc.detail))


def one_value_each(request: Request[Any, Any, Any]) -> None:
    """Every query parameter of this API takes one value: a repeated one is ambiguous (which
    `n` of `?n=5&n=50`?), so it is a 422 like any other bad parameter (fuzzing found
    `?n=abc&n=null` answered with the default)."""
    given = Counter(key for key, _ in request.query_params.multi_items())
    repeated = sorted(key for key, times in given.items() if times > 1)
    if repeated:
        raise ValidationException(
            detail="a query parameter given more than once",
            extra=[
                {"message": f"given {given[k]} times", "key": k, "source": "query"}
                for k in repeated
            ],
        )


def _path(problem: dict[str, Any]) -> str:
    """Where a problem is: `$.events[1].kind` in the body (`$` for the body itself), or the
    parameter's name."""
    key = str(problem.get("key"))
    if problem.get("source") != "body":
        return key
    return "$" if key == "data" else f"$.{key}"


def too_many(_request: Request[Any, Any, Any], exc: TooManyRequestsException) -> Response[Any]:
    """Over the key's rate limit: 429, and Retry-After when the window resets."""
    headers = dict(exc.headers or {})
    headers["Retry-After"] = str(max(1, int(headers.get("RateLimit-Reset", "1"))))
    return _json(429, "rate limit exceeded for this key", headers)


def too_large(_request: Request[Any, Any, Any], exc: TooLarge) -> Response[Any]:
    return _json(413, str(exc))


def broker_down(_request: Request[Any, Any, Any], exc: BrokerDown) -> Response[Any]:
    return _json(503, str(exc), {"Retry-After": "1"})


def store_down(_request: Request[Any, Any, Any], exc: StoreDown) -> Response[Any]:
    return _json(503, str(exc), {"Retry-After": "5"})


def conflict(_request: Request[Any, Any, Any], exc: Conflict) -> Response[Any]:
    return _json(409, str(exc))


def bad_query(_request: Request[Any, Any, Any], exc: QueryError) -> Response[Any]:
    return _json(400, str(exc))


HANDLERS: ExceptionHandlersMap = {
    ValidationException: invalid_request,
    TooManyRequestsException: too_many,
    TooLarge: too_large,
    BrokerDown: broker_down,
    StoreDown: store_down,
    Conflict: conflict,
    QueryError: bad_query,
}

# Exceptions that are the client's doing: answered, not logged (a flood of bad requests must
# not flood the log); anything else, a 503 included, is logged with its stack trace.
QUIET: set[int | type[Exception]] = {
    400,
    401,
    403,
    404,
    405,
    413,
    429,
    TooLarge,
    Conflict,
    QueryError,
}
