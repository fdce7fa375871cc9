"""What LLM calls cost: USD per million tokens by model, for ``rag_llm_cost_total`` and per-tenant spend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from service.config import SettingsError

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "load_prices"]

NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class Price(msgspec.Struct, frozen=True):
    input: NonNegative
    """USD per million input tokens."""
    output: NonNegative = 0.0
    """USD per million output tokens."""


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.00, 8.00),
    "text-embedding-3-small": Price(0.02),
    "text-embedding-3-large": Price(0.13),
}


class PriceTable:
    """Prices by model; a model missing from the table (local models, the offline default) costs nothing."""

    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = prices

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        price = self._prices.get(model)
        if price is None:
            return 0.0
        return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


def load_prices(path: str | None) -> PriceTable:
    """The built-in table, overridden model by model by ``RAGWATCH_LLM_PRICES_FILE``."""
    prices = dict(DEFAULT_PRICES)
    if path is None:
        return PriceTable(prices)
    try:
        prices.update(msgspec.json.decode(Path(path).read_bytes(), type=dict[str, Price]))
    except OSError as exc:
        raise SettingsError(f"RAGWATCH_LLM_PRICES_FILE: cannot read {path!r} ({exc.strerror})") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SettingsError(
            'RAGWATCH_LLM_PRICES_FILE: expected {"model": {"input": usd, "output": usd}} per million tokens '
            f"({exc})"
        ) from None
    return PriceTable(prices)
