"""Settings: one typed object built once from the environment.

Every field of a section is read from ``RAGWATCH_<FIELD>`` (the ``openai`` section from the standard
``OPENAI_<FIELD>`` variables). A field typed :class:`Secret` may instead be given as ``<NAME>_FILE``, a path
to a file holding it, as Docker and Kubernetes mount secrets. Any invalid value stops start-up with a
:class:`SettingsError` whose message is one line naming the variable and what it expected.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = ["Secret", "Settings", "SettingsError", "load_settings"]

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
ALLOWED_JWT_ALGORITHMS = frozenset(
    {
        "HS256",
        "HS384",
        "HS512",
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
    }
)
MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_KEY_BITS = 2048
_EC_CURVE_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


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


class ServerSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    """Interface ``ragwatch serve`` binds to."""
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    """TCP port of the API."""
    max_body_bytes: PositiveInt = 10 * 1024 * 1024
    """Largest request body accepted; larger ones are refused with 413 from their Content-Length."""


class AuthSettings(msgspec.Struct, frozen=True):
    auth_mode: Literal["jwt", "dev"] = "jwt"
    """``jwt`` verifies bearer tokens; ``dev`` trusts ``X-Tenant-Id``/``X-User-Id`` headers (local use only)."""
    jwt_secret: Secret | None = None
    """Shared secret for HS* tokens (at least 32 bytes)."""
    jwt_public_key_file: str | None = None
    """PEM public key for RS*/PS*/ES* tokens."""
    jwt_jwks_url: str | None = None
    """JWKS endpoint for RS*/PS*/ES* tokens; keys are fetched by ``kid`` and cached."""
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    """Accepted algorithms, comma separated. The token header never widens this list."""
    jwt_issuer: str | None = None
    """Required ``iss`` claim, when set."""
    jwt_audience: str | None = None
    """Required ``aud`` claim, when set."""
    jwt_leeway_s: Annotated[int, msgspec.Meta(ge=0, le=300)] = 30
    """Clock skew tolerated on ``exp``/``nbf``/``iat``."""
    jwt_verified_cache_s: Annotated[int, msgspec.Meta(ge=0, le=300)] = 60
    """How long a verified token is trusted without checking its signature again (never past its ``exp``);
    0 verifies every request."""


class StorageSettings(msgspec.Struct, frozen=True):
    data_dir: str = "./data"
    """Local state directory; the embedded LanceDB lives in ``<data_dir>/lancedb``."""
    lancedb_uri: str | None = None
    """LanceDB location shared by replicas (``s3://bucket/path``, ``gs://...``); default: under ``data_dir``."""
    read_consistency_s: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    """How stale another process's writes may look to this one, in seconds (at most 1)."""
    ann_index_min_rows: PositiveInt = 50_000
    """Chunk count from which an ANN vector index is built; below it, search is exact."""


class ProviderSettings(msgspec.Struct, frozen=True):
    embedder: Literal["hashing", "openai"] = "hashing"
    """``hashing``: offline feature-hashing embedder; ``openai``: an OpenAI-compatible embeddings API."""
    llm: Literal["extractive", "openai"] = "extractive"
    """``extractive``: offline answerer built from retrieved sentences; ``openai``: a chat completions API."""
    llm_model: str = "gpt-4o-mini"
    """Chat model asked for when ``RAGWATCH_LLM=openai``."""
    embedding_model: str = "text-embedding-3-small"
    """Embedding model asked for when ``RAGWATCH_EMBEDDER=openai``."""
    embedding_dimensions: Annotated[int, msgspec.Meta(ge=8, le=8192)] = 384
    """Vector width: the hashing embedder's output, and the ``dimensions`` asked of the OpenAI API."""
    llm_timeout_s: PositiveFloat = 30.0
    """Timeout of one provider call, in seconds."""
    llm_max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    """Retries of a failed provider call (connection errors, 408, 429, 5xx) by the ``openai`` client."""
    llm_max_output_tokens: PositiveInt = 512
    """Upper bound on the tokens of one answer."""


class OpenAISettings(msgspec.Struct, frozen=True):
    api_key: Secret | None = None
    """``OPENAI_API_KEY``: key of the OpenAI-compatible provider."""
    base_url: str | None = None
    """``OPENAI_BASE_URL``: endpoint of an OpenAI-compatible provider (Azure, Gemini, Ollama, vLLM)."""


class RagSettings(msgspec.Struct, frozen=True):
    chunk_size: Annotated[int, msgspec.Meta(ge=100, le=20_000)] = 800
    """Target chunk length, in characters."""
    chunk_overlap: Annotated[int, msgspec.Meta(ge=0)] = 120
    """Characters repeated from the end of one chunk at the start of the next."""
    default_top_k: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5
    """Chunks retrieved for a chat when the request gives no ``top_k``."""
    min_similarity: Annotated[float, msgspec.Meta(ge=-1, le=1)] = 0.2
    """Vector hits less similar than this (cosine) are dropped before fusion, so off-topic questions find nothing.

    0.2 sits above what unrelated texts score with text-embedding-3 models (about 0.1-0.2) and above hash
    collisions of the offline embedder; passages sharing words with the question are found by full-text search.
    """


class RedisSettings(msgspec.Struct, frozen=True):
    redis_url: str = "memory://"
    """``redis://host:6379/0``, ``rediss://`` for TLS, or ``memory://``: in-process state for a single process."""
    redis_password: Secret | None = None
    """Password for the Redis URL (else taken from the URL itself)."""
    redis_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.25
    """Connect and command timeout: a slow Redis degrades the service instead of stalling it."""


class CacheSettings(msgspec.Struct, frozen=True):
    cache_embeddings_enabled: bool = True
    """Cache question embeddings by embedder model and text, so a repeated question is not embedded again."""
    cache_embeddings_ttl_s: PositiveInt = 86_400
    """Seconds a question embedding stays cached."""
    cache_retrieval_enabled: bool = True
    """Cache the passages retrieved for a question, until the knowledge base changes."""
    cache_retrieval_ttl_s: PositiveInt = 900
    """Seconds retrieved passages stay cached (a change to the knowledge base drops them at once)."""
    cache_answers_enabled: bool = True
    """Cache whole answers, so a repeated question is answered without an LLM call."""
    cache_answers_ttl_s: PositiveInt = 3_600
    """Seconds an answer stays cached (a change to the knowledge base drops it at once)."""
    cache_memory_max_entries: PositiveInt = 10_000
    """Entries the in-process cache of ``memory://`` holds before dropping the least recently used."""


class RateLimitSettings(msgspec.Struct, frozen=True):
    rate_limit_enabled: bool = True
    """Limit chat and ingestion requests per tenant and per user."""
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 60
    """Requests each user may make per minute, on chat and on ingestion each."""
    rate_limit_per_hour: Annotated[int, msgspec.Meta(ge=1)] = 1000
    """Requests each user may make per hour, on chat and on ingestion each."""
    rate_limit_tenant_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 600
    """Requests all users of one tenant may make together per minute, on chat and on ingestion each."""
    rate_limit_tenant_per_hour: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    """Requests all users of one tenant may make together per hour, on chat and on ingestion each."""
    rate_limit_overrides_file: str | None = None
    """JSON ``{"tenant": {"tenant_per_minute": 6000, "per_minute": 120}}``: limits for particular tenants."""
    rate_limit_failure_mode: Literal["open", "closed"] = "open"
    """When Redis fails: ``open`` lets requests through, ``closed`` refuses them with 503."""


class TelemetrySettings(msgspec.Struct, frozen=True):
    metrics_enabled: bool = True
    """Serve Prometheus metrics at ``/metrics``."""
    metrics_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    """Serve ``/metrics`` on this separate port instead of the API's, so API clients need not reach it."""
    metrics_tenant_limit: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 100
    """Tenants that get their own label in per-tenant metrics; later ones share the label ``other``."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""
    log_format: Literal["json", "text"] = "json"
    """``json``: one JSON object per line; ``text``: a readable line for local use."""
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
    telemetry: TelemetrySettings = msgspec.field(default_factory=TelemetrySettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    cache: CacheSettings = msgspec.field(default_factory=CacheSettings)
    limits: RateLimitSettings = msgspec.field(default_factory=RateLimitSettings)

    @property
    def lancedb_uri(self) -> str:
        return self.storage.lancedb_uri or str(Path(self.storage.data_dir) / "lancedb")


_SectionT = TypeVar("_SectionT", bound=msgspec.Struct)


def env_name(section: str, field: str) -> str:
    """The environment variable that sets ``field`` of ``section``."""
    prefix = "OPENAI_" if section == "openai" else "RAGWATCH_"
    return prefix + field.upper()


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build and validate the settings from ``environ`` (usually ``os.environ``)."""
    settings = Settings(
        server=_load_section("server", ServerSettings, environ),
        auth=_load_section("auth", AuthSettings, environ),
        storage=_load_section("storage", StorageSettings, environ),
        providers=_load_section("providers", ProviderSettings, environ),
        openai=_load_section("openai", OpenAISettings, environ),
        rag=_load_section("rag", RagSettings, environ),
        telemetry=_load_section("telemetry", TelemetrySettings, environ),
        redis=_load_section("redis", RedisSettings, environ),
        cache=_load_section("cache", CacheSettings, environ),
        limits=_load_section("limits", RateLimitSettings, environ),
    )
    _check_consistency(settings)
    return settings


def _load_section(section: str, cls: type[_SectionT], environ: Mapping[str, str]) -> _SectionT:
    values: dict[str, Any] = {}
    for info in msgspec.structs.fields(cls):
        name = env_name(section, info.name)
        if _is_secret(info.type):
            secret = _read_secret(name, environ)
            if secret is not None:
                values[info.name] = secret
            continue
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        values[info.name] = _convert(name, raw.strip(), info.type)
    return cls(**values)


def _convert(name: str, raw: str, annotation: Any) -> Any:
    value: Any = raw
    if typing.get_origin(annotation) is tuple:
        value = [item.strip() for item in raw.split(",") if item.strip()]
    try:
        converted = msgspec.convert(value, annotation, strict=False)
    except msgspec.ValidationError:
        raise SettingsError(f"{name}: expected {_expectation(annotation)}, got {raw!r}") from None
    if isinstance(converted, float) and not math.isfinite(converted):
        raise SettingsError(f"{name}: expected {_expectation(annotation)}, got {raw!r}")
    return converted


def _expectation(annotation: Any) -> str:
    """What a value of ``annotation`` looks like, in words: "an integer from 1 to 65535", "one of jwt, dev"."""
    metas: list[msgspec.Meta] = []
    if typing.get_origin(annotation) is Annotated:
        annotation, *extras = typing.get_args(annotation)
        metas = [extra for extra in extras if isinstance(extra, msgspec.Meta)]
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " or ".join(_expectation(arg) for arg in args)
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if typing.get_origin(annotation) is tuple:
        return "a comma-separated list"
    noun = {int: "an integer", float: "a number"}.get(annotation, "a value")
    bounds = [
        f"{symbol} {getattr(meta, attribute):g}"
        for meta in metas
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if getattr(meta, attribute) is not None
    ]
    return f"{noun} {' and '.join(bounds)}" if bounds else noun


def _is_secret(annotation: Any) -> bool:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return Secret in typing.get_args(annotation)
    return annotation is Secret


def _read_secret(name: str, environ: Mapping[str, str]) -> Secret | None:
    """The secret in ``name`` or in the file ``<name>_FILE`` names. Messages never hold the secret itself."""
    direct = environ.get(name)
    path = environ.get(f"{name}_FILE")
    if direct and path:
        raise SettingsError(f"{name}: set either {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {path!r} ({exc.strerror or type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise SettingsError(f"{name}_FILE: expected a UTF-8 text file, {path!r} is not") from None
        if not value:
            raise SettingsError(f"{name}_FILE: expected the secret in {path!r}, the file is empty")
        return Secret(value)
    return Secret(direct) if direct else None


def _check_consistency(settings: Settings) -> None:
    """Rules that span several fields; each failure names the variable to change."""
    auth = settings.auth
    unknown = sorted(set(auth.jwt_algorithms) - ALLOWED_JWT_ALGORITHMS)
    if unknown or not auth.jwt_algorithms:
        allowed = ", ".join(sorted(ALLOWED_JWT_ALGORITHMS))
        got = f", got {','.join(unknown)!r}" if unknown else ""
        raise SettingsError(f"RAGWATCH_JWT_ALGORITHMS: expected a comma-separated subset of {allowed}{got}")
    if auth.auth_mode == "jwt":
        _check_jwt_keys(auth)
    if settings.rag.chunk_overlap >= settings.rag.chunk_size // 2:
        raise SettingsError("RAGWATCH_CHUNK_OVERLAP: expected less than half of RAGWATCH_CHUNK_SIZE")
    uses_openai = "openai" in (settings.providers.llm, settings.providers.embedder)
    if uses_openai and settings.openai.api_key is None and settings.openai.base_url is None:
        raise SettingsError("OPENAI_API_KEY: required when RAGWATCH_LLM or RAGWATCH_EMBEDDER is openai")
    _check_redis_url(settings.redis.redis_url)


def _check_redis_url(url: str) -> None:
    """The URL is never echoed: it may hold a password."""
    expected = "RAGWATCH_REDIS_URL: expected redis://host:port/db, rediss://host:port/db or memory://"
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return
    try:
        port_is_valid = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_is_valid = False
    database = parts.path.strip("/")
    valid = parts.scheme in ("redis", "rediss") and bool(parts.hostname) and port_is_valid
    if not valid or not (database == "" or database.isdigit()):
        raise SettingsError(expected)


def _check_jwt_keys(auth: AuthSettings) -> None:
    uses_hmac = any(alg.startswith("HS") for alg in auth.jwt_algorithms)
    uses_public_key = any(not alg.startswith("HS") for alg in auth.jwt_algorithms)
    if uses_hmac:
        if auth.jwt_secret is None:
            raise SettingsError(
                "RAGWATCH_JWT_SECRET: required for HS* algorithms in RAGWATCH_JWT_ALGORITHMS "
                "(or set RAGWATCH_AUTH_MODE=dev for local use)"
            )
        # RFC 7518 3.2: an HMAC key at least as long as the hash; pyjwt refuses shorter ones at verify time.
        strongest = max((alg for alg in auth.jwt_algorithms if alg.startswith("HS")), key=lambda alg: int(alg[2:]))
        needed = max(MIN_HMAC_SECRET_BYTES, int(strongest[2:]) // 8)
        if len(auth.jwt_secret.reveal().encode()) < needed:
            raise SettingsError(f"RAGWATCH_JWT_SECRET: expected at least {needed} bytes for {strongest}")
    if uses_public_key and not (auth.jwt_public_key_file or auth.jwt_jwks_url):
        raise SettingsError(
            "RAGWATCH_JWT_PUBLIC_KEY_FILE: required (or RAGWATCH_JWT_JWKS_URL) for the asymmetric "
            "algorithms in RAGWATCH_JWT_ALGORITHMS"
        )
    if auth.jwt_public_key_file:
        _check_public_key(auth.jwt_public_key_file, auth.jwt_algorithms)
    if auth.jwt_jwks_url:
        url = urlsplit(auth.jwt_jwks_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise SettingsError(
                f"RAGWATCH_JWT_JWKS_URL: expected an http:// or https:// URL, got {auth.jwt_jwks_url!r}"
            )


def _check_public_key(path: str, algorithms: tuple[str, ...]) -> None:
    """The key file holds a PEM public key that serves at least one of the accepted asymmetric algorithms."""
    name = "RAGWATCH_JWT_PUBLIC_KEY_FILE"
    if not Path(path).is_file():
        raise SettingsError(f"{name}: no file at {path!r}")
    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {path!r} ({exc.strerror or type(exc).__name__})") from None
    except (ValueError, TypeError):
        raise SettingsError(f"{name}: expected a PEM public key in {path!r}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_KEY_BITS:
            raise SettingsError(f"{name}: expected an RSA key of at least {MIN_RSA_KEY_BITS} bits, got {key.key_size}")
        serves = {alg for alg in algorithms if alg[:2] in ("RS", "PS")}
    elif isinstance(key, ec.EllipticCurvePublicKey):
        serves = {alg for alg in algorithms if alg == _EC_CURVE_ALGORITHM.get(key.curve.name)}
    else:
        serves = set()
    if not serves and any(not alg.startswith("HS") for alg in algorithms):
        raise SettingsError(
            f"{name}: the key in {path!r} serves none of RAGWATCH_JWT_ALGORITHMS={','.join(algorithms)} "
            "(RSA keys serve RS*/PS*, P-256/P-384/P-521 keys ES256/ES384/ES512)"
        )
