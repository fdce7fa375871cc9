"""Cache rules, on the in-process backend: keys, entries, generations and lookups."""

from __future__ import annotations

import asyncio

import pytest

from service.cache import Cache, MemoryCacheBackend, normalize_question
from service.cache.entries import Entry, decode_entry, encode_entry, is_mget_reply
from service.cache.keys import entry_keys, generation_key
from service.chat import Answering, Question
from service.config import CacheSettings, RateLimitSettings
from service.limits import TokenBudgets
from service.limits.budgets import MemoryLedger
from service.pricing import load_prices
from service.providers.extractive import ExtractiveAnswerer
from service.shared.health import RedisHealth
from telemetry import Telemetry, disabled_telemetry

QUESTION = ["how many vacation days?", "5", "hashing-384"]


def make_cache(backend: MemoryCacheBackend | None = None, *, settle_s: float = 0.0, **settings: bool) -> Cache:
    telemetry = disabled_telemetry()
    return Cache(
        backend or MemoryCacheBackend(100),
        CacheSettings(**settings),  # type: ignore[arg-type]
        RedisHealth(None, telemetry),
        telemetry,
        settle_s=settle_s,
    )


async def answer_in(cache: Cache, tenant: str = "acme", kb: str = "kb1") -> bytes | None:
    """Look the question up; on a miss, compute it in the current generation and keep it."""
    lookup = await cache.lookup("answers", tenant, QUESTION, kb_id=kb)
    if lookup.value is None:
        await cache.store(lookup, b"the answer", await cache.current_generation(lookup))
    return lookup.value


# --- keys -------------------------------------------------------------------------------------------------


def test_questions_are_normalized_by_unicode_form_case_and_whitespace() -> None:
    assert normalize_question("  How   MANY\tvacation\u00a0days? ") == "how many vacation days?"
    assert normalize_question("ﬁle") == normalize_question("file")  # NFKC folds the ligature


def test_a_key_is_the_tenants_namespace_and_a_digest_never_the_text() -> None:
    key, generation = entry_keys("answers", "acme", ["secret plans for q3"], "kb1")

    assert key.startswith("rw:c:{acme}:answers:")
    assert len(key.rsplit(":", 1)[1]) == 64
    assert "secret" not in key
    assert generation == generation_key("acme", "kb1") == "rw:c:{acme}:gen:kb1"


def test_tenant_knowledge_base_and_every_part_make_a_different_key() -> None:
    base = entry_keys("answers", "acme", QUESTION, "kb1")[0]

    assert entry_keys("answers", "other", QUESTION, "kb1")[0] != base
    assert entry_keys("answers", "acme", QUESTION, "kb2")[0] != base
    assert entry_keys("retrieval", "acme", QUESTION, "kb1")[0] != base
    assert entry_keys("answers", "acme", [*QUESTION[:2], "hashing-256"], "kb1")[0] != base
    assert entry_keys("embeddings", "acme", QUESTION, None)[1] is None


# --- entries ----------------------------------------------------------------------------------------------


def test_an_entry_round_trips_and_anything_else_is_not_an_entry() -> None:
    entry = Entry(key="k", generation="g", value=b"v")

    assert decode_entry(encode_entry(entry)) == entry
    assert decode_entry(b"\xff not msgpack") is None


def test_a_reply_is_believed_only_in_the_shape_of_its_own_mget() -> None:
    assert is_mget_reply([b"a", None], 2)
    assert not is_mget_reply([b"a"], 2)
    assert not is_mget_reply([b"a", 3], 2)
    assert not is_mget_reply(b"OK", 1)


# --- lookups and generations --------------------------------------------------------------------------------


async def test_an_answer_kept_in_the_current_generation_is_a_hit() -> None:
    cache = make_cache()

    assert await answer_in(cache) is None
    assert await answer_in(cache) == b"the answer"


async def test_invalidating_the_knowledge_base_turns_its_answers_into_misses() -> None:
    cache = make_cache()
    await answer_in(cache)

    await cache.invalidate("acme", "kb1")

    assert await answer_in(cache) is None
    assert await answer_in(cache) == b"the answer"


async def test_invalidation_stays_within_its_tenant_and_knowledge_base() -> None:
    cache = make_cache()
    for tenant, kb in (("acme", "kb1"), ("acme", "kb2"), ("other", "kb1")):
        await answer_in(cache, tenant, kb)

    await cache.invalidate("acme", "kb1")

    assert await answer_in(cache, "acme", "kb1") is None
    assert await answer_in(cache, "acme", "kb2") == b"the answer"
    assert await answer_in(cache, "other", "kb1") == b"the answer"


async def test_a_value_computed_before_a_write_is_not_kept_as_current() -> None:
    cache = make_cache()
    lookup = await cache.lookup("answers", "acme", QUESTION, kb_id="kb1")
    generation = await cache.current_generation(lookup)

    await cache.invalidate("acme", "kb1")  # a write lands while the answer is computed
    await cache.store(lookup, b"stale", generation)

    assert await answer_in(cache) is None


