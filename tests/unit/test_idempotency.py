"""The rules of ``Idempotency-Key`` (service/idempotency.py), on the in-process records."""

from __future__ import annotations

import asyncio

import pytest

from service.auth import Principal
from service.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from service.idempotency import Idempotency
from service.shared.records import MemoryRecords

ALICE = Principal("acme", "alice", frozenset({"admin"}))


class Effects:
    """A computation that counts how often it ran."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self) -> str:
        self.runs += 1
        return f"result {self.runs}"


async def once(idempotency: Idempotency, compute: Effects, body: str = "body", key: str | None = "k") -> str:
    outcome = await idempotency.once(ALICE, key, operation="op", request=[body], compute=compute, result_type=str)
    return f"{outcome.value} (replayed)" if outcome.replayed else outcome.value


async def test_a_repeat_answers_the_first_result_without_running_again() -> None:
    idempotency, effects = Idempotency(MemoryRecords(100)), Effects()

    assert await once(idempotency, effects) == "result 1"
    assert await once(idempotency, effects) == "result 1 (replayed)"
    assert effects.runs == 1


async def test_without_a_key_every_request_runs() -> None:
    idempotency, effects = Idempotency(MemoryRecords(100)), Effects()

    await once(idempotency, effects, key=None)
    await once(idempotency, effects, key=None)

    assert effects.runs == 2


async def test_the_same_key_with_another_request_is_refused() -> None:
    idempotency, effects = Idempotency(MemoryRecords(100)), Effects()
    await once(idempotency, effects, body="first")

    with pytest.raises(IdempotencyKeyReused):
        await once(idempotency, effects, body="second")
    assert effects.runs == 1


async def test_a_repeat_while_the_first_runs_is_told_to_come_back() -> None:
    idempotency, release = Idempotency(MemoryRecords(100)), asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "slow result"

    first = asyncio.create_task(idempotency.once(ALICE, "k", operation="op", request=["body"], compute=slow,
                                                 result_type=str))  # fmt: skip
    await asyncio.sleep(0)
    with pytest.raises(IdempotencyKeyInUse) as refused:
        await once(idempotency, Effects())
    release.set()

    assert (await first).value == "slow result"
    assert refused.value.headers == {"Retry-After": "1"}


async def test_a_failed_request_frees_its_key() -> None:
    idempotency, effects = Idempotency(MemoryRecords(100)), Effects()

    async def failing() -> str:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await idempotency.once(ALICE, "k", operation="op", request=["body"], compute=failing, result_type=str)

    assert await once(idempotency, effects) == "result 1"


async def test_a_request_whose_claim_ran_out_neither_overwrites_nor_frees_the_next_ones() -> None:
    records = MemoryRecords(100)
    expiring, lasting = Idempotency(records, running_s=0), Idempotency(records)
    late, started = asyncio.Event(), asyncio.Event()

    async def outlived() -> str:
        started.set()
        await late.wait()
        return "late result"

    first = asyncio.create_task(expiring.once(ALICE, "k", operation="op", request=["body"], compute=outlived,
                                              result_type=str))  # fmt: skip
    await started.wait()
    second = await once(lasting, Effects())  # the claim ran out: this one is done again
    late.set()
    await first

    assert second == "result 1"
    assert await once(lasting, Effects()) == "result 1 (replayed)"


async def test_keys_belong_to_their_user_and_operation() -> None:
    idempotency, effects = Idempotency(MemoryRecords(100)), Effects()
    await once(idempotency, effects)

    bob = Principal("acme", "bob", frozenset({"admin"}))
    other_user = await idempotency.once(bob, "k", operation="op", request=["body"], compute=effects, result_type=str)
    other_operation = await idempotency.once(
        ALICE, "k", operation="other", request=["body"], compute=effects, result_type=str
    )

    assert (other_user.replayed, other_operation.replayed) == (False, False)
    assert effects.runs == 3
