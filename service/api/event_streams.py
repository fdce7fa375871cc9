"""OpenAPI for the routes that answer JSON or, when asked, a stream of Server-Sent Events."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema

__all__ = ["EVENT_STREAM", "EventStreamOperation"]

EVENT_STREAM = "text/event-stream"
_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    required=["data"],
    properties={
        "event": Schema(type=OpenAPIType.STRING, description="what the event is (`delta`, `done`, `error`)"),
        "data": Schema(type=OpenAPIType.STRING, description="a JSON object (OpenAI's stream ends with `[DONE]`)"),
    },
    description="One Server-Sent Event of the stream (`stream: true`)",
)
"""Before OpenAPI 3.2 (and its ``itemSchema``), the ``schema`` of an event stream describes each event."""


@dataclass
class EventStreamOperation(Operation):
    """The operation's 200 documents ``text/event-stream`` beside its JSON body: Litestar derives one media type
    a response, and a client (or a fuzzer) reading the document would otherwise take the stream for an error."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.content = {**(ok.content or {}), EVENT_STREAM: OpenAPIMediaType(schema=_EVENT)}
