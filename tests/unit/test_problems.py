"""Errors become RFC 9457 problems: one body builder, one stable ``type`` per kind."""

from __future__ import annotations

import msgspec

from service.auth import AuthUnavailable
from service.errors import PROBLEM_BASE, BadRequest, ProviderTimeout, RagwatchError, RateLimited, problem


def every_error_kind() -> list[type[RagwatchError]]:
    kinds: list[type[RagwatchError]] = []
    pending = list(RagwatchError.__subclasses__())
    while pending:
        kind = pending.pop()
        kinds.append(kind)
        pending.extend(kind.__subclasses__())
    return kinds


def test_a_problem_carries_the_kinds_type_title_and_status_and_this_occurrences_detail() -> None:
    body = problem(BadRequest("The question is blank."))

    assert msgspec.structs.asdict(body) == {
        "type": PROBLEM_BASE + "invalid-request",
        "title": "The request is not valid",
        "status": 400,
        "detail": "The question is blank.",
    }


def test_every_error_kind_has_its_own_type_and_a_client_or_upstream_status() -> None:
    kinds = every_error_kind()

    assert AuthUnavailable in kinds
    slugs = [kind.slug for kind in kinds]
    assert len(slugs) == len(set(slugs))
    assert all(400 <= kind.status < 600 and kind.status != 500 for kind in kinds)


def test_headers_travel_with_the_error_not_in_its_body() -> None:
    error = RateLimited("The user per minute limit of 60 is reached.", headers={"Retry-After": "12"})

    assert error.headers == {"Retry-After": "12"}
    assert "Retry-After" not in msgspec.json.encode(problem(error)).decode()


def test_provider_errors_are_upstream_failures() -> None:
    assert problem(ProviderTimeout("slow")).status == 504
