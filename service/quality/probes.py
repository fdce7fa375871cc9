"""Golden-question probes: questions an admin expects a knowledge base to answer in a known way (a document
cited, a text said), kept in LanceDB's ``probes`` table and run on a schedule by
:mod:`~service.quality.runner`. Their last results live with the shared records (Redis when configured), so
every replica lists the same."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pyarrow as pa

from service.auth import Principal
from service.errors import BadRequest, NotFound, SharedStateUnavailable
from service.knowledge_bases import KnowledgeBases
from service.models import Probe, ProbeCreate, ProbeExpectation, ProbeList, ProbeResult
from service.shared.health import RedisUnavailable
from service.shared.records import Records
from service.store import Store, new_id, now
from service.store.filters import kb_filter, sql_literal
from service.store.writes import retried

__all__ = ["MAX_PROBES", "MAX_TENANT_PROBES", "PROBE_SCHEMA", "Probes", "StoredProbe"]

MAX_PROBES = 50
"""Probes per knowledge base: each run costs an answer (an LLM call with a provider)."""
MAX_TENANT_PROBES = 200
"""Probes per tenant, whatever its knowledge bases: they run outside every rate limit."""
RESULT_TTL_S = 30 * 86_400
_OPERATION = "probes"
_encode = msgspec.msgpack.Encoder().encode
_decode_result = msgspec.msgpack.Decoder(ProbeResult).decode

PROBE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("tenant_id", pa.string()),
        ("kb_id", pa.string()),
        ("question", pa.string()),
        ("expect_document_id", pa.string()),
        ("expect_contains", pa.string()),
        ("created_at", pa.string()),
    ]
)


class StoredProbe(msgspec.Struct, frozen=True):
    id: str
    tenant_id: str
    kb_id: str
    question: str
    expect_document_id: str | None
    expect_contains: str | None
    created_at: str

    def public(self, last: ProbeResult | None) -> Probe:
        expect = ProbeExpectation(document_id=self.expect_document_id, contains=self.expect_contains)
        return Probe(self.id, self.kb_id, self.question, expect, self.created_at, last)


class Probes:
    def __init__(self, knowledge_bases: KnowledgeBases, store: Store, records: Records) -> None:
        self._knowledge_bases = knowledge_bases
        self._store = store
        self._records = records
        self._table: Any = None

    async def create(self, principal: Principal, kb_id: str, data: ProbeCreate) -> Probe:
        if data.expect.document_id is None and data.expect.contains is None:
            raise BadRequest("A probe expects a cited document_id, a text it contains, or both.")
        await self._knowledge_bases.get(principal, kb_id)
        table = await self._probes()
        if await table.count_rows(kb_filter(principal.tenant_id, kb_id)) >= MAX_PROBES:
            raise BadRequest(f"A knowledge base has at most {MAX_PROBES} probes; delete one first.")
        if await table.count_rows(f"tenant_id = {sql_literal(principal.tenant_id)}") >= MAX_TENANT_PROBES:
            raise BadRequest(f"A tenant has at most {MAX_TENANT_PROBES} probes; delete one first.")
        probe = StoredProbe(
            id=new_id("probe"),
            tenant_id=principal.tenant_id,
            kb_id=kb_id,
            question=data.question.strip(),
            expect_document_id=data.expect.document_id,
            expect_contains=data.expect.contains,
            created_at=now(),
        )
        await retried(lambda: table.add(pa.Table.from_pylist([msgspec.to_builtins(probe)], schema=PROBE_SCHEMA)))
        return probe.public(None)

    async def list_all(self, principal: Principal, kb_id: str) -> ProbeList:
        await self._knowledge_bases.get(principal, kb_id)
        probes = await self.stored(kb_filter(principal.tenant_id, kb_id))
        return ProbeList([probe.public(await self.last_result(probe.id)) for probe in probes])

    async def delete(self, principal: Principal, kb_id: str, probe_id: str) -> None:
        await self._knowledge_bases.get(principal, kb_id)
        found = await self.stored(f"{kb_filter(principal.tenant_id, kb_id)} AND id = {_literal(probe_id)}")
        if not found:
            raise NotFound(f"No probe {probe_id!r} in knowledge base {kb_id!r}.")
        await self.forget(found[0])

    async def forget(self, probe: StoredProbe) -> None:
        table = await self._probes()
        await retried(lambda: table.delete(f"id = {sql_literal(probe.id)}"))
        with contextlib.suppress(RedisUnavailable):  # else the result expires by itself
            await self._records.delete(_OPERATION, _result_key(probe.id))

    async def stored(self, where: str | None = None) -> list[StoredProbe]:
        """Probes matching ``where`` (every tenant's when ``None``), oldest first."""
        table = await self._probes()
        query = table.query().where(where) if where else table.query()
        probes = [msgspec.convert(row, StoredProbe) for row in await query.to_list()]
        return sorted(probes, key=lambda probe: (probe.created_at, probe.id))

    async def last_result(self, probe_id: str) -> ProbeResult | None:
        try:
            value = await self._records.get(_OPERATION, _result_key(probe_id))
        except RedisUnavailable:
            raise SharedStateUnavailable("Probe results cannot be read while Redis is down.") from None
        return _decode_result(value) if value is not None else None

    async def keep_result(self, probe_id: str, result: ProbeResult) -> None:
        with contextlib.suppress(RedisUnavailable):  # the run is in its metrics and trace all the same
            await self._records.put(_OPERATION, _result_key(probe_id), _encode(result), RESULT_TTL_S)

    async def _probes(self) -> Any:
        if self._table is None:
            self._table = await self._store.table("probes", PROBE_SCHEMA)
        return self._table


def _literal(probe_id: str) -> str:
    try:
        return sql_literal(probe_id)
    except ValueError:
        raise NotFound(f"No probe {probe_id!r}.") from None


def _result_key(probe_id: str) -> str:
    return f"ragwatch:probe:{probe_id}"
