"""Domain errors, mapped to HTTP in one place."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.types import ExceptionHandlersMap

from swipeloop.analysis import QueryError


class InvalidInput(ValueError):
    """The request body does not match the contract (422, says the field and its index)."""


class TooLarge(ValueError):
    """More items in one batch than allowed (413)."""


class BrokerDown(RuntimeError):
    """The broker did not acknowledge in time (503 with Retry-After; nothing was accepted)."""


class Conflict(RuntimeError):
    """The request is valid but cannot be done in the current state (409)."""


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response({"status_code": status, "detail": detail}, status_code=status, headers=headers)


def invalid_input(_request: Request[Any, Any, Any], exc: InvalidInput) -> Response[Any]:
    return _json(422, str(exc))


def too_large(_request: Request[Any, Any, Any], exc: TooLarge) -> Response[Any]:
    return _json(413, str(exc))


def broker_down(_request: Request[Any, Any, Any], exc: BrokerDown) -> Response[Any]:
    return _json(503, str(exc), {"Retry-After": "1"})


def conflict(_request: Request[Any, Any, Any], exc: Conflict) -> Response[Any]:
    return _json(409, str(exc))


def bad_query(_request: Request[Any, Any, Any], exc: QueryError) -> Response[Any]:
    return _json(400, str(exc))


HANDLERS: ExceptionHandlersMap = {
    InvalidInput: invalid_input,
    TooLarge: too_large,
    BrokerDown: broker_down,
    Conflict: conflict,
    QueryError: bad_query,
}
