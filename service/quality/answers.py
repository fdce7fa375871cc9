"""Which tenant, knowledge base and user each answer's trace belongs to, so feedback can name the answer by
its trace id alone and land beside it.

Every chat answer is remembered (``RAGWATCH_FEEDBACK_TTL_S``, a day; in Redis when configured, so feedback
may reach any replica). Remembering costs the answer no wait and Redis little: the entries are written in the
background, at most one pipelined round trip every :data:`FLUSH_INTERVAL_S` however busy the process is, and
an entry still waiting is found in this process all the same (another replica sees it within that interval).
An entry lost to a Redis outage only means feedback on that answer is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec

from service.shared.health import RedisUnavailable
from service.shared.records import Records

__all__ = ["AnswerRef", "AnswerRegistry"]

logger = logging.getLogger("ragwatch.feedback")
_OPERATION = "answers"
FLUSH_INTERVAL_S = 0.05
_UNTRACED = "0" * 32


class AnswerRef(msgspec.Struct, array_like=True, frozen=True):
    tenant_id: str
    kb_id: str
    user_id: str
    span_id: str
    """The answer's span: the LLM call that made it, or the request's server span for a cached answer."""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(AnswerRef).decode


class AnswerRegistry:
    def __init__(self, records: Records, *, ttl_s: int) -> None:
        self._records = records
        self._ttl_s = ttl_s
        self._pending: dict[str, bytes] = {}
        self._writing: dict[str, bytes] = {}
        """The batch being written: still found here until Redis has it."""
        self._writer: asyncio.Task[None] | None = None

    def remember(self, trace_id: str, answer: AnswerRef) -> None:
        """Remember which answer ``trace_id`` is; written in the background. An untraced answer (telemetry off:
        its trace id is all zeros) names no answer, so it is not remembered."""
        if trace_id == _UNTRACED:
            return
        self._pending[_key(trace_id)] = _encode(answer)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def find(self, trace_id: str) -> AnswerRef | None:
        """The answer of ``trace_id``; one remembered by another replica a moment ago is waited for, once."""
        if trace_id == _UNTRACED:
            return None
        found = await self._find(trace_id)
        if found is None:
            await asyncio.sleep(2 * FLUSH_INTERVAL_S)
            found = await self._find(trace_id)
        return found

    async def _find(self, trace_id: str) -> AnswerRef | None:
        key = _key(trace_id)
        value = self._pending.get(key) or self._writing.get(key)
        if value is None:
            value = await self._records.get(_OPERATION, key)
        return _decode(value) if value is not None else None

    async def _write(self) -> None:
        while self._pending:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self._writing, self._pending = self._pending, {}
            try:
                await self._records.put_many(_OPERATION, self._writing, self._ttl_s)
            except RedisUnavailable:
                logger.debug("%d answers not remembered for feedback: Redis is down", len(self._writing))
            finally:
                self._writing = {}

    async def aclose(self) -> None:
        """Write what is still waiting."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer


def _key(trace_id: str) -> str:
    return f"ragwatch:answer:{trace_id}"
