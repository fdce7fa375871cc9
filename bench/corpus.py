"""Deterministic synthetic text: a made-up vocabulary, paragraphs that chunk one to one, and questions.

Words are built from syllables and drawn with a Zipf-like skew, so full-text search sees common and rare
terms as in real prose. Each paragraph is four sentences of 13-17 words, 480 to 720 characters: one fits in
the default ``RAGWATCH_CHUNK_SIZE`` of 800 and two never do, so the chunker makes exactly one chunk per
paragraph.
"""

from __future__ import annotations

import numpy as np

_ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "st", "tr", "pl"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "n", "r", "s", "l", "m", "nd", "st"]


class Corpus:
    def __init__(self, seed: int = 7, vocabulary: int = 4000) -> None:
        self.rng = np.random.default_rng(seed)
        words: set[str] = set()
        while len(words) < vocabulary:
            syllables = int(self.rng.integers(2, 4))
            word = "".join(
                _ONSETS[self.rng.integers(len(_ONSETS))]
                + _VOWELS[self.rng.integers(len(_VOWELS))]
                + _CODAS[self.rng.integers(len(_CODAS))]
                for _ in range(syllables)
            )
            words.add(word)
        self.words = np.array(sorted(words))
        ranks = np.arange(1, vocabulary + 1, dtype=np.float64)
        weights = 1.0 / ranks**0.9
        self._cdf = np.cumsum(weights / weights.sum())

    def _draw(self, count: int) -> np.ndarray:
        return np.searchsorted(self._cdf, self.rng.random(count))

    def paragraphs(self, count: int) -> list[str]:
        """``count`` paragraphs of four sentences each."""
        lengths = self.rng.integers(13, 18, size=(count, 4))
        picks = self.words[self._draw(int(lengths.sum()))]
        out: list[str] = []
        position = 0
        for row in lengths:
            sentences = []
            for length in row:
                words = picks[position : position + length]
                position += length
                sentences.append(" ".join(words).capitalize() + ".")
            out.append(" ".join(sentences))
        return out

    def texts(self, count: int, words: int = 90) -> list[str]:
        """``count`` plain word sequences (retrieval rows, where sentence shape does not matter)."""
        picks = self.words[self._draw(count * words)].reshape(count, words)
        return [" ".join(row) for row in picks]

    def question_about(self, paragraph: str, terms: int = 3) -> str:
        """A question reusing ``terms`` of the paragraph's longer words, so retrieval finds it."""
        candidates = sorted({w.strip(".").lower() for w in paragraph.split() if len(w) > 6})
        chosen = self.rng.choice(candidates, size=min(terms, len(candidates)), replace=False)
        return f"What does the handbook say about {' '.join(str(c) for c in chosen)}?"
