"""The offline answerer: the retrieved sentences that best answer the question, each cited, none invented.

How a sentence is chosen:

- **It answers.** Its score weighs the question's words it holds by their rarity among the candidate sentences
  (a word every sentence has says little), plus, when an offline embedder is at hand, how close its meaning is
  to the question's; the retrieval's own ranking breaks near ties. Code lines and very long sentences count
  for less (so do table rows and lines that are mostly symbols). A sentence sharing no word with the question
  and not close in meaning is never said.
- **It is said once.** The same sentence in several passages (chunk overlap, or two documents saying it) is
  said once and cites every passage holding it; a near-copy of a sentence already chosen is skipped.
- **The newer document wins.** Two sentences from different documents about the same subject (the same
  words of the question, or nearly the same meaning) that say different things: the one from the older
  document is dropped.
- **Citations follow the ``citations`` array**: ``[n]`` is the n-th passage, and the answer keeps the order of
  the passages and of the sentences within them.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.chunking import split_sentences
from service.providers.base import (
    DEFAULT_GENERATION,
    Answer,
    Generation,
    Passage,
    Vectors,
    build_user_prompt,
    count_tokens,
)
from service.providers.offline import STOPWORDS, terms

__all__ = ["NO_ANSWER", "ExtractiveAnswerer", "SentenceEmbedder"]

NO_ANSWER = "The knowledge base does not say."
SentenceEmbedder = Callable[[Sequence[str]], Vectors]
"""Unit vectors for texts, computed in the process (an offline embedder's ``embed_sync``)."""

_MEANING_WEIGHT = 0.4
"""Share of the closeness in meaning in a sentence's score (the rest: the question's words it holds)."""
_CLOSE_IN_MEANING = 0.5
"""Similarity from which a sentence sharing no word with the question may still answer it."""
_SAME_SUBJECT = 0.8
"""Similarity from which two sentences are taken to speak of the same subject."""
_NEAR_COPY = 0.7
"""Share of words two sentences have in common from which the second is a repeat of the first."""
_ON_THE_LOOP = 8
"""Passages up to which an answer is composed on the event loop (a few milliseconds); more go to a thread."""
_CONSIDERED = 30
"""The best-scoring sentences compared with each other (for newer documents and near-copies): the answer is
made of a few of them, and comparing every pair of a long context would cost more than it could change."""
_BLOCK_START = re.compile(r"^\s*(?:[-*+]\s|\d+[.)]\s|#|\||>)")


@dataclass
class _Candidate:
    """A sentence the answer may use, with every passage (by number) that holds it."""

    index: int
    text: str
    words: frozenset[str]
    code: bool
    position: tuple[int, int]
    sources: list[int] = field(default_factory=list)
    documents: set[str] = field(default_factory=set)
    written: str = ""
    """When the newest document holding it was written (ISO 8601; empty when unknown)."""
    prior: float = 0.0
    score: float = 0.0


class ExtractiveAnswer:
    """An :class:`~service.providers.base.AnswerStream` over a finished extractive answer, word by word."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self.result: Answer | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        for piece in re.findall(r"\S+\s*", self._answer.text):
            yield piece
        self.result = self._answer

    async def aclose(self) -> None:
        return None


class ExtractiveAnswerer:
    provider = "ragwatch"
    model = "extractive"
    version = "4"  # 4: rarity-weighted words and meaning, no near-copies, the newer document wins, code skipped

    def __init__(self, embed: SentenceEmbedder | None = None, max_sentences: int = 3) -> None:
        self._embed = embed
        self.max_sentences = max_sentences

    def effective(self, generation: Generation) -> Generation:
        """``max_tokens`` as asked (no limit by default); no temperature, for nothing is sampled."""
        return Generation(max_tokens=generation.max_tokens)

    async def answer(
        self, question: str, passages: Sequence[Passage], generation: Generation = DEFAULT_GENERATION
    ) -> Answer:
        """The answer; ``generation.max_tokens`` cuts it after that many tokens (finish reason ``length``), and
        ``temperature`` changes nothing: the answer is extracted, not sampled."""
        if len(passages) > _ON_THE_LOOP:
            text = await asyncio.to_thread(self.compose, question, passages)
        else:
            text = self.compose(question, passages)
        text, finish_reason = _cut(text, generation.max_tokens)
        return Answer(
            text=text,
            model=self.model,
            input_tokens=count_tokens(build_user_prompt(question, passages)),
            output_tokens=count_tokens(text),
            finish_reason=finish_reason,
        )

    async def stream(
        self, question: str, passages: Sequence[Passage], generation: Generation = DEFAULT_GENERATION
    ) -> ExtractiveAnswer:
        return ExtractiveAnswer(await self.answer(question, passages, generation))

    def compose(self, question: str, passages: Sequence[Passage]) -> str:
        wanted = frozenset(_words(question)) - STOPWORDS
        candidates = _candidates(passages)
        if not wanted or not candidates:
            return NO_ANSWER
        meaning = self._meaning(question, candidates)
        weights = _rarity(wanted, candidates)
        total = sum(weights.values())
        eligible: list[tuple[_Candidate, frozenset[str]]] = []
        for candidate in candidates:
            matched = wanted & candidate.words
            closeness = float(meaning[0][candidate.index]) if meaning is not None else 0.0
            if not matched and closeness < _CLOSE_IN_MEANING:
                continue
            coverage = sum(weights[word] for word in matched) / total
            score = (1 - _MEANING_WEIGHT) * coverage + _MEANING_WEIGHT * closeness if meaning is not None else coverage
            length = len(candidate.text.split())
            candidate.score = score * (0.6 if candidate.code else 1.0) / (1 + max(0, length - 40) / 40)
            candidate.score += 0.05 * candidate.prior
            eligible.append((candidate, matched))
        best = sorted(eligible, key=lambda pair: -pair[0].score)[:_CONSIDERED]
        current = _drop_superseded(best, wanted, meaning[1] if meaning is not None else None)
        chosen: list[_Candidate] = []
        for candidate in current:
            if len(chosen) == self.max_sentences:
                break
            if not any(_near_copy(candidate, other) for other in chosen):
                chosen.append(candidate)
        if not chosen:
            return NO_ANSWER
        chosen.sort(key=lambda c: c.position)
        return " ".join(f"{c.text} {''.join(f'[{n}]' for n in c.sources)}" for c in chosen)

    def _meaning(self, question: str, candidates: list[_Candidate]) -> tuple[Vectors, Vectors] | None:
        """Each candidate's similarity to the question (cosine, from 0), and the candidates' vectors (``None``
        without an embedder)."""
        if self._embed is None:
            return None
        vectors = self._embed([question, *(candidate.text for candidate in candidates)])
        similarity: Vectors = np.clip(vectors[1:] @ vectors[0], 0.0, 1.0)
        return similarity, vectors[1:]


def _cut(text: str, max_tokens: int | None) -> tuple[str, str]:
    """``text`` cut to its first ``max_tokens`` tokens (as :func:`count_tokens` counts them), with the finish
    reason: ``length`` when it was cut, else ``stop``."""
    if max_tokens is None or count_tokens(text) <= max_tokens:
        return text, "stop"
    kept, used = [], 0
    for piece in re.findall(r"\S+\s*", text):  # tokens never span whitespace: counts add up piece by piece
        used += count_tokens(piece)
        if used > max_tokens:
            break
        kept.append(piece)
    return "".join(kept).rstrip(), "length"


def _words(text: str) -> list[str]:
    """The words of ``text`` as the answerer compares them: the shared word handling, with ``snake_case`` names
    split ("RAGWATCH_EMBEDDER" holds "embedder") and "-ing" and "-ed" endings taken off ("switching" and
    "switched" match "switch")."""
    words = [part for word in terms(text) for part in word.split("_") if part]
    return [_stem(word) for word in words]


def _stem(word: str) -> str:
    for ending, shortest in (("ing", 6), ("ed", 5)):
        if word.endswith(ending) and len(word) >= shortest:
            return word[: -len(ending)]
    return word


def _looks_like_code(sentence: str) -> bool:
    """A shell line, a table row or markup: few letters and spaces among its characters."""
    if sentence.lstrip().startswith("|"):
        return True
    plain = sum(char.isalnum() or char in " .,;:'()-" for char in sentence)
    return plain < 0.85 * len(sentence)


def _candidates(passages: Sequence[Passage]) -> list[_Candidate]:
    """Every sentence of the passages once (differing only in case, spacing or closing punctuation: once)."""
    found: dict[str, _Candidate] = {}
    for number, passage in enumerate(passages, start=1):
        for position, (sentence, in_code_block) in enumerate(_sentences(passage.text)):
            text = " ".join(sentence.split())
            words = _words(text)
            code = in_code_block or _looks_like_code(text)
            key = " ".join(words)
            candidate = found.get(key)
            if candidate is None:
                prior = 1.0 / number  # the retrieval's ranking: earlier passages first
                candidate = _Candidate(
                    len(found), text, frozenset(words) - STOPWORDS, code, (number, position), prior=prior
                )
                found[key] = candidate
            if number not in candidate.sources:
                candidate.sources.append(number)
            candidate.documents.add(passage.document_id)
            candidate.written = max(candidate.written, passage.created_at or "")
    return list(found.values())


def _rarity(wanted: frozenset[str], candidates: list[_Candidate]) -> dict[str, float]:
    """Each word of the question weighted by how few candidate sentences hold it (an inverse document
    frequency over the sentences); a word none holds weighs the most."""
    count = len(candidates)
    return {
        word: math.log(1 + (count + 1) / (1 + sum(word in candidate.words for candidate in candidates)))
        for word in wanted
    }


def _drop_superseded(
    eligible: list[tuple[_Candidate, frozenset[str]]], wanted: frozenset[str], vectors: Vectors | None
) -> list[_Candidate]:
    """The eligible candidates without those an answer from a newer document on the same subject replaces."""
    dropped: set[int] = set()
    for candidate, matched in eligible:
        for other, other_matched in eligible:
            if other is candidate or not candidate.written or not other.written:
                continue
            if candidate.documents & other.documents or other.written <= candidate.written:
                continue
            same_words = matched == other_matched and 2 * len(matched) >= len(wanted)
            same_meaning = (
                vectors is not None and float(vectors[candidate.index] @ vectors[other.index]) >= _SAME_SUBJECT
            )
            if same_words or same_meaning:
                dropped.add(candidate.index)
    return [candidate for candidate, _ in eligible if candidate.index not in dropped]


def _near_copy(candidate: _Candidate, chosen: _Candidate) -> bool:
    union = candidate.words | chosen.words
    return bool(union) and len(candidate.words & chosen.words) / len(union) >= _NEAR_COPY


def _sentences(text: str) -> list[tuple[str, bool]]:
    """Candidate answer sentences, each with whether it is a line of code; fragments under three words carry
    no answer."""
    return [
        (sentence, code)
        for unit, code in _lines_of_thought(text)
        for sentence in split_sentences(unit)
        if len(sentence.split()) >= 3
    ]


def _lines_of_thought(text: str) -> list[tuple[str, bool]]:
    """A passage's logical lines, each with whether it is code: hard-wrapped prose lines are joined back, while
    list items, headings, table rows and every line of a code block stand alone; code fences are dropped."""
    units: list[tuple[str, bool]] = []
    in_code = joinable = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code, joinable = not in_code, False
            continue
        if not stripped:
            joinable = False
        elif joinable and not in_code and not _BLOCK_START.match(line):
            units[-1] = (units[-1][0] + " " + stripped, False)
        else:
            units.append((stripped, in_code))
            joinable = not in_code
    return units
