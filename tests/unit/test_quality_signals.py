"""The quality signals of an answer (service/chat/quality.py): cheap, and right on the cases they exist for."""

from __future__ import annotations

import pytest

from service.chat.quality import assess
from service.models import Passage
from service.providers import NO_ANSWER

HANDBOOK = Passage(
    document_id="handbook",
    chunk_id="handbook:0",
    title="Handbook",
    score=0.8,
    text="Every employee gets 25 days of paid vacation per year. Unused days expire at the end of March.",
)
EXPENSES = Passage(document_id="expenses", chunk_id="expenses:0", title="Expenses", score=0.5, text="Receipts.")


def test_an_answer_saying_only_what_its_passages_say_is_fully_grounded_and_cited() -> None:
    quality = assess("Employees get 25 days of paid vacation per year [1].", [HANDBOOK, EXPENSES])

    assert quality.outcome == "answered"
    assert quality.top_score == 0.8
    assert quality.groundedness == 1.0
    assert quality.citation_coverage == 1.0


def test_words_and_numbers_the_passages_do_not_hold_lower_groundedness() -> None:
    grounded = assess("Employees get 25 days of vacation [1].", [HANDBOOK]).groundedness
    wrong_number = assess("Employees get 40 days of vacation [1].", [HANDBOOK]).groundedness
    invented = assess("Employees get 25 days of vacation and a company car [1].", [HANDBOOK]).groundedness

    assert grounded == 1.0
    assert wrong_number is not None
    assert wrong_number < 1.0
    assert invented is not None
    assert invented < grounded


@pytest.mark.parametrize(
    ("answer", "coverage"),
    [
        ("Vacation is 25 days [1]. Unused days expire in March [1].", 1.0),
        ("Vacation is 25 days per year. [1] Unused days expire in March.", 0.5),  # the marker after the stop
        ("Vacation is 25 days. Unused days expire in March.", 0.0),
    ],
)
def test_citation_coverage_is_the_share_of_sentences_with_a_marker(answer: str, coverage: float) -> None:
    assert assess(answer, [HANDBOOK]).citation_coverage == coverage


def test_nothing_found_or_the_no_answer_reply_is_a_no_answer_without_scores_to_ground() -> None:
    nothing = assess(NO_ANSWER, [])
    declined = assess(NO_ANSWER, [HANDBOOK])

    assert (nothing.outcome, nothing.top_score, nothing.groundedness) == ("no_answer", None, None)
    assert (declined.outcome, declined.top_score, declined.citation_coverage) == ("no_answer", 0.8, None)
