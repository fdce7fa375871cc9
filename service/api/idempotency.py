"""The ``Idempotency-Key`` request header, and the 201 answer that says when it replays an earlier result."""

from __future__ import annotations

from typing import Annotated, TypeVar

from litestar import Response
from litestar.params import HeaderParameter

from service.idempotency import MAX_KEY_LENGTH, Replayable

__all__ = ["IdempotencyKey", "created"]

T = TypeVar("T")

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "Any unique string (a UUID): a repeat within 24 h answers the first request's result "
            "(`Idempotent-Replayed: true`) without doing it again"
        ),
    ),
]


def created(outcome: Replayable[T]) -> Response[T]:
    """201 with the result, marked ``Idempotent-Replayed: true`` when it is an earlier request's."""
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return Response(outcome.value, status_code=201, headers=headers)
