"""The two ceiling apps: the least an ASGI server can do per request, and the least Litestar can.

Both answer ``GET /`` with the same JSON body, shaped like a cached chat answer so the bytes on the wire are
comparable with the ragwatch variants. Served by ``uvicorn bench.apps:raw_app`` and
``uvicorn bench.apps:litestar_app``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
from litestar import Litestar, get

BODY: dict[str, Any] = {
    "answer": "Every employee gets twenty-five days of paid vacation per year. [1]",
    "citations": [
        {
            "document_id": "handbook",
            "chunk_id": "kb_bench:handbook:0",
            "title": "Handbook",
            "score": 1.0,
            "text": "Vacation policy. Every employee gets twenty-five days of paid vacation per year.",
        }
    ],
    "model": "extractive",
    "usage": {"input_tokens": 120, "output_tokens": 14},
    "trace_id": "0" * 32,
    "cached": True,
}
ENCODED = msgspec.json.encode(BODY)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ENCODED)).encode())]


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI callable: no routing, no parsing, a pre-encoded body."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": ENCODED})


@get("/", sync_to_thread=False)
def fixed() -> dict[str, Any]:
    """One route, encoded by Litestar on every request (as a real handler's return value is)."""
    return BODY


litestar_app = Litestar(route_handlers=[fixed], openapi_config=None, logging_config=None, debug=False)
