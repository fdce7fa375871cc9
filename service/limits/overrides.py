"""Limits for particular tenants, from ``RAGWATCH_RATE_LIMIT_OVERRIDES_FILE``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from service.config import SettingsError

__all__ = ["Override", "load_overrides"]

Limit = Annotated[int, msgspec.Meta(ge=1)]


class Override(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tenant's own limits; any left out are the settings' defaults."""

    per_minute: Limit | None = None
    per_hour: Limit | None = None
    tenant_per_minute: Limit | None = None
    tenant_per_hour: Limit | None = None
    token_budget_per_day: Limit | None = None


def load_overrides(path: str | None) -> dict[str, Override]:
    if path is None:
        return {}
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=dict[str, Override])
    except OSError as exc:
        raise SettingsError(f"RAGWATCH_RATE_LIMIT_OVERRIDES_FILE: cannot read {path!r} ({exc.strerror})") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SettingsError(
            f'RAGWATCH_RATE_LIMIT_OVERRIDES_FILE: expected {{"tenant": {{"per_minute": n, "per_hour": n}}}} ({exc})'
        ) from None
