"""Every metric ragwatch records, created once per meter provider. ``docs/metrics.md`` is their catalogue.

Names become Prometheus names by the exporter's rules: dots turn into underscores, a counter gains
``_total`` and a unit of seconds gains ``_seconds`` (``rag_request_duration`` → ``rag_request_duration_seconds``).
Units in braces (``{token}``, ``{USD}``) are annotations and add no suffix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["ActiveTenants", "DependencyStatus", "Instruments", "RequestsInFlight", "TenantLabels", "TokenBudgetUsage"]

# Milliseconds to a second: cache lookups, vector and full-text queries.
FAST_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
# A request or an LLM call: tens of milliseconds to a minute and a half (the GenAI semantic conventions' buckets).
SLOW_BUCKETS_S = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]
COUNT_BUCKETS = [0, 1, 2, 3, 5, 10, 20, 50, 100]
ACTIVE_WINDOW_S = 300.0
PUBLISHED_COUNT_MAX_AGE_S = 120.0


class TenantLabels:
    """Bounds the tenant label: the first ``limit`` tenants a process sees keep their id, later ones are ``other``.

    A Prometheus series per tenant is what operators want for their biggest customers, but an unbounded label
    lets one client with many tenants grow the registry without limit.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, tenant_id: str) -> str:
        if tenant_id in self._known:
            return tenant_id
        with self._lock:
            if len(self._known) < self._limit:
                self._known.add(tenant_id)
                return tenant_id
        return "other"


