"""The in-process token ledger of ``memory://``: past days' counts make room, today's are kept."""

from __future__ import annotations

import asyncio

from service.limits.budgets import MemoryLedger


def test_a_full_memory_ledger_drops_past_days_and_keeps_todays_counts() -> None:
    async def scenario() -> tuple[int, int]:
        ledger = MemoryLedger()
        for tenant in range(10_000):
            await ledger.spend(f"budget:19999:t{tenant}", 1)  # yesterday's
        await ledger.spend("budget:20000:acme", 700)  # today's first count
        await ledger.spend("budget:20000:globex", 5)  # the ledger is full: yesterday's make room
        return await ledger.used("budget:20000:acme"), await ledger.used("budget:19999:t1")

    assert asyncio.run(scenario()) == (700, 0)
