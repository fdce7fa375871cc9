"""The offline default providers: a deterministic hashing embedder and a grounded extractive answerer."""

from __future__ import annotations

import re

import numpy as np

from service.chunking import split_sentences
from service.providers import NO_ANSWER, Passage
from service.providers.extractive import ExtractiveAnswerer
from service.providers.offline import HashingEmbedder

VACATION = (
    "Every employee gets twenty-five days of paid vacation per year. "
    "Unused vacation days expire at the end of March of the following year."
)
EXPENSES = "Travel expenses are reimbursed within fourteen days. Receipts must be attached to every claim."
PARKING = "The office car park opens at seven. Bicycles are parked in the basement."


def _passage(number: int, text: str, score: float = 1.0) -> Passage:
    return Passage(
        document_id=f"doc-{number}", chunk_id=f"chunk-{number}", title=f"Title {number}", text=text, score=score
    )


# --- hashing embedder -----------------------------------------------------------------------------------


async def test_hashing_embedder_returns_the_same_vectors_on_every_call() -> None:
    embedder = HashingEmbedder(384)
    texts = [VACATION, EXPENSES, "vacation"]

    first = await embedder.embed(texts)
    second = await HashingEmbedder(384).embed(list(reversed(texts)))

    assert first.shape == (3, 384)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, second[::-1])


def test_hashing_embedder_rows_are_unit_length_and_blank_text_is_zero() -> None:
    vectors = HashingEmbedder(128).embed_sync([VACATION, EXPENSES, "a", "   "])

    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms[:2], 1.0, rtol=1e-5)
    # Only stopwords or nothing at all: no feature, an all-zero row rather than NaN.
    np.testing.assert_array_equal(vectors[2:], 0.0)


def test_hashing_embedder_places_similar_texts_closer_than_unrelated_ones() -> None:
    embedder = HashingEmbedder(384)
    question, related, unrelated = embedder.embed_sync(
        ["How many days of paid vacation does an employee get?", VACATION, PARKING]
    )

    assert float(question @ related) > 0.3
    assert float(question @ related) > float(question @ unrelated) + 0.2


def test_hashing_embedder_matches_plural_and_case_variants() -> None:
    singular, plural = HashingEmbedder(256).embed_sync(["Expense receipt", "EXPENSES receipts"])

    assert float(singular @ plural) > 0.99


def test_hashing_embedder_folds_accents_without_splitting_words() -> None:
    embedder = HashingEmbedder(256)
    accented, plain, other = embedder.embed_sync(["Zürich office résumé", "zurich OFFICE resume", "rich zu office"])

    assert float(accented @ plain) > 0.99
    assert float(accented @ other) < 0.5


def test_hashing_embedder_names_its_width_as_its_model() -> None:
    embedder = HashingEmbedder(96)

    assert embedder.dimensions == 96
    assert embedder.model == "hashing-96"
    assert embedder.provider == "ragwatch"


# --- extractive answerer --------------------------------------------------------------------------------


async def test_extractive_answer_is_made_only_of_passage_sentences_each_with_its_citation() -> None:
    passages = [_passage(1, VACATION), _passage(2, EXPENSES), _passage(3, PARKING)]

    answer = await ExtractiveAnswerer().answer("When do unused vacation days expire?", passages)

    cited = re.findall(r"(.+?) \[(\d+)\]", answer.text)
    assert cited, answer.text
    for sentence, number in cited:
        assert sentence.strip() in split_sentences(passages[int(number) - 1].text)
    assert "Unused vacation days expire at the end of March of the following year. [1]" in answer.text
    assert "[3]" not in answer.text
    assert answer.model == "extractive"
    assert answer.finish_reason == "stop"
    assert answer.input_tokens > 0
    assert answer.output_tokens > 0


async def test_extractive_answer_keeps_the_passages_order_and_at_most_three_sentences() -> None:
    passages = [_passage(1, EXPENSES), _passage(2, VACATION)]

    answer = await ExtractiveAnswerer().answer("vacation days expenses receipts travel", passages)

    markers = [int(n) for n in re.findall(r"\[(\d+)\]", answer.text)]
    assert len(markers) == 3
    assert markers == sorted(markers)


