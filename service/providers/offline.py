"""The offline default: a feature-hashing embedder and an extractive answerer. No network, no key."""

from __future__ import annotations

import itertools
import re
import unicodedata
import zlib
from collections.abc import AsyncIterator, Sequence

import numpy as np

from service.chunking import split_sentences
from service.providers.base import Answer, Passage, Vectors, build_user_prompt, count_tokens, normalize_rows

__all__ = ["NO_ANSWER", "ExtractiveAnswerer", "HashingEmbedder"]

NO_ANSWER = "The knowledge base does not say."
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    }
)


def _terms(text: str) -> list[str]:
    """Lower-cased, accent-folded words with a naive plural strip ("documents" and "document" match)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    # Drop the combining marks, or "\w+" would split "zürich" into "zu" and "rich".
    folded = "".join(char for char in decomposed if not unicodedata.combining(char))
    words = _WORD.findall(folded)
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


_BLOCK_START = re.compile(r"^\s*(?:[-*+]\s|\d+[.)]\s|#|\||>)")


def _lines_of_thought(text: str) -> list[str]:
    """A passage's logical lines: hard-wrapped prose lines are joined back, while list items, headings, table
    rows and every line of a code block stand alone; code fences themselves are dropped."""
    units: list[str] = []
    in_code = joinable = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code, joinable = not in_code, False
            continue
        if not stripped:
            joinable = False
        elif joinable and not in_code and not _BLOCK_START.match(line):
            units[-1] += " " + stripped
        else:
            units.append(stripped)
            joinable = not in_code
    return units


def _sentences(text: str) -> list[str]:
    """Candidate answer sentences: fragments under three words carry no answer."""
    return [
        sentence for unit in _lines_of_thought(text) for sentence in split_sentences(unit) if len(sentence.split()) >= 3
    ]


class HashingEmbedder:
    """Signed feature hashing of word unigrams and bigrams: deterministic across processes and machines.

    ``zlib.crc32`` stands in for Python's ``hash``, which is salted per process.
    """

    provider = "ragwatch"

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.model = f"hashing-{dimensions}"

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return self.embed_sync(texts)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            terms = [t for t in _terms(text) if t not in _STOPWORDS]
            features = terms + [f"{a} {b}" for a, b in itertools.pairwise(terms)]
            if not features:
                continue
            hashes = np.fromiter((zlib.crc32(f.encode()) for f in features), dtype=np.uint64, count=len(features))
            signs = np.where((hashes >> np.uint64(31)) & np.uint64(1), -1.0, 1.0).astype(np.float32)
            weights = np.concatenate([np.ones(len(terms)), np.full(len(features) - len(terms), 0.5)])
            np.add.at(out[row], (hashes % np.uint64(self.dimensions)).astype(np.intp), signs * weights)
        return normalize_rows(out)


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
    """Answers with the retrieved sentences that share the most terms with the question, each cited.

    It never invents text, so every answer is grounded; when nothing overlaps it says so.
    """

    provider = "ragwatch"
    model = "extractive"
    version = "2"  # 2: a sentence held by several passages is said once, citing them all

    def __init__(self, max_sentences: int = 3) -> None:
        self.max_sentences = max_sentences

    async def answer(self, question: str, passages: Sequence[Passage]) -> Answer:
        text = self._compose(question, passages)
        return Answer(
            text=text,
            model=self.model,
            input_tokens=count_tokens(build_user_prompt(question, passages)),
            output_tokens=count_tokens(text),
            finish_reason="stop",
        )

    async def stream(self, question: str, passages: Sequence[Passage]) -> ExtractiveAnswer:
        return ExtractiveAnswer(await self.answer(question, passages))

    def _compose(self, question: str, passages: Sequence[Passage]) -> str:
        """The best sentences, in passage order, each once: a sentence found in several passages (chunk
        overlap, or the same statement in two documents) is said once and cites every passage it is in."""
        wanted = set(_terms(question)) - _STOPWORDS
        found: dict[str, _Candidate] = {}
        for number, passage in enumerate(passages, start=1):
            for position, sentence in enumerate(_sentences(passage.text)):
                overlap = len(wanted & set(_terms(sentence)))
                if not overlap:
                    continue
                score = overlap / (1 + len(sentence) / 200) + passage.score * 0.1
                text = " ".join(sentence.split())
                candidate = found.setdefault(_sentence_key(text), _Candidate(text, score, number, position))
                candidate.score = max(candidate.score, score)
                if number not in candidate.sources:
                    candidate.sources.append(number)
        if not found:
            return NO_ANSWER
        best = sorted(found.values(), key=lambda c: -c.score)[: self.max_sentences]
        best.sort(key=lambda c: (c.sources[0], c.position))
        return " ".join(f"{c.text} {''.join(f'[{n}]' for n in c.sources)}" for c in best)


class _Candidate:
    """A sentence the answer may use: its best score and every passage (by number) that holds it."""

    __slots__ = ("position", "score", "sources", "text")

    def __init__(self, text: str, score: float, number: int, position: int) -> None:
        self.text = text
        self.score = score
        self.sources = [number]
        self.position = position


def _sentence_key(sentence: str) -> str:
    """Sentences that differ only in case, spacing or closing punctuation are the same sentence."""
    return " ".join(_terms(sentence))
