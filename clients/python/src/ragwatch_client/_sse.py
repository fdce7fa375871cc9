"""A streamed answer's Server-Sent Events, read line by line into typed events, without I/O.

``/v1/chat`` streams ``delta`` events (``{text}``), then one ``done`` event, or an ``error`` event holding a
problem, which becomes the :class:`RagwatchError` it describes. Events of other names are skipped, so a
server that adds one breaks no client.
"""

from __future__ import annotations

import httpx
import msgspec

from ragwatch_client._errors import UnexpectedResponseError, error_for_problem
from ragwatch_client._models import AnswerDelta, AnswerDone, ChatEvent, Problem

__all__ = ["ChatEvents"]

_decode_delta = msgspec.json.Decoder(AnswerDelta).decode
_decode_done = msgspec.json.Decoder(AnswerDone).decode
_decode_problem = msgspec.json.Decoder(Problem).decode


class ChatEvents:
    """Feed it the lines of a ``text/event-stream`` response; it returns the chat events they complete.

    Follows the event stream format of the HTML standard: ``event:`` names an event, ``data:`` lines are
    joined with newlines, a blank line ends the event, lines starting with ``:`` are comments.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._name = ""
        self._data: list[str] = []
        self.done = False

    def feed(self, line: str) -> list[ChatEvent]:
        """The events ``line`` completes (none, or one)."""
        if line:
            self._field(line)
            return []
        name, data = self._name or "message", self._data
        self._name, self._data = "", []
        return self._event(name, "\n".join(data)) if data else []

    def end(self) -> list[ChatEvent]:
        """The last event, when the stream ended without a blank line after it; raises if no ``done`` came."""
        events = self.feed("")
        if not self.done:
            raise UnexpectedResponseError("The answer's stream ended before its 'done' event.")
        return events

    def _field(self, line: str) -> None:
        if line.startswith(":"):
            return
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)

    def _event(self, name: str, data: str) -> list[ChatEvent]:
        try:
            if name == "delta":
                return [_decode_delta(data)]
            if name == "done":
                self.done = True
                return [_decode_done(data)]
            if name == "error":
                problem = _decode_problem(data)
                raise error_for_problem(problem, problem.status or 500, self._response)
        except msgspec.MsgspecError as exc:
            raise UnexpectedResponseError(f"An event '{name}' the client cannot read: {exc}") from exc
        return []