async def test_extractive_answer_matches_a_question_written_without_the_passages_accents() -> None:
    passages = [_passage(1, "The new office is in Zürich. It opens in May.")]

    answer = await ExtractiveAnswerer().answer("Is it in Zurich?", passages)

    assert answer.text.startswith("The new office is in Zürich. [1]")


async def test_extractive_answerer_says_the_knowledge_base_does_not_say_when_nothing_overlaps() -> None:
    answer = await ExtractiveAnswerer().answer("Which rocket engine powers Saturn?", [_passage(1, VACATION)])

    assert answer.text == NO_ANSWER
    assert "[" not in answer.text


async def test_extractive_stream_deltas_join_to_the_full_answer() -> None:
    answerer = ExtractiveAnswerer()
    passages = [_passage(1, VACATION), _passage(2, EXPENSES)]
    question = "How many vacation days, and when are travel expenses reimbursed?"
    whole = await answerer.answer(question, passages)

    stream = await answerer.stream(question, passages)
    assert stream.result is None
    deltas = [delta async for delta in stream]
    await stream.aclose()

    assert len(deltas) > 3
    assert "".join(deltas) == whole.text
    assert stream.result == whole


async def test_extractive_answer_rejoins_hard_wrapped_prose_and_keeps_list_items_and_code_lines_apart() -> None:
    markdown = (
        "Secrets can be handed to the service\nas files that hold them, never as plain values.\n\n"
        "- secrets rotate every ninety days\n- unrelated list item\n\n"
        "```sh\nmount secrets read-only  # in the container\n```"
    )

    answer = await ExtractiveAnswerer().answer("How are secrets handed over?", [_passage(1, markdown)])

    assert "Secrets can be handed to the service as files that hold them, never as plain values. [1]" in answer.text
    assert "- secrets rotate every ninety days [1]" in answer.text
    assert "```" not in answer.text
    assert "unrelated list item" not in answer.text


async def test_extractive_answer_never_repeats_a_sentence_and_keeps_room_for_the_newer_statement() -> None:
    """Two documents, the newer one quoting the older statement before correcting it: the quoted sentence is
    said once, citing both, and the correction makes it into the answer."""
    old = _passage(1, "The vault code of tenant A is 7741.")
    new = _passage(2, "The vault code of tenant A is 7741. Update: the vault code is now 5150.")

    answer = await ExtractiveAnswerer().answer("What is the vault code?", [old, new, _passage(3, old.text)])

    sentences = [sentence for sentence, _ in re.findall(r"(.+?) ((?:\[\d+\])+)", answer.text)]
    assert len(sentences) == len({sentence.strip() for sentence in sentences}), answer.text
    assert "The vault code of tenant A is 7741. [1][2][3]" in answer.text
    assert "now 5150. [2]" in answer.text


async def test_sentences_differing_only_in_case_and_spacing_count_as_one() -> None:
    passages = [_passage(1, "Badges open  the north door."), _passage(2, "badges open the north door.")]

    answer = await ExtractiveAnswerer().answer("Which door do badges open?", passages)

    assert answer.text == "Badges open the north door. [1][2]"


def _dated(number: int, text: str, written: str, document: str | None = None) -> Passage:
    return Passage(
        document_id=document or f"doc-{number}",
        chunk_id=f"chunk-{number}",
        title=f"Title {number}",
        text=text,
        score=1.0,
        created_at=written,
    )


async def test_extractive_answer_picks_the_sentence_that_answers_not_the_first_of_the_top_passage() -> None:
    handbook = (
        "This handbook describes how the team works. It is updated every quarter by the office manager. "
        "Expense claims are approved by your team lead within three days."
    )

    answer = await ExtractiveAnswerer(max_sentences=1).answer("Who approves expense claims?", [_passage(1, handbook)])

    assert answer.text == "Expense claims are approved by your team lead within three days. [1]"


async def test_rare_question_words_weigh_more_than_common_ones() -> None:
    """Every sentence says "office"; only one says "wifi": that one answers "What is the office wifi password?"."""
    text = (
        "The office opens at eight. The office closes at six. The office wifi password is on the kitchen board. "
        "The office has two floors."
    )

    answer = await ExtractiveAnswerer(max_sentences=1).answer("What is the office wifi password?", [_passage(1, text)])

    assert answer.text == "The office wifi password is on the kitchen board. [1]"


