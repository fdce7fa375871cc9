"""Who is calling: JWT bearer tokens (or, in dev mode only, trusted headers) and role guards.

Tokens are verified with key objects loaded once at start, each bound to its algorithm (pyjwt's
``PyJWK``), so the ``alg`` a token announces can only pick among the keys we configured and never
changes how a key is used: an HS256 token signed with our RSA public key, or ``alg: none``, is refused.
A token longer than ``max_token_bytes`` is refused before anything else is done with it. Of the header, only
``alg`` and ``kid`` are read (``kid`` only to pick among the issuer's keys, see :mod:`service.jwks`): a ``jku``,
``x5u``, ``jwk`` or ``x5c`` a token carries is never fetched nor trusted, and an unknown ``crit`` is refused.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import jwt
import msgspec
from cachetools import TLRUCache
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.config import AuthSettings
from service.errors import Forbidden, Unauthorized
from service.jwks import AuthUnavailable, JwksKeys, UnknownKey
from service.models import ID_PATTERN
from telemetry import Telemetry, stage, update_request

__all__ = [
    "ADMIN",
    "ADMINS_ONLY",
    "MEMBER",
    "MEMBERS_ONLY",
    "ROLE",
    "AuthUnavailable",
    "Authenticator",
    "DevHeaderAuthenticator",
    "Guard",
    "JWTAuthenticator",
    "Principal",
    "authentication_guard",
    "mint_token",
]

ADMIN = "admin"
MEMBER = "member"
_ID = re.compile(ID_PATTERN)
# Identity providers use subjects such as "auth0|abc123" or e-mail addresses; the user id never reaches a
# LanceDB filter, so any printable text of sensible length is accepted.
_SUBJECT = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_HMAC = {"HS256", "HS384", "HS512"}
_JWKS_TIMEOUT_S = 5.0
_VERIFIED_TOKENS_KEPT = 10_000


class Principal(msgspec.Struct, frozen=True):
    tenant_id: str
    user_id: str
    roles: frozenset[str]


class Authenticator(Protocol):
    def recognise(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
        """The caller, when ``connection`` carries a token verified recently (nothing to do); else ``None``."""
        ...

    async def identify(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        """The caller of ``connection``, or :class:`Unauthorized`."""
        ...


class JWTAuthenticator:
    """Verifies a bearer token and returns the caller, or raises :class:`Unauthorized`."""

    def __init__(self, settings: AuthSettings) -> None:
        self._algorithms = list(settings.algorithms)
        self._keys = _static_keys(settings)
        self._jwks = (
            JwksKeys(
                settings.jwks_url,
                cache_s=settings.jwks_cache_s,
                cooldown_s=settings.jwks_cooldown_s,
                timeout_s=_JWKS_TIMEOUT_S,
            )
            if settings.jwks_url
            else None
        )
        self._max_token_bytes = settings.max_token_bytes
        self._issuer = settings.issuer
        self._audience = settings.audience
        self._leeway = settings.leeway_s
        self._options: jwt.types.Options = {
            "require": ["exp", "sub"],
            "verify_aud": settings.audience is not None,
            "verify_iss": settings.issuer is not None,
            "enforce_minimum_key_length": True,
        }
        # Clients send the same token for many requests: verifying it once per ``jwt_verified_cache_s`` saves
        # parsing, the signature check and the claim checks on every request after the first. An entry never
        # outlives the token (``exp`` plus the leeway), so an expired token is refused exactly as before.
        self._trust_for_s = settings.verified_cache_s
        self._verified: TLRUCache[str, tuple[Principal, float]] = TLRUCache(
            maxsize=_VERIFIED_TOKENS_KEPT, ttu=_trusted_until, timer=time.monotonic
        )

    def recognise(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or len(token) > self._max_token_bytes:
            return None  # an oversized token is not even looked up: identify refuses it
        verified = self._verified.get(token.strip())
        return verified[0] if verified is not None else None

    async def identify(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            # RFC 6750 3.1: no error code when the request carries no token at all.
            raise Unauthorized("Send Authorization: Bearer <token>.", challenge='Bearer realm="ragwatch"')
        self._check_size(token)
        return await self.authenticate(token.strip())

    def _check_size(self, token: str) -> None:
        """Refuse a token longer than the limit, from its length alone: ASGI headers are bytes decoded as latin-1,
        so a header's characters are its bytes."""
        if len(token) > self._max_token_bytes:
            raise Unauthorized(f"The token is longer than {self._max_token_bytes} bytes.")

    async def authenticate(self, token: str) -> Principal:
        self._check_size(token)
        verified = self._verified.get(token)
        if verified is not None:
            return verified[0]
        key = await self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The token is not valid: {_reason(exc)}") from None
        if isinstance(claims["exp"], bool) or not isinstance(claims["exp"], int | float):
            # pyjwt reads "exp": "1767225600" as a number; RFC 7519 wants one, and so does the cache below.
            raise Unauthorized("The token's exp claim is not a number.")
        principal = _principal(claims)
        if self._trust_for_s:
            valid_for_s = claims["exp"] + self._leeway - time.time()
            self._verified[token] = (principal, min(self._trust_for_s, valid_for_s))
        return principal

    async def _key_for(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("The token is malformed.") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise Unauthorized("The token's algorithm is not accepted.")
        if algorithm in self._keys:
            return self._keys[algorithm]
        if self._jwks is not None and algorithm not in _HMAC:
            return await self._jwks_key(self._jwks, header.get("kid"))
        raise Unauthorized("No key is configured for the token's algorithm.")

    async def _jwks_key(self, jwks: JwksKeys, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("The token has no kid header naming its signing key.")
        try:
            return await jwks.key(kid)
        except UnknownKey:
            raise Unauthorized("The token's kid names no key of the issuer.") from None


def _trusted_until(_token: str, verified: tuple[Principal, float], now: float) -> float:
    """When a verified token's cache entry expires (``TLRUCache`` asks when it stores the entry)."""
    return now + verified[1]


def _static_keys(settings: AuthSettings) -> dict[str, jwt.PyJWK]:
    keys: dict[str, jwt.PyJWK] = {}
    if settings.secret is not None:
        secret = base64.urlsafe_b64encode(settings.secret.reveal().encode()).rstrip(b"=").decode()
        for algorithm in _HMAC & set(settings.algorithms):
            keys[algorithm] = jwt.PyJWK({"kty": "oct", "k": secret}, algorithm=algorithm)
    if settings.public_key_file:
        with open(settings.public_key_file, "rb") as handle:
            public_key = load_pem_public_key(handle.read())
        for algorithm in set(settings.algorithms) - _HMAC:
            algo = jwt.get_algorithm_by_name(algorithm)
            try:
                jwk = algo.to_jwk(public_key, as_dict=True)
            except (TypeError, ValueError, jwt.InvalidKeyError):
                continue  # an RSA key cannot serve ES256, and the other way round
            keys[algorithm] = jwt.PyJWK(jwk, algorithm=algorithm)
    return keys


def _principal(claims: dict[str, Any]) -> Principal:
    tenant_id, user_id, roles = claims.get("tenant_id"), claims.get("sub"), claims.get("roles")
    if not isinstance(tenant_id, str) or not _ID.fullmatch(tenant_id):
        raise Unauthorized("The token has no valid tenant_id claim.")
    if not isinstance(user_id, str) or not _SUBJECT.fullmatch(user_id):
        raise Unauthorized("The token has no valid sub claim.")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Unauthorized("The token has no valid roles claim (a list of strings).")
    return Principal(tenant_id=tenant_id, user_id=user_id, roles=frozenset(roles))


def _reason(exc: jwt.PyJWTError) -> str:
    return str(exc).rstrip(".") or type(exc).__name__


class DevHeaderAuthenticator:
    """Trusts ``X-Tenant-Id``/``X-User-Id`` (and ``X-Roles``, default both roles). Only for ``AUTH_MODE=dev``."""

    def recognise(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
        return None

    async def identify(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        headers = connection.headers
        tenant_id, user_id = headers.get("x-tenant-id", ""), headers.get("x-user-id", "")
        if not _ID.fullmatch(tenant_id) or not _SUBJECT.fullmatch(user_id):
            raise Unauthorized("Dev mode needs X-Tenant-Id and X-User-Id headers with valid ids.")
        roles = {role.strip() for role in headers.get("x-roles", f"{ADMIN},{MEMBER}").split(",") if role.strip()}
        return Principal(tenant_id=tenant_id, user_id=user_id, roles=frozenset(roles))


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


ROLE = "ragwatch.required_role"
"""The route option naming the role a ``/v1`` route needs: members by default (the router's), admins where a
route says :data:`ADMINS_ONLY`."""
MEMBERS_ONLY: dict[str, str] = {ROLE: MEMBER}
ADMINS_ONLY: dict[str, str] = {ROLE: ADMIN}
_ROLE_CHECKS = {
    MEMBER: (frozenset({ADMIN, MEMBER}), "This needs the member or admin role."),
    ADMIN: (frozenset({ADMIN}), "This needs the admin role."),
}


def authentication_guard(authenticator: Authenticator, telemetry: Telemetry) -> Guard:
    """The router guard that puts the caller's :class:`Principal` on ``connection.user`` for every ``/v1`` route,
    then checks the role the route's :data:`ROLE` option names (403 without it).

    A guard rather than a middleware: guards run inside the route's exception handling, so a 401 travels back
    through the telemetry middleware like any response (counted with its status, carrying ``traceresponse``),
    and authentication happens before the body is read. One guard for both, with the role as a route option
    rather than a guard of its own: Litestar copies the route handler for every guard it runs, on every request.
    A closure, so that Litestar's copies of the router share the one authenticator (and its key and token caches).
    """
    method = "dev-headers" if isinstance(authenticator, DevHeaderAuthenticator) else "jwt"

    async def authenticate(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        """Identify the caller in an ``authenticate`` span (which never records the token), unless its token was
        verified recently: a lookup in memory has no work to show, as a cache hit is no span of its own."""
        principal = authenticator.recognise(connection)
        if principal is None:
            with stage(telemetry, "authenticate", **{"rag.auth.method": method}) as span:
                principal = await authenticator.identify(connection)
                if span.is_recording():
                    span.set_attributes({"rag.tenant.id": principal.tenant_id, "user.id": principal.user_id})
        connection.scope["user"] = principal
        update_request(tenant_id=principal.tenant_id, user_id=principal.user_id)
        telemetry.instruments.active_tenants.seen(principal.tenant_id)
        required = handler.opt.get(ROLE)
        if required is not None:
            allowed, refusal = _ROLE_CHECKS[required]
            if not principal.roles & allowed:
                raise Forbidden(refusal)

    return authenticate


def mint_token(secret: str, tenant_id: str, user_id: str, roles: list[str], ttl_s: int, **claims: Any) -> str:
    """An HS256 token for ``ragwatch token`` and local use."""
    for name, value in (("tenant", tenant_id), ("user", user_id)):
        if not _ID.fullmatch(value):
            raise ValueError(f"invalid {name} id {value!r}: use letters, digits, '_', '.', '-'")
    now = int(time.time())
    payload = {"sub": user_id, "tenant_id": tenant_id, "roles": roles, "iat": now, "exp": now + ttl_s}
    payload.update({k: v for k, v in claims.items() if v is not None})
    return jwt.encode(payload, secret, algorithm="HS256")