async def test_the_generation_is_renewed_again_once_the_write_has_settled() -> None:
    """Another replica may still read the old data for ``settle_s``; what it caches then must drop too."""
    cache = make_cache(settle_s=0.02)
    await cache.invalidate("acme", "kb1")
    lookup = await cache.lookup("answers", "acme", QUESTION, kb_id="kb1")
    generation = await cache.current_generation(lookup)
    await cache.store(lookup, b"computed from not-yet-visible data", generation)

    await asyncio.sleep(0.05)

    assert await answer_in(cache) is None
    await cache.aclose()


async def test_the_first_generation_is_started_once_and_shared() -> None:
    cache = make_cache()
    lookup = await cache.lookup("answers", "acme", QUESTION, kb_id="kb1")

    first = await cache.current_generation(lookup)
    second = await cache.current_generation(lookup)

    assert first is not None
    assert first == second


async def test_an_entry_holding_another_keys_value_is_an_error_and_never_served() -> None:
    backend = MemoryCacheBackend(100)
    cache = make_cache(backend)
    key, _ = entry_keys("embeddings", "acme", QUESTION, None)
    await backend.put(key, encode_entry(Entry(key="rw:c:{other}:embeddings:x", generation="", value=b"v")), 60)

    lookup = await cache.lookup("embeddings", "acme", QUESTION)

    assert (lookup.outcome, lookup.value) == ("error", None)


async def test_values_read_ahead_by_the_rate_limiter_are_used_without_another_read() -> None:
    backend = MemoryCacheBackend(100)
    cache = make_cache(backend)
    await answer_in(cache)
    keys = cache.read_keys("answers", "acme", QUESTION, kb_id="kb1")

    prefetched = await backend.get_many(keys)
    backend._entries.clear()  # what the lookup reads now would miss
    lookup = await cache.lookup("answers", "acme", QUESTION, kb_id="kb1", prefetched=prefetched)

    assert (lookup.outcome, lookup.value) == ("hit", b"the answer")


@pytest.mark.parametrize("switch", ["answers_enabled", "retrieval_enabled", "embeddings_enabled"])
async def test_a_cache_switched_off_reads_nothing_and_keeps_nothing(switch: str) -> None:
    name = switch.removesuffix("_enabled")
    cache = make_cache(**{switch: False})

    assert cache.read_keys(name, "acme", QUESTION, kb_id="kb1") == []  # type: ignore[arg-type]
    lookup = await cache.lookup(name, "acme", QUESTION, kb_id="kb1")  # type: ignore[arg-type]
    await cache.store(lookup, b"value", "g")

    assert lookup.outcome == "off"
    assert (await cache.lookup(name, "acme", QUESTION, kb_id="kb1")).value is None  # type: ignore[arg-type]


async def test_the_in_process_backend_drops_the_least_recently_used_entries_past_its_limit() -> None:
    backend = MemoryCacheBackend(2)
    for key in ("a", "b"):
        await backend.put(key, key.encode(), 60)
    await backend.get_many(["a"])  # "a" is now the most recently used

    await backend.put("c", b"c", 60)

    assert await backend.get_many(["a", "b", "c"]) == [b"a", None, b"c"]


def unlimited(telemetry: Telemetry) -> TokenBudgets:
    """Token budgets as the defaults set them: none."""
    return TokenBudgets(MemoryLedger(), RateLimitSettings(), {}, telemetry, RedisHealth(None, telemetry))


def test_an_answerer_that_answers_differently_now_reads_other_answer_keys() -> None:
    """A deploy that changes how answers are made never serves the answers of the previous behaviour."""

    class Revised(ExtractiveAnswerer):
        version = ExtractiveAnswerer.version + "-revised"

    def keys(answerer: ExtractiveAnswerer) -> list[str]:
        telemetry = disabled_telemetry()
        answering = Answering(
            answerer,
            make_cache(),
            telemetry,
            load_prices(None),
            embedding_model="hashing-384",
            retrieval="hashing-384/0.2",
            budgets=unlimited(telemetry),
        )
        return answering.read_keys("acme", Question("kb1", "How many vacation days?", 5))

    assert keys(ExtractiveAnswerer()) != keys(Revised())


def test_retrieval_that_finds_differently_now_reads_other_answer_keys() -> None:
    """A new fusion weight or similarity threshold never serves answers built on the passages found before."""

    def keys(retrieval: str) -> list[str]:
        telemetry = disabled_telemetry()
        answering = Answering(
            ExtractiveAnswerer(),
            make_cache(),
            telemetry,
            load_prices(None),
            embedding_model="hashing-384",
            retrieval=retrieval,
            budgets=unlimited(telemetry),
        )
        return answering.read_keys("acme", Question("kb1", "How many vacation days?", 5))

    assert keys("hashing-384/0.2/minmax-sum-1/0.7") != keys("hashing-384/0.2/minmax-sum-1/0.6")