async def test_when_two_documents_disagree_on_the_same_subject_the_newer_one_is_said() -> None:
    older = _dated(1, "The office is open from nine to five.", "2025-01-10T09:00:00+00:00")
    newer = _dated(2, "The office is open from eight to six.", "2026-03-01T09:00:00+00:00")

    for passages in ([older, newer], [newer, older]):
        answer = await ExtractiveAnswerer().answer("When is the office open?", passages)

        assert "eight to six" in answer.text, answer.text
        assert "nine to five" not in answer.text, answer.text


async def test_the_newer_document_wins_by_meaning_too_when_an_embedder_is_at_hand() -> None:
    older = _dated(1, "Staff receive twenty days of annual leave.", "2025-01-10T09:00:00+00:00")
    newer = _dated(2, "Staff receive twenty-five days of annual leave.", "2026-03-01T09:00:00+00:00")
    answerer = ExtractiveAnswerer(HashingEmbedder(384).embed_sync)

    answer = await answerer.answer("How much annual leave do staff receive?", [older, newer])

    assert answer.text == "Staff receive twenty-five days of annual leave. [2]"


async def test_sentences_of_one_document_never_supersede_each_other() -> None:
    text = "The office is open from nine to five. On Fridays the office is open from nine to three."
    passages = [_dated(1, text, "2026-01-01T00:00:00+00:00"), _dated(2, text, "2026-01-01T00:00:00+00:00", "doc-1")]

    answer = await ExtractiveAnswerer().answer("When is the office open?", passages)

    assert "nine to five" in answer.text
    assert "nine to three" in answer.text


async def test_a_near_copy_of_a_chosen_sentence_is_not_said_again() -> None:
    first = _passage(1, "Badges are issued at the front desk on your first day.")
    second = _passage(2, "Badges are issued at the front desk on the first day.")

    answer = await ExtractiveAnswerer().answer("Where are badges issued?", [first, second])

    assert answer.text == "Badges are issued at the front desk on your first day. [1]"


async def test_prose_is_preferred_to_lines_of_code_saying_the_same_words() -> None:
    readme = (
        "Run the tests with make test, which installs what they need first.\n\n"
        "```sh\nmake test   # run the tests\nmake test-fast   # the unit tests only\n```"
    )

    answer = await ExtractiveAnswerer(max_sentences=1).answer("How do I run the tests?", [_passage(1, readme)])

    assert answer.text == "Run the tests with make test, which installs what they need first. [1]"


async def test_a_sentence_close_in_meaning_answers_even_without_a_shared_word() -> None:
    def embed(texts: object) -> np.ndarray:
        """A stand-in embedder that finds the question and the second sentence alike, nothing else."""
        rows = [[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]]
        return np.asarray(rows, dtype=np.float32)

    text = "Bicycles go to the basement. Staff receive twenty-five days of leave."
    answer = await ExtractiveAnswerer(embed).answer("What holiday allowance is there?", [_passage(1, text)])

    assert answer.text == "Staff receive twenty-five days of leave. [1]"


async def test_words_match_across_snake_case_names_and_ing_endings() -> None:
    text = "Switching RAGWATCH_EMBEDDER requires a re-index of each knowledge base. Badges open the north door."

    answer = await ExtractiveAnswerer(max_sentences=1).answer("How do I switch embedders?", [_passage(1, text)])

    assert answer.text == "Switching RAGWATCH_EMBEDDER requires a re-index of each knowledge base. [1]"


async def test_table_rows_and_symbol_heavy_lines_count_for_less_than_prose() -> None:
    text = (
        "| `RAGWATCH_CACHE_TTL_S` | `3600` | seconds a cached answer is kept |\n\n"
        "Cached answers are kept for an hour by default."
    )

    answer = await ExtractiveAnswerer(max_sentences=1).answer("How long are cached answers kept?", [_passage(1, text)])

    assert answer.text == "Cached answers are kept for an hour by default. [1]"
