"""Every error is a :class:`RagwatchError` of the subclass its status names, carrying the server's problem and
the request's trace id; a server out of reach is an :class:`APIConnectionError`. Both clients."""

from __future__ import annotations

import re
import time

import pytest
from ragwatch_client import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RagwatchError,
    RateLimitError,
)

from tests.clients.both import Api, collect, resolve
from tests.clients.conftest import Connect
from tests.support import PROBLEM_BASE, LiveServer, free_port, token

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def assert_problem(error: RagwatchError, status: int, slug: str) -> None:
    assert error.status == status
    assert error.type == PROBLEM_BASE + slug
    assert error.slug == slug
    assert error.title
    assert error.detail
    assert error.trace_id is not None
    assert TRACE_ID.match(error.trace_id)
    assert str(error) == f"{status} {error.title}: {error.detail}"


async def test_a_bad_token_is_an_authentication_error(connect: Connect) -> None:
    forged = token() + "x"

    with pytest.raises(AuthenticationError) as raised:
        await resolve(connect(bearer=forged).knowledge_bases.get("kb1"))

    assert_problem(raised.value, 401, "unauthenticated")
    assert forged not in str(raised.value)


async def test_no_token_at_all_is_an_authentication_error(connect: Connect) -> None:
    with pytest.raises(AuthenticationError) as raised:
        await collect(connect(bearer="").knowledge_bases.list())

    assert_problem(raised.value, 401, "unauthenticated")


async def test_a_member_doing_an_admins_action_is_a_permission_error(connect: Connect) -> None:
    member = connect(("member",), "bob")

    with pytest.raises(PermissionDeniedError) as raised:
        await resolve(member.knowledge_bases.create("not mine to make"))

    assert_problem(raised.value, 403, "forbidden")


async def test_an_unknown_knowledge_base_is_not_found(api: Api) -> None:
    with pytest.raises(NotFoundError) as raised:
        await resolve(api.knowledge_bases.get("kb-missing"))

    assert_problem(raised.value, 404, "not-found")
    assert "kb-missing" in raised.value.detail


async def test_an_id_that_is_not_an_id_never_reaches_another_route(api: Api, kb_id: str) -> None:
    """``../..`` is quoted into the path: the server sees one (unknown) document id, not a way up."""
    with pytest.raises(NotFoundError):
        await resolve(api.documents.get(kb_id, "../.."))
    assert (await resolve(api.knowledge_bases.get(kb_id))).document_count == 1


async def test_an_invalid_body_is_a_bad_request_listing_what_failed(api: Api, kb_id: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        await resolve(api.search(kb_id, "vacation", top_k=0))

    assert_problem(raised.value, 400, "invalid-request")
    assert [error["key"] for error in raised.value.errors] == ["top_k"]


async def test_blank_text_is_a_bad_request(api: Api, kb_id: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        await resolve(api.documents.create(kb_id, "Blank", "   "))

    assert_problem(raised.value, 400, "invalid-request")


async def test_a_body_past_the_servers_limit_is_payload_too_large(connect: Connect, tight_server: LiveServer) -> None:
    api = connect(url=tight_server.url, user="large")
    kb = await resolve(api.knowledge_bases.create("limits"))

    with pytest.raises(PayloadTooLargeError) as raised:
        await resolve(api.documents.create(kb.id, "Long", "vacation " * 1000))

    assert_problem(raised.value, 413, "payload-too-large")


async def test_a_rate_limit_past_the_longest_wait_is_raised_at_once_with_retry_after(
    connect: Connect, tight_server: LiveServer
) -> None:
    """The server asks for more than ``max_retry_wait`` (its hour window is full): no retry, no sleep."""
    api = connect(url=tight_server.url, user="busy", max_retry_wait=0.5)
    kb = await resolve(api.knowledge_bases.create("limits"))
    await resolve(api.search(kb.id, "vacation"))
    started = time.monotonic()

    with pytest.raises(RateLimitError) as raised:
        await resolve(api.search(kb.id, "vacation"))

    assert time.monotonic() - started < 0.5
    assert_problem(raised.value, 429, "rate-limited")
    assert raised.value.retry_after is not None
    assert raised.value.retry_after >= 1
    assert raised.value.response is not None
    assert raised.value.response.headers["retry-after"] == f"{raised.value.retry_after:.0f}"


async def test_a_server_out_of_reach_is_a_connection_error(connect: Connect) -> None:
    closed = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(APIConnectionError) as raised:
        await collect(connect(url=closed, max_retries=1).knowledge_bases.list())

    assert raised.value.status is None
    assert str(raised.value).startswith(f"Cannot reach {closed}/v1/knowledge-bases")
    assert isinstance(raised.value.__cause__, Exception)
