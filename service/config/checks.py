"""Rules that span several settings, and values that need more than a type to check (keys, URLs).

Each failure is a :class:`SettingsError` naming the variable to change.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from service.config.sections import AuthSettings, Settings, SettingsError

__all__ = ["ALLOWED_JWT_ALGORITHMS", "check_consistency"]

ALLOWED_JWT_ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_KEY_BITS = 2048
_EC_CURVE_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def check_consistency(settings: Settings) -> None:
    """Rules that span several fields; each failure names the variable to change."""
    auth = settings.auth
    unknown = sorted(set(auth.algorithms) - ALLOWED_JWT_ALGORITHMS)
    if unknown or not auth.algorithms:
        allowed = ", ".join(sorted(ALLOWED_JWT_ALGORITHMS))
        got = f", got {','.join(unknown)!r}" if unknown else ""
        raise SettingsError(f"RAGWATCH_JWT_ALGORITHMS: expected a comma-separated subset of {allowed}{got}")
    if auth.mode == "jwt":
        _check_jwt_keys(auth)
    if settings.rag.chunk_overlap >= settings.rag.chunk_size // 2:
        raise SettingsError("RAGWATCH_CHUNK_OVERLAP: expected less than half of RAGWATCH_CHUNK_SIZE")
    uses_openai = "openai" in (settings.providers.llm, settings.providers.embedder)
    if uses_openai and settings.openai.api_key is None and settings.openai.base_url is None:
        raise SettingsError("OPENAI_API_KEY: required when RAGWATCH_LLM or RAGWATCH_EMBEDDER is openai")
    width = settings.providers.embedding_dimensions
    if settings.providers.embedder == "wordllama" and width is not None and not 64 <= width <= 256:
        raise SettingsError(
            f"RAGWATCH_EMBEDDING_DIMENSIONS: WordLlama embeds 64 to 256 dimensions, got {width} "
            "(unset it for 256; a store created wider keeps narrower vectors)"
        )
    _check_redis_url(settings.redis.url)


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
    uses_hmac = any(alg.startswith("HS") for alg in auth.algorithms)
    uses_public_key = any(not alg.startswith("HS") for alg in auth.algorithms)
    if uses_hmac:
        if auth.secret is None:
            raise SettingsError(
                "RAGWATCH_JWT_SECRET: required for HS* algorithms in RAGWATCH_JWT_ALGORITHMS "
                "(or set RAGWATCH_AUTH_MODE=dev for local use)"
            )
        # RFC 7518 3.2: an HMAC key at least as long as the hash; pyjwt refuses shorter ones at verify time.
        strongest = max((alg for alg in auth.algorithms if alg.startswith("HS")), key=lambda alg: int(alg[2:]))
        needed = max(MIN_HMAC_SECRET_BYTES, int(strongest[2:]) // 8)
        if len(auth.secret.reveal().encode()) < needed:
            raise SettingsError(f"RAGWATCH_JWT_SECRET: expected at least {needed} bytes for {strongest}")
    if uses_public_key and not (auth.public_key_file or auth.jwks_url):
        raise SettingsError(
            "RAGWATCH_JWT_PUBLIC_KEY_FILE: required (or RAGWATCH_JWT_JWKS_URL) for the asymmetric "
            "algorithms in RAGWATCH_JWT_ALGORITHMS"
        )
    if auth.public_key_file:
        _check_public_key(auth.public_key_file, auth.algorithms)
    if auth.jwks_url:
        url = urlsplit(auth.jwks_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise SettingsError(f"RAGWATCH_JWT_JWKS_URL: expected an http:// or https:// URL, got {auth.jwks_url!r}")


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
