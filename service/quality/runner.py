"""Runs the golden-question probes every ``RAGWATCH_PROBE_INTERVAL_S``: each through the real retrieval and
answer path (never the answer cache), as a trace of its own, kept out of the user-facing metrics and of every
tenant's rate limits (it does not go through the HTTP routes).

With replicas sharing Redis, one of them runs a round at a time: the one holding the lease
(``ragwatch:probes:lease``, renewed each round, lapsing after three intervals, at least 5 s, without one).
Only it reports ``rag_probe_success``; the others drop their series, so the gauge has one value per probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from service.auth import MEMBER, Principal
from service.chat import Chat, Question
from service.errors import NotFound, RagwatchError
from service.models import ChatResponse, ProbeResult
from service.quality.probes import Probes, StoredProbe
from service.shared.health import RedisUnavailable
from service.shared.records import Records
from service.store import now
from telemetry import Telemetry, probe_run, record_probe_run

__all__ = ["PROBE_USER", "ProbeRunner", "verdict"]

logger = logging.getLogger("ragwatch.probes")
PROBE_USER = "ragwatch-probe"
_LEASE = "ragwatch:probes:lease"


class ProbeRunner:
    def __init__(
        self, probes: Probes, chat: Chat, records: Records, telemetry: Telemetry, *, interval_s: float
    ) -> None:
        self._probes = probes
        self._chat = chat
        self._records = records
        self._telemetry = telemetry
        self._interval_s = interval_s
        self._holder = uuid.uuid4().hex.encode()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def aclose(self) -> None:
        """Stop, and give the lease up, so that another replica runs the next round (a rolling deploy does
        not leave the probes unrun until the lease lapses)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisUnavailable):
            await self._records.swap("probes", _LEASE, self._holder, None, 0)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_round()
            except Exception:
                logger.exception("a round of golden-question probes failed")
            await asyncio.sleep(self._interval_s)

    async def run_round(self) -> int:
        """Run every probe, if this process holds the lease; how many ran."""
        status = self._telemetry.quality.probes
        lease = await self._lease()
        if lease is None:  # Redis is down: nothing can be run alone safely; the last results stay reported
            return 0
        if not lease:
            status.keep_only(())
            return 0
        probes = await self._probes.stored()
        status.keep_only((probe.kb_id, probe.id) for probe in probes)
        for ran, probe in enumerate(probes):
            if ran and not await self._lease():  # renewed before each run: a long round keeps it, or stops
                return ran
            await self.run(probe)
        return len(probes)

    async def run(self, probe: StoredProbe) -> ProbeResult | None:
        """One run of ``probe``, its result kept; ``None`` when its knowledge base is gone (so is the probe)."""
        principal = Principal(probe.tenant_id, PROBE_USER, frozenset({MEMBER}))
        question = Question(probe.kb_id, probe.question, self._chat.default_top_k, probe=True)
        started = time.perf_counter()
        with probe_run(self._telemetry, probe_id=probe.id, kb_id=probe.kb_id, tenant_id=probe.tenant_id) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            try:
                result, detail = verdict(probe, await self._chat.answer(principal, question))
            except NotFound:
                await self._probes.forget(probe)
                return None
            except Exception as exc:
                result, detail = "error", _reason(exc)
            duration_s = time.perf_counter() - started
            record_probe_run(
                self._telemetry,
                span,
                kb_id=probe.kb_id,
                probe_id=probe.id,
                result=result,
                duration_s=duration_s,
                error_type=detail.split(":")[0] if result == "error" else None,
            )
        outcome = ProbeResult(result, now(), trace_id, round(duration_s, 4), detail)  # type: ignore[arg-type]
        await self._probes.keep_result(probe.id, outcome)
        return outcome

    async def _lease(self) -> bool | None:
        """Whether this process runs the probes now (always, alone; the lease holder, with Redis), renewing the
        lease; ``None`` when Redis cannot say."""
        ttl_s = max(5, round(3 * self._interval_s))
        try:
            holder = await self._records.claim("probes", _LEASE, self._holder, ttl_s)
            if holder is None:
                return True
            return holder == self._holder and await self._records.swap("probes", _LEASE, holder, holder, ttl_s)
        except RedisUnavailable:
            return None


def _reason(exc: Exception) -> str:
    """Why a run erred, as the tenant's admin may read it: the problem for the service's own errors, else
    only the kind of failure (its message may name internals; the trace has the rest)."""
    if isinstance(exc, RagwatchError):
        return f"{exc.slug}: {exc.detail}"
    return f"{type(exc).__name__}: see the run's trace"


def verdict(probe: StoredProbe, answer: ChatResponse) -> tuple[str, str]:
    """``pass`` when the expected document is cited and the expected text said, else ``fail`` and why."""
    problems = []
    cited = {citation.document_id for citation in answer.citations}
    if probe.expect_document_id is not None and probe.expect_document_id not in cited:
        problems.append(f"document {probe.expect_document_id!r} not cited")
    if probe.expect_contains is not None and probe.expect_contains.casefold() not in answer.answer.casefold():
        problems.append(f"the answer does not contain {probe.expect_contains!r}")
    return ("fail", "; ".join(problems)) if problems else ("pass", "")
