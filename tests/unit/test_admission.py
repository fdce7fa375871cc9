"""The admission middleware gives a request's slot back however the request ends, including the ends the app
does not answer itself: an error that escapes the route after its response started, and a cancelled request
(the server shutting down). The ordinary ends are tested over HTTP in tests/service/test_load_shedding.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar import get

from service.admission import Admission, AdmissionMiddleware, admitted_as
from telemetry import disabled_telemetry


@get("/v1/chat", opt=admitted_as("chat"), sync_to_thread=False)
def chat_route() -> None:
    """Only its ``opt`` is read: the middleware finds the route in the scope, as Litestar puts it there."""


@get("/health/live", sync_to_thread=False)
def health_route() -> None:
    """A route without the mark."""


def scope(route: Any) -> Any:
    return {"type": "http", "route_handler": route}


async def receive() -> Any:
    return {"type": "http.disconnect"}


async def send(_: Any) -> None:
    return None


async def test_a_request_whose_error_escapes_the_route_gives_its_slot_back() -> None:
    async def broken_stream(*_: Any) -> None:
        raise RuntimeError("the stream broke after its response started")

    admission = Admission(1, disabled_telemetry())
    with pytest.raises(RuntimeError):
        await AdmissionMiddleware(broken_stream, admission)(scope(chat_route), receive, send)

    assert admission.in_flight == 0


async def test_a_cancelled_request_gives_its_slot_back() -> None:
    started, never = asyncio.Event(), asyncio.Event()

    async def endless(*_: Any) -> None:
        started.set()
        await never.wait()

    admission = Admission(1, disabled_telemetry())
    request = asyncio.ensure_future(AdmissionMiddleware(endless, admission)(scope(chat_route), receive, send))
    await started.wait()
    assert admission.in_flight == 1
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    assert admission.in_flight == 0


async def test_routes_without_the_mark_take_no_slot_even_when_every_slot_is_taken() -> None:
    admission = Admission(1, disabled_telemetry())
    assert admission.enter("chat")
    seen: list[int] = []

    async def health(*_: Any) -> None:
        seen.append(admission.in_flight)

    await AdmissionMiddleware(health, admission)(scope(health_route), receive, send)

    assert seen == [1]
    assert not admission.enter("search")
