"""Chunking: bounded chunks cut on paragraph or sentence boundaries, with sentence overlap, covering all text."""

from __future__ import annotations

import itertools
import re

import pytest

from service.chunking import chunk_text, split_sentences


def sentence(paragraph: int, index: int) -> str:
    return f"Paragraph {paragraph} sentence {index} states one distinct fact about harbour cranes."


def paragraph(number: int, sentences: int) -> str:
    return " ".join(sentence(number, index) for index in range(sentences))


def document(paragraphs: int, sentences: int) -> str:
    return "\n\n".join(paragraph(number, sentences) for number in range(paragraphs))


def compact(text: str) -> str:
    return re.sub(r"\s+", "", text)


def assert_covers_in_order(text: str, chunks: list[str]) -> None:
    """Every chunk is a piece of ``text`` (whitespace aside); together, in order, they cover it with no gap.

    Each chunk must start after the previous one starts and no later than it ends; of the places where it
    fits, the furthest one is taken.
    """
    whole = compact(text)
    start, end = -1, 0
    for chunk in chunks:
        piece = compact(chunk)
        position = whole.rfind(piece, start + 1, end + len(piece))
        assert position != -1, f"chunk is not the next piece of the text: {chunk[:60]!r}"
        start, end = position, position + len(piece)
    assert chunks, "no chunks"
    assert whole.startswith(compact(chunks[0]))
    assert end == len(whole), "the end of the text is not covered"


@pytest.mark.parametrize(("size", "overlap"), [(100, 0), (200, 40), (400, 120), (800, 120), (1200, 300)])
def test_no_chunk_is_longer_than_the_size(size: int, overlap: int) -> None:
    text = document(paragraphs=12, sentences=7) + "\n\n" + "x" * (size * 3) + " tail words here."

    chunks = chunk_text(text, size, overlap)

    assert max(len(chunk) for chunk in chunks) <= size
    assert_covers_in_order(text, chunks)


def test_overlap_never_pushes_a_chunk_over_the_size() -> None:
    """A 380-character paragraph after a chunk ending in a short sentence still yields chunks of <= 400."""
    text = "\n\n".join(["Short one. " + "a" * 300 + " end.", "Tiny sentence here.", "b" * 380])

    chunks = chunk_text(text, 400, 120)

    assert max(len(chunk) for chunk in chunks) <= 400
    assert_covers_in_order(text, chunks)


def test_paragraphs_that_fit_are_never_cut() -> None:
    paragraphs = [paragraph(number, 4) for number in range(8)]  # about 330 characters each

    chunks = chunk_text("\n\n".join(paragraphs), 800, 0)

    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.split("\n\n") == [p for p in paragraphs if p in chunk.split("\n\n")]
    assert [p for chunk in chunks for p in chunk.split("\n\n")] == paragraphs


def test_a_long_paragraph_is_cut_between_sentences() -> None:
    text = paragraph(0, 40)  # one paragraph of about 3300 characters
    sentences = split_sentences(text)

    chunks = chunk_text(text, 500, 0)

    assert len(chunks) >= 7
    for chunk in chunks:
        assert chunk.endswith("cranes.")
        assert all(piece in sentences for piece in split_sentences(chunk))
    assert_covers_in_order(text, chunks)


def test_each_chunk_starts_with_the_trailing_sentences_of_the_previous_one() -> None:
    text = paragraph(0, 30)
    overlap = 200

    chunks = chunk_text(text, 600, overlap)

    assert len(chunks) >= 4
    for previous, chunk in itertools.pairwise(chunks):
        previous_sentences, sentences = split_sentences(previous), split_sentences(chunk)
        carried = [s for s in sentences if s in previous_sentences]
        assert carried, f"nothing carried over into {chunk[:60]!r}"
        assert sentences[: len(carried)] == carried
        assert previous_sentences[-len(carried) :] == carried
        assert len(" ".join(carried)) <= overlap


def test_overlap_carries_sentences_across_paragraph_boundaries() -> None:
    """Chunks made of whole paragraphs still repeat the last sentence of the previous chunk."""
    text = document(paragraphs=6, sentences=4)

    chunks = chunk_text(text, 800, 120)

    for previous, chunk in itertools.pairwise(chunks):
        assert chunk.startswith(split_sentences(previous)[-1])


def test_zero_overlap_repeats_nothing() -> None:
    text = paragraph(0, 30)

    chunks = chunk_text(text, 600, 0)

    assert sum(len(compact(chunk)) for chunk in chunks) == len(compact(text))


def test_a_word_longer_than_a_chunk_is_split_into_pieces_of_at_most_the_size() -> None:
    word = "".join(chr(ord("a") + i % 26) for i in range(2500))
    text = f"Before the long word. {word} After the long word."

    chunks = chunk_text(text, 300, 60)

    assert max(len(chunk) for chunk in chunks) <= 300
    pieces = [chunk for chunk in chunks if set(chunk) <= set(word)]
    assert len(pieces) == 2500 // 300
    assert all(piece in word for piece in pieces)
    assert_covers_in_order(text, chunks)


@pytest.mark.parametrize("blank", ["", "   ", "\n\n\n", " \t\n \n\t "])
def test_blank_text_has_no_chunks(blank: str) -> None:
    assert chunk_text(blank, 800, 120) == []


def test_no_chunk_is_empty_or_blank_whatever_the_spacing() -> None:
    text = "\n\n\n   \n\nFirst.   \n\n\n\n  \t \n\nSecond paragraph.\n\n \n" + "word " * 400 + "\n\n\n"

    chunks = chunk_text(text, 200, 50)

    assert chunks
    assert all(chunk.strip() and chunk == chunk.strip() for chunk in chunks)
    assert_covers_in_order(text, chunks)


def test_a_short_text_is_one_chunk_equal_to_the_stripped_text() -> None:
    assert chunk_text("  Vacation policy.\n\nTwenty-five days.  ", 800, 120) == [
        "Vacation policy.\n\nTwenty-five days."
    ]


def test_all_text_is_covered_in_order_for_mixed_content() -> None:
    text = "\n\n".join(
        [
            paragraph(0, 2),
            paragraph(1, 25),
            "z" * 1700,
            "Headline without a full stop",
            paragraph(2, 9),
        ]
    )

    chunks = chunk_text(text, 500, 100)

    assert max(len(chunk) for chunk in chunks) <= 500
    assert_covers_in_order(text, chunks)


def test_sentences_split_after_terminal_punctuation_before_a_capital_or_digit() -> None:
    assert split_sentences("One is here. Two follows! Three? 4 starts with a digit. lower stays.") == [
        "One is here.",
        "Two follows!",
        "Three?",
        "4 starts with a digit. lower stays.",
    ]
