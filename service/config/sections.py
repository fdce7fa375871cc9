"""The settings object: one frozen section per area, each field documented where it is declared.

A field's environment variable is its msgspec *encoded name*: each section names its fields with a prefix
(``RAGWATCH_CACHE_`` + ``EMBEDDINGS_TTL_S``), so code reads ``settings.cache.embeddings_ttl_s`` while the
variable stays ``RAGWATCH_CACHE_EMBEDDINGS_TTL_S``. The ``openai`` section reads the standard ``OPENAI_*``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import msgspec

__all__ = [
    "AuthSettings",
    "CacheSettings",
    "ConversationSettings",
    "OpenAISettings",
    "ParseSettings",
    "ProviderSettings",
    "QualitySettings",
    "RagSettings",
    "RateLimitSettings",
    "RedisSettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "StorageSettings",
    "TelemetrySettings",
]

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot start with."""


class Secret:
    """A value that is never printed back: its ``repr`` and ``str`` are masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def variables(prefix: str) -> Callable[[str], str]:
    """The ``rename`` of a section: field ``embeddings_ttl_s`` is read from ``<prefix>EMBEDDINGS_TTL_S``."""
    return lambda field: prefix + field.upper()


class ServerSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_")):
    host: str = "127.0.0.1"
    """Interface ``ragwatch serve`` binds to."""
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    """TCP port of the API."""
    max_body_bytes: PositiveInt = 10 * 1024 * 1024
    """Largest request body accepted; larger ones are refused with 413 from their Content-Length."""
    max_concurrent_requests: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 32
    """Chat, search and ingestion requests one process serves at once; one more is refused at once with 503
    ``overloaded`` and ``Retry-After`` rather than queued (health and metrics are never refused).

    Sized for one process with the offline answerer, which is CPU bound in one event loop: on a 2-core machine
    it answered about 21 uncached chats a second at 32 in flight (p99 2.6 s, half the 5.12 s latency objective)
    and fewer at 64 (16 a second, p95 5.8 s): past 32, waiting requests only add latency. With a remote LLM,
    where a chat mostly waits on the network, a process can take more; scale out with replicas first."""


class AuthSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_JWT_")):
    mode: Literal["jwt", "dev"] = msgspec.field(default="jwt", name="RAGWATCH_AUTH_MODE")
    """``jwt`` verifies bearer tokens; ``dev`` trusts ``X-Tenant-Id``/``X-User-Id`` headers (local use only)."""
    secret: Secret | None = None
    """Shared secret for HS* tokens (at least 32 bytes)."""
    public_key_file: str | None = None
    """PEM public key for RS*/PS*/ES* tokens."""
    jwks_url: str | None = None
    """JWKS endpoint for RS*/PS*/ES* tokens; keys are fetched by ``kid`` and cached."""
    jwks_cache_s: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 300
    """How long the key set fetched from ``jwks_url`` is used before it is fetched again (so how long a key the
    issuer withdraws may still verify tokens); while the JWKS cannot be fetched, the last set fetched stays in use."""
    jwks_cooldown_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30
    """Least time between two requests to ``jwks_url``, whatever the traffic: a token naming a ``kid`` the key set
    lacks (a rotated-in key, or a made-up one) triggers at most one refetch per this many seconds."""
    max_token_bytes: Annotated[int, msgspec.Meta(ge=1024, le=65_536)] = 16_384
    """Largest bearer token accepted; a larger one is refused (401) before any of it is decoded."""
    algorithms: tuple[str, ...] = ("HS256",)
    """Accepted algorithms, comma separated. The token header never widens this list."""
    issuer: str | None = None
    """Required ``iss`` claim, when set."""
    audience: str | None = None
    """Required ``aud`` claim, when set."""
    leeway_s: Annotated[int, msgspec.Meta(ge=0, le=300)] = 30
    """Clock skew tolerated on ``exp``/``nbf``/``iat``."""
    verified_cache_s: Annotated[int, msgspec.Meta(ge=0, le=300)] = 60
    """How long a verified token is trusted without checking its signature again (never past its ``exp``);
    0 verifies every request."""


class StorageSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_")):
    data_dir: str = "./data"
    """Local state directory; the embedded LanceDB lives in ``<data_dir>/lancedb``."""
    lancedb_uri: str | None = None
    """LanceDB location shared by replicas (``s3://bucket/path``, ``gs://...``); default: under ``data_dir``."""
    read_consistency_s: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    """How stale another process's writes may look to this one, in seconds (at most 1)."""
    ann_index_min_rows: PositiveInt = 50_000
    """Chunk count from which an ANN vector index is built; below it, search is exact."""
    cleanup_interval_s: Annotated[float, msgspec.Meta(ge=1, le=7 * 86_400)] = 1800.0
    """Deleted documents and knowledge bases, and the old chunks of replaced documents, leave the LanceDB
    directory within twice this many seconds (usually one interval and a few seconds): table versions older than
    it are removed, and deleted rows are rewritten out of the data files at most once per interval (which
    indexes the chunks table again). Keep it above the longest query: a read of a removed version fails."""


class ProviderSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_")):
    embedder: Literal["wordllama", "hashing", "openai"] = "wordllama"
    """``wordllama``: the offline semantic embedder shipped in the ``wordllama`` wheel; ``hashing``: offline
    feature hashing of words (what the tests use); ``openai``: an OpenAI-compatible embeddings API."""
    llm: Literal["extractive", "openai"] = "extractive"
    """``extractive``: offline answerer built from retrieved sentences; ``openai``: a chat completions API."""
    llm_model: str = "gpt-4o-mini"
    """Chat model asked for when ``RAGWATCH_LLM=openai``."""
    embedding_model: str = "text-embedding-3-small"
    """Embedding model asked for when ``RAGWATCH_EMBEDDER=openai``."""
    embedding_dimensions: Annotated[int, msgspec.Meta(ge=8, le=8192)] | None = None
    """Vector width: WordLlama's (64 to 256, default 256), the hashing embedder's (default 384), and the
    ``dimensions`` asked of the OpenAI API (default 384)."""
    llm_timeout_s: PositiveFloat = 30.0
    """Timeout of one provider call, in seconds."""
    llm_max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    """Retries of a failed provider call (connection errors, timeouts, 408, 409, 429, 5xx), each drawn from the
    retry budget (``RAGWATCH_LLM_RETRY_BUDGET``) and each admitted by the circuit breaker."""
    llm_retry_budget: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    """Retries may be at most this share of the provider calls of the last 10 s (plus 3), so that retries never
    multiply an outage's load on the provider; 0 leaves only those 3."""
    llm_breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    """Consecutive failed calls (connection errors, timeouts, 408, 409, 429, 5xx) after which the provider's
    circuit opens: calls then fail at once with 503 ``llm-provider-unavailable`` and ``Retry-After``. Chat and
    embeddings have a circuit each, per process."""
    llm_breaker_cooldown_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    """Seconds an open circuit stays open; then one trial call is let through, and its outcome closes the circuit
    or opens it for another cool-down."""
    llm_max_output_tokens: PositiveInt = 512
    """Upper bound on the tokens of one answer."""


class OpenAISettings(msgspec.Struct, frozen=True, rename=variables("OPENAI_")):
    api_key: Secret | None = None
    """``OPENAI_API_KEY``: key of the OpenAI-compatible provider."""
    base_url: str | None = None
    """``OPENAI_BASE_URL``: endpoint of an OpenAI-compatible provider (Azure, Gemini, Ollama, vLLM)."""


class RagSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_")):
    chunk_size: Annotated[int, msgspec.Meta(ge=100, le=20_000)] = 1600
    """Target chunk length, in characters (about 400 tokens). Chosen on SciFact's train queries: with 1,600
    rather than 800, nDCG@10 of full-text search alone went from 0.666 to 0.684, of the fused search from 0.695
    to 0.700."""
    chunk_overlap: Annotated[int, msgspec.Meta(ge=0)] = 200
    """Characters repeated from the end of one chunk at the start of the next."""
    default_top_k: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5
    """Chunks retrieved for a chat when the request gives no ``top_k``."""
    min_similarity: Annotated[float, msgspec.Meta(ge=-1, le=1)] | None = None
    """Vector hits less similar than this (cosine) are dropped before fusion, so off-topic questions find nothing.

    Default: the embedder's own (see ``service/providers``): 0.2 for text-embedding-3 models (unrelated texts
    score about 0.1-0.2) and the hashing embedder; WordLlama, whose unrelated texts score higher, its own.
    Passages sharing words with the question are found by full-text search whatever this is.
    """
    openai_sources: bool = True
    """Append a "Sources" list (titles, and pages where known) to answers of ``/v1/chat/completions``, for
    clients that show only the text."""
    lexical_weight: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.75
    """Weight of the full-text (BM25) score in the fused score, against ``1 -`` it for vector similarity; each
    normalised to 0..1 over its candidates. Tuned on SciFact's train queries (``make eval-tune``): 0.6 and 0.75
    tie on nDCG@10 (0.6996 and 0.6993), and 0.75 finds more of the relevant documents (Recall@100 0.937)."""


class ConversationSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_CONVERSATION_")):
    max_turns: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    """Turns a conversation keeps; the oldest go beyond it."""
    ttl_s: PositiveInt = 7 * 86_400
    """Seconds a conversation is kept after its last turn."""


class QualitySettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_")):
    feedback_ttl_s: PositiveInt = 86_400
    """Seconds after an answer during which feedback on it is accepted (its trace is remembered that long: one
    Redis key of about 200 bytes per answer, so answers per second times this many keys)."""
    probe_interval_s: Annotated[float, msgspec.Meta(ge=1)] = 300.0
    """Seconds between two runs of the golden-question probes."""
    probes_enabled: bool = True
    """Run the golden-question probes on their schedule (off: they are kept but not run)."""


class ParseSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_PARSE_")):
    max_pages: PositiveInt = 2_000
    """Pages a PDF may have; a longer one is refused (413)."""
    max_characters: PositiveInt = 5_000_000
    """Characters of text one document may yield once parsed; a larger one is refused (413)."""
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 60.0
    """Seconds a PDF, DOCX or HTML file may take to parse; its parser process is ended past that (422)."""
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    """Parser processes, each parsing one PDF, DOCX or HTML file at a time, started on first use."""
    max_memory_mb: Annotated[int, msgspec.Meta(ge=256, le=65_536)] = 2_048
    """Address space each parser process may use, in MiB: what a decompression bomb runs into."""


class RedisSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_REDIS_")):
    url: str = "memory://"
    """``redis://host:6379/0``, ``rediss://`` for TLS, or ``memory://``: in-process state for a single process."""
    password: Secret | None = None
    """Password for the Redis URL (else taken from the URL itself)."""
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.25
    """Connect and command timeout: a slow Redis degrades the service instead of stalling it."""


class CacheSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_CACHE_")):
    embeddings_enabled: bool = True
    """Cache question embeddings by embedder model and text, so a repeated question is not embedded again."""
    embeddings_ttl_s: PositiveInt = 86_400
    """Seconds a question embedding stays cached."""
    retrieval_enabled: bool = True
    """Cache the passages retrieved for a question, until the knowledge base changes."""
    retrieval_ttl_s: PositiveInt = 900
    """Seconds retrieved passages stay cached (a change to the knowledge base drops them at once)."""
    answers_enabled: bool = True
    """Cache whole answers, so a repeated question is answered without an LLM call."""
    answers_ttl_s: PositiveInt = 3_600
    """Seconds an answer stays cached (a change to the knowledge base drops it at once)."""
    memory_max_entries: PositiveInt = 10_000
    """Entries the in-process cache of ``memory://`` holds before dropping the least recently used."""


class RateLimitSettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_RATE_LIMIT_")):
    enabled: bool = True
    """Limit chat, search and ingestion requests per tenant and per user."""
    per_minute: PositiveInt = 60
    """Requests each user may make per minute, on chat and on ingestion each."""
    per_hour: PositiveInt = 1000
    """Requests each user may make per hour, on chat and on ingestion each."""
    tenant_per_minute: PositiveInt = 600
    """Requests all users of one tenant may make together per minute, on chat and on ingestion each."""
    tenant_per_hour: PositiveInt = 10_000
    """Requests all users of one tenant may make together per hour, on chat and on ingestion each."""
    overrides_file: str | None = None
    """JSON ``{"tenant": {"tenant_per_minute": 6000, "per_minute": 120, "token_budget_per_day": 2000000}}``:
    limits and token budgets for particular tenants."""
    failure_mode: Literal["open", "closed"] = "open"
    """When Redis fails: ``open`` lets requests through, ``closed`` refuses them with 503 (rate limits and
    token budgets alike)."""
    token_budget_per_day: PositiveInt | None = msgspec.field(default=None, name="RAGWATCH_TENANT_TOKEN_BUDGET_PER_DAY")
    """LLM tokens (input and output, chat and embeddings) each tenant may spend per UTC day on an
    OpenAI-compatible provider; beyond it, calls are refused with 429 ``budget-exceeded`` until 00:00 UTC.
    Unset: unlimited. Per tenant: ``token_budget_per_day`` in the overrides file."""


class TelemetrySettings(msgspec.Struct, frozen=True, rename=variables("RAGWATCH_")):
    metrics_enabled: bool = True
    """Serve Prometheus metrics at ``/metrics``."""
    metrics_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    """Serve ``/metrics`` on this separate port instead of the API's, so API clients need not reach it."""
    metrics_tenant_limit: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 100
    """Tenants that get their own label in per-tenant metrics; later ones share the label ``other``."""
    metrics_kb_limit: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 200
    """Knowledge bases that get their own ``kb`` label in the answer-quality metrics; later ones are ``other``."""
    trace_sample_share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    """Share of the ordinary traces exported (fast, successful, no sampled caller, not a probe); every error,
    slow, caller-sampled and probe trace is exported whatever this is. ``1``: every trace."""
    trace_slow_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    """A trace whose request took this long is always exported (as the collector's tail sampling keeps it)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""
    log_format: Literal["json", "text"] = "json"
    """``json``: one JSON object per line; ``text``: a readable line for local use."""
    access_log: Literal["auto", "stdout", "otlp", "off"] = "auto"
    """Where the one access-log record per request goes: ``auto`` over OTLP when logs are exported, else to
    stdout; ``stdout``, ``otlp`` or ``off`` choose. It never takes two paths."""
    capture_content: bool = False
    """Record questions and answers on GenAI spans (they may hold personal data)."""
    llm_prices_file: str | None = None
    """JSON file of USD per million tokens by model, ``{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}``.

    It overrides the built-in table model by model; a model in neither table costs nothing."""


class Settings(msgspec.Struct, frozen=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    providers: ProviderSettings = msgspec.field(default_factory=ProviderSettings)
    openai: OpenAISettings = msgspec.field(default_factory=OpenAISettings)
    rag: RagSettings = msgspec.field(default_factory=RagSettings)
    conversations: ConversationSettings = msgspec.field(default_factory=ConversationSettings)
    quality: QualitySettings = msgspec.field(default_factory=QualitySettings)
    parsing: ParseSettings = msgspec.field(default_factory=ParseSettings)
    telemetry: TelemetrySettings = msgspec.field(default_factory=TelemetrySettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    cache: CacheSettings = msgspec.field(default_factory=CacheSettings)
    limits: RateLimitSettings = msgspec.field(default_factory=RateLimitSettings)

    @property
    def lancedb_uri(self) -> str:
        return self.storage.lancedb_uri or str(Path(self.storage.data_dir) / "lancedb")
