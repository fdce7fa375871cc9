"""The composition root: the one place that builds ragwatch's object graph from its settings.

``ragwatch serve``, each ``--workers`` worker and the tests all build the app from :func:`build_container`.
Building does no I/O (the Redis client connects on its first command, LanceDB in :meth:`Container.start`),
so the graph can be built and inspected, or started and used without an HTTP server, in a test.

Settings files (LLM prices, rate-limit overrides) are read here, so a broken one stops start-up with its
:class:`~service.config.SettingsError` before the server binds its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from service import __version__
from service.admission import Admission
from service.audit import Audit
from service.auth import Authenticator, DevHeaderAuthenticator, JWTAuthenticator
from service.cache import Cache
from service.chat import Answering, Chat, Retriever
from service.config import Settings
from service.conversations import Conversations
from service.documents import Documents, Uploads
from service.embeddings import Embeddings
from service.idempotency import Idempotency
from service.knowledge_bases import KnowledgeBases
from service.limits import RateLimiter, TokenBudgets, load_overrides
from service.openai_compat import Completions
from service.pricing import load_prices
from service.providers import Providers, build_providers, min_similarity
from service.quality.answers import AnswerRegistry
from service.quality.feedback import FeedbackService
from service.quality.probes import Probes
from service.quality.runner import ProbeRunner
from service.readiness import ReadinessChecks
from service.reindexing import Reindexing
from service.search import Search
from service.shared.state import SharedState, open_shared_state
from service.store import Store
from telemetry import Telemetry, TelemetryOptions, setup_telemetry

__all__ = ["Container", "build_container", "telemetry_options"]

logger = logging.getLogger("ragwatch")


@dataclass
class Container:
    """Everything one app serves with: the domain services its routes ask for, and what they are built on."""

    settings: Settings
    telemetry: Telemetry
    providers: Providers
    authenticator: Authenticator
    store: Store
    shared: SharedState
    cache: Cache
    limiter: RateLimiter | None
    """``None`` when ``RAGWATCH_RATE_LIMIT_ENABLED=false``."""
    admission: Admission
    """The process's slots for chat, search and ingestion requests (load shedding)."""
    knowledge_bases: KnowledgeBases
    documents: Documents
    chat: Chat
    conversations: Conversations
    answers: AnswerRegistry
    feedback: FeedbackService
    probes: Probes
    probe_runner: ProbeRunner | None
    """``None`` when ``RAGWATCH_PROBES_ENABLED=false``: probes are kept, not run."""
    search: Search
    reindexing: Reindexing
    completions: Completions
    retriever: Retriever
    """What chat and search retrieve with (``make eval-tune`` reads its candidates)."""
    readiness: ReadinessChecks
    audit: Audit
    """Writes the audit trail: one record per attempt at an admin action."""
    owns_telemetry: bool
    """Whether :meth:`aclose` shuts the telemetry down (it was built here rather than handed in)."""
    _monitor: asyncio.Task[None] | None = field(default=None, init=False)
    _started: bool = field(default=False, init=False)

    async def start(self) -> None:
        """Open LanceDB, start the shared state's background work and the readiness monitor.

        A container serves one start and one close: its Redis health, pending cache renewals and clients are
        those of one life (an app started again needs a new container). If starting fails, what was already
        built is closed before the error goes on.
        """
        if self._started:
            raise RuntimeError("a container is started once; build a new one (create_app) to start again")
        self._started = True
        telemetry = self.telemetry
        logger.info(
            "telemetry %s; OTLP export: %s",
            "on" if telemetry.enabled else "off (OTEL_SDK_DISABLED)",
            ", ".join(sorted(telemetry.otlp_signals)) or "none",
        )
        try:
            await self.store.open()
            await self.providers.start()
            self.shared.start()
            if self.probe_runner is not None:
                self.probe_runner.start()
            self._monitor = asyncio.get_running_loop().create_task(self.readiness.monitor())
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop the background work and close every client; each step runs even if an earlier one failed."""
        async with contextlib.AsyncExitStack() as stack:
            if self.owns_telemetry:
                stack.callback(self.telemetry.shutdown)
            stack.push_async_callback(self.shared.aclose)
            stack.push_async_callback(self.providers.aclose)
            stack.push_async_callback(self.store.close)
            stack.push_async_callback(self.documents.aclose)
            stack.push_async_callback(self.cache.aclose)
            stack.push_async_callback(self.answers.aclose)
            if self.probe_runner is not None:
                stack.push_async_callback(self.probe_runner.aclose)
            if self._monitor is not None:
                stack.push_async_callback(_cancelled, self._monitor)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def build_container(
    settings: Settings, *, telemetry: Telemetry | None = None, providers: Providers | None = None
) -> Container:
    """The object graph for ``settings``.

    ``telemetry`` defaults to one built from the ``OTEL_*`` variables and shut down with the container (a
    caller that passes its own shuts it down itself); ``providers`` to the ones the settings choose.
    """
    prices = load_prices(settings.telemetry.llm_prices_file)
    overrides = load_overrides(settings.limits.overrides_file)
    owns_telemetry = telemetry is None
    observed = telemetry or setup_telemetry(telemetry_options(settings))
    chosen = providers or build_providers(settings, observed)
    store = Store(
        settings.lancedb_uri,
        dimensions=chosen.embedder.dimensions,
        read_consistency_s=settings.storage.read_consistency_s,
        ann_index_min_rows=settings.storage.ann_index_min_rows,
        cleanup_interval_s=settings.storage.cleanup_interval_s,
        telemetry=observed,
    )
    shared = open_shared_state(settings, observed)
    cache = Cache(shared.cache, settings.cache, shared.health, observed, settle_s=settings.storage.read_consistency_s)
    limiter = (
        RateLimiter(shared.counters, settings.limits, overrides, observed, shared.health)
        if settings.limits.enabled
        else None
    )
    budgets = TokenBudgets(shared.ledger, settings.limits, overrides, observed, shared.health)
    embeddings = Embeddings(chosen.embedder, observed, prices, budgets)
    idempotency = Idempotency(shared.records)
    knowledge_bases = KnowledgeBases(
        store, cache, idempotency, embeddings.model, fresh_for_s=settings.storage.read_consistency_s
    )
    rag = settings.rag
    retriever = Retriever(
        store, embeddings, cache, observed, min_similarity=min_similarity(settings), lexical_weight=rag.lexical_weight
    )
    answering = Answering(
        chosen.answerer,
        cache,
        observed,
        prices,
        embedding_model=embeddings.model,
        retrieval=retriever.version,
        budgets=budgets,
    )
    conversations = Conversations(
        shared.records, max_turns=settings.conversations.max_turns, ttl_s=settings.conversations.ttl_s
    )
    answers = AnswerRegistry(shared.answers, ttl_s=settings.quality.feedback_ttl_s)
    probes = Probes(knowledge_bases, store, shared.records)
    chat = Chat(
        knowledge_bases,
        retriever,
        answering,
        conversations,
        answers=answers,
        telemetry=observed,
        default_top_k=rag.default_top_k,
    )
    return Container(
        settings=settings,
        telemetry=observed,
        providers=chosen,
        authenticator=build_authenticator(settings),
        store=store,
        shared=shared,
        cache=cache,
        limiter=limiter,
        admission=Admission(settings.server.max_concurrent_requests, observed),
        knowledge_bases=knowledge_bases,
        documents=Documents(
            knowledge_bases,
            store,
            embeddings,
            cache,
            Uploads(settings.parsing, observed),
            idempotency=idempotency,
            settings=rag,
            telemetry=observed,
        ),
        chat=chat,
        conversations=conversations,
        answers=answers,
        feedback=FeedbackService(answers, shared.answers, store, observed, ttl_s=settings.quality.feedback_ttl_s),
        probes=probes,
        probe_runner=(
            ProbeRunner(probes, chat, shared.records, observed, interval_s=settings.quality.probe_interval_s)
            if settings.quality.probes_enabled
            else None
        ),
        completions=Completions(knowledge_bases, chat, sources=rag.openai_sources),
        search=Search(knowledge_bases, retriever, default_top_k=rag.default_top_k),
        reindexing=Reindexing(knowledge_bases, store, embeddings, cache, observed),
        retriever=retriever,
        readiness=ReadinessChecks(store, shared, settings, observed),
        audit=Audit(),
        owns_telemetry=owns_telemetry,
    )


def build_authenticator(settings: Settings) -> Authenticator:
    if settings.auth.mode == "dev":
        logger.warning(
            "RAGWATCH_AUTH_MODE=dev: trusting X-Tenant-Id/X-User-Id headers without a token; never expose this"
        )
        return DevHeaderAuthenticator()
    return JWTAuthenticator(settings.auth)


def telemetry_options(settings: Settings) -> TelemetryOptions:
    return TelemetryOptions(
        service_version=__version__,
        metrics_enabled=settings.telemetry.metrics_enabled,
        capture_content=settings.telemetry.capture_content,
        tenant_label_limit=settings.telemetry.metrics_tenant_limit,
        kb_label_limit=settings.telemetry.metrics_kb_limit,
        trace_sample_share=settings.telemetry.trace_sample_share,
        trace_slow_s=settings.telemetry.trace_slow_s,
    )
