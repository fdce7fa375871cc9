"""Answer-quality signals, computed cheaply on every answer made (a few tokenizations, no model call).

- ``top_score``: the best fused retrieval score (0..1): how well the knowledge base matched the question;
- ``groundedness``: the share of the answer's content words (no stopwords, no citation markers) that occur in
  the passages it cites: an answer that says things its sources do not scores low;
- ``citation_coverage``: the share of the answer's sentences that carry a ``[n]`` citation.

They are heuristics, not judgements: good enough to watch a distribution move, alert on a drop and find the
worst answers' traces, which is what they are for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from service.chunking import split_sentences
from service.models import Passage
from service.providers import NO_ANSWER
from service.providers.offline import STOPWORDS, terms

__all__ = ["AnswerQuality", "assess"]

_CITATION = re.compile(r"\[\d+\]")
_TRAILING_CITATION = re.compile(r"([.!?])\s*((?:\[\d+\])+)")


@dataclass(frozen=True, slots=True)
class AnswerQuality:
    outcome: str
    """``answered``, or ``no_answer`` when nothing was retrieved or the answer says the knowledge base does not
    say (then the other signals are ``None``: there is nothing to ground)."""
    top_score: float | None = None
    groundedness: float | None = None
    citation_coverage: float | None = None


def assess(answer: str, passages: Sequence[Passage]) -> AnswerQuality:
    """The quality signals of ``answer`` made from ``passages`` (the ones it may cite, best first)."""
    top_score = max((passage.score for passage in passages), default=None)
    if not passages or answer.strip() == NO_ANSWER:
        return AnswerQuality("no_answer", top_score=top_score)
    return AnswerQuality(
        "answered",
        top_score=top_score,
        groundedness=_groundedness(answer, passages),
        citation_coverage=_citation_coverage(answer),
    )


def _content_words(text: str) -> set[str]:
    """Words that say something: numbers included (an answer's "40 days" against a source's "25" is not
    grounded), stopwords and citation markers not."""
    return {word for word in terms(_CITATION.sub(" ", text)) if word not in STOPWORDS}


def _groundedness(answer: str, passages: Sequence[Passage]) -> float:
    said = _content_words(answer)
    if not said:
        return 1.0
    sources: set[str] = set()
    for passage in passages:
        sources |= _content_words(f"{passage.title}\n{passage.text}")
    return len(said & sources) / len(said)


def _citation_coverage(answer: str) -> float:
    # A citation written after its sentence's full stop ("... a year. [1]") belongs to that sentence.
    answer = _TRAILING_CITATION.sub(lambda match: f" {match.group(2)}{match.group(1)}", answer)
    sentences = [sentence for sentence in split_sentences(answer) if _content_words(sentence)]
    if not sentences:
        return 0.0
    return sum(1 for sentence in sentences if _CITATION.search(sentence)) / len(sentences)