class ActiveTenants:
    """Distinct tenants seen in the last five minutes.

    Alone, a process counts the tenants it saw itself. Replicas sharing Redis instead :meth:`publish` the
    count over all of them (see ``service.shared.activity``); a published count older than two minutes is not
    reported at all, rather than reported stale.
    """

    def __init__(self) -> None:
        self._last_seen: dict[str, float] = {}
        self._published: tuple[int, float] | None = None

    def seen(self, tenant_id: str) -> None:
        self._last_seen[tenant_id] = time.time()

    def recent(self) -> dict[str, float]:
        """Tenant → when this process last saw it (Unix seconds), for the last five minutes."""
        horizon = time.time() - ACTIVE_WINDOW_S
        for tenant_id, seen_at in list(self._last_seen.items()):
            if seen_at < horizon:
                self._last_seen.pop(tenant_id, None)
        return dict(self._last_seen)

    def publish(self, count: int) -> None:
        self._published = (count, time.monotonic())

    def observe(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._published is None:
            yield Observation(len(self.recent()))
            return
        count, published_at = self._published
        if time.monotonic() - published_at < PUBLISHED_COUNT_MAX_AGE_S:
            yield Observation(count)


class DependencyStatus:
    """Whether each dependency (``lancedb``, ``llm``, ``redis``) answered when last checked: 1 or 0."""

    def __init__(self) -> None:
        self._up: dict[str, int] = {}

    def set(self, dependency: str, up: bool) -> None:
        self._up[dependency] = int(up)

    def observe(self, _: CallbackOptions) -> Iterable[Observation]:
        for dependency, up in list(self._up.items()):
            yield Observation(up, {"dependency": dependency})


class RequestsInFlight:
    """The chat, search and ingestion requests admitted by load shedding (``service.admission``) and not yet
    finished, by action, and how many each process admits at once.

    An admission hands over its own live counts (:meth:`watch`), so the hot path changes a dictionary and
    nothing here: the gauges read them at collection time. Several apps on one meter provider are summed.
    """

    def __init__(self) -> None:
        self._watched: list[tuple[Mapping[str, int], int]] = []

    def watch(self, counts: Mapping[str, int], capacity: int) -> None:
        self._watched.append((counts, capacity))

    def observe_in_flight(self, _: CallbackOptions) -> Iterable[Observation]:
        totals: dict[str, int] = {}
        for counts, _capacity in list(self._watched):
            for action, count in list(counts.items()):
                totals[action] = totals.get(action, 0) + count
        for action, count in totals.items():
            yield Observation(count, {"action": action})

    def observe_capacity(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._watched:
            yield Observation(sum(capacity for _counts, capacity in list(self._watched)))


class TokenBudgetUsage:
    """Each tenant's LLM tokens of the current UTC day and its daily budget, as last counted by this process.

    Only the current day is reported: a tenant that made no call yet today has no series rather than
    yesterday's count. Replicas each report what Redis last told them (``max by (tenant)`` is the latest).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._usage: dict[str, tuple[int, int, int]] = {}
        self._clock = clock

    def set(self, tenant: str, day: int, used: int, budget: int) -> None:
        self._usage[tenant] = (day, used, budget)

    def _today(self) -> Iterable[tuple[str, int, int]]:
        today = int(self._clock() // 86_400)
        for tenant, (day, used, budget) in list(self._usage.items()):
            if day == today:
                yield tenant, used, budget

    def observe_used(self, _: CallbackOptions) -> Iterable[Observation]:
        for tenant, used, _budget in self._today():
            yield Observation(used, {"tenant": tenant})

    def observe_budget(self, _: CallbackOptions) -> Iterable[Observation]:
        for tenant, _used, budget in self._today():
            yield Observation(budget, {"tenant": tenant})


class Instruments:
    def __init__(self, meter: Meter, tenant_label_limit: int) -> None:
        self.tenant_label = TenantLabels(tenant_label_limit)
        self.active_tenants = ActiveTenants()
        self.dependencies = DependencyStatus()
        self.token_budgets = TokenBudgetUsage()
        self.requests_in_flight = RequestsInFlight()
        # --- the enterprise guide's names -------------------------------------------------------------------
        self.requests = meter.create_counter("rag_requests", description="HTTP requests by route and status")
        self.request_duration = meter.create_histogram(
            "rag_request_duration",
            unit="s",
            description="HTTP request duration by route",
            explicit_bucket_boundaries_advisory=SLOW_BUCKETS_S,
        )
        self.llm_calls = meter.create_counter("rag_llm_calls", description="LLM provider calls by outcome")
        self.llm_cost = meter.create_counter("rag_llm_cost", unit="{USD}", description="LLM spend in US dollars")
        meter.create_observable_gauge(
            "rag_tenant_tokens_used",
            callbacks=[self.token_budgets.observe_used],
            unit="{token}",
            description="LLM tokens a tenant with a daily budget has used today (UTC)",
        )
        meter.create_observable_gauge(
            "rag_tenant_token_budget",
            callbacks=[self.token_budgets.observe_budget],
            unit="{token}",
            description="LLM tokens a tenant may use per day (UTC)",
        )
        self.llm_circuit_open = meter.create_gauge(
            "rag_llm_circuit_open", description="1 while the provider's circuit is open (calls fail at once), else 0"
        )
        self.llm_retries = meter.create_counter(
            "rag_llm_retries", description="Retries of failed provider calls: made, or refused by the retry budget"
        )
        self.vector_db_queries = meter.create_counter(
            "rag_vector_db_queries", description="LanceDB queries by operation and outcome"
        )
        meter.create_observable_gauge(
            "rag_active_tenants", callbacks=[self.active_tenants.observe], description="Tenants seen in 5 minutes"
        )
        # --- OpenTelemetry semantic conventions -------------------------------------------------------------
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per LLM call, by token type",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of an LLM call",
            explicit_bucket_boundaries_advisory=SLOW_BUCKETS_S,
        )
        # --- ragwatch ----------------------------------------------------------------------------------------
        self.time_to_first_token = meter.create_histogram(
            "rag.llm.time_to_first_token",
            unit="s",
            description="Time from the LLM call to the first answer token (of a whole answer: the answer itself)",
            explicit_bucket_boundaries_advisory=SLOW_BUCKETS_S,
        )
        self.retrieval_duration = meter.create_histogram(
            "rag.retrieval.duration",
            unit="s",
            description="Hybrid retrieval (embed, search, fuse) duration",
            explicit_bucket_boundaries_advisory=FAST_BUCKETS_S,
        )
        self.retrieval_results = meter.create_histogram(
            "rag.retrieval.results",
            unit="{chunk}",
            description="Passages a retrieval returned",
            explicit_bucket_boundaries_advisory=COUNT_BUCKETS,
        )
        self.parsed_documents = meter.create_counter(
            "rag.ingest.parsed", description="Uploaded files parsed, by format and outcome (ok, or why refused)"
        )
        self.parse_duration = meter.create_histogram(
            "rag.ingest.parse.duration",
            unit="s",
            description="Time to detect and parse an uploaded file, by format",
            explicit_bucket_boundaries_advisory=SLOW_BUCKETS_S,
        )
        self.parsed_pages = meter.create_counter("rag.ingest.pages", description="PDF pages parsed")
        self.ingested_documents = meter.create_counter("rag.ingest.documents", description="Documents ingested")
        self.ingested_chunks = meter.create_counter("rag.ingest.chunks", description="Chunks written")
        self.ingested_bytes = meter.create_counter("rag.ingest.bytes", description="Document bytes ingested")
        self.tenant_cost = meter.create_counter(
            "rag.tenant.llm_cost", unit="{USD}", description="LLM spend per tenant (bounded tenant label)"
        )
        self.tenant_tokens = meter.create_counter(
            "rag.tenant.tokens", unit="{token}", description="LLM tokens per tenant (bounded tenant label)"
        )
        self.ratelimit_decisions = meter.create_counter(
            "rag.ratelimit.decisions", description="Rate-limit decisions by action and outcome"
        )
        self.requests_shed = meter.create_counter(
            "rag.requests.shed",
            unit="{request}",
            description="Chat, search and ingestion requests refused with 503 because the process was at capacity",
        )
        meter.create_observable_gauge(
            "rag.requests.in_flight",
            callbacks=[self.requests_in_flight.observe_in_flight],
            unit="{request}",
            description="Chat, search and ingestion requests admitted and not yet finished, by action",
        )
        meter.create_observable_gauge(
            "rag.requests.capacity",
            callbacks=[self.requests_in_flight.observe_capacity],
            unit="{request}",
            description="Chat, search and ingestion requests the process admits at once",
        )
        self.cache_lookups = meter.create_counter(
            "rag.cache.lookups", description="Cache lookups by cache and outcome (hit, miss, error)"
        )
        self.redis_errors = meter.create_counter(
            "rag.redis.errors", description="Redis commands that failed or were skipped while Redis was down"
        )
        meter.create_observable_gauge(
            "rag.dependency.up",
            callbacks=[self.dependencies.observe],
            description="1 when the dependency answered its last check, else 0",
        )
        self.export_failures = meter.create_counter(
            "rag.telemetry.export_failures",
            unit="{item}",
            description="Spans, metric points and log records that could not be exported",
        )
        self.traces_sampled = meter.create_counter(
            "rag.traces.sampled",
            unit="{trace}",
            description="Traces kept for export or dropped by the in-process sampler, by decision and reason",
        )

    def declare_model(self, operation: str, provider: str, model: str) -> None:
        """Start the series of a configured model at 0, so dashboards and rules see them from the first scrape."""
        self.llm_cost.add(0, {"provider": provider, "model": model})
        if operation == "chat":
            self.llm_calls.add(0, {"provider": provider, "model": model, "status": "ok"})
