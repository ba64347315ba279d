"""Answer correctness as the gate judges it, and SQuAD's exact match and token F1."""

from __future__ import annotations

import pytest

from ragcli.evaluate.answer_metrics import answer_tokens, best_f1, contains_answer, exact_match, token_f1


@pytest.mark.parametrize(("answer", "expected"), [
    ("Non-birthing parents get 16 weeks of paid leave [1].", "16 weeks"),
    ("They get a 16-week leave.", "16 weeks"),
    ("The limit is **1,500 EUR** a year.", "1,500 EUR"),
    ("The limit is 1500 EUR.", "1,500 EUR"),
    ("Matching is 6% of salary.", "6 %"),
    ("Reviews happen in April and October.", "April and October"),
    ("The forecast is 48.6 million EUR.", "48.6 million EUR"),
])
def test_right_answers_are_contained(answer: str, expected: str) -> None:
    assert contains_answer(answer, [expected])


@pytest.mark.parametrize(("answer", "expected"), [
    ("Carry over up to 15 days.", "5"),  # "5" must not match "15"
    ("Leave is 6 weeks.", "16 weeks"),
    ("Leave is 16 days.", "16 weeks"),  # the unit counts
    ("Growth was 35 %.", "3.5 %"),  # a decimal point is not punctuation to drop
    ("It took 16 days and 2 weeks.", "16 weeks"),  # the tokens must be one run
    ("The Business plan is 990 EUR.", "390"),
    ("", "16 weeks"),
])
def test_wrong_answers_are_not(answer: str, expected: str) -> None:
    assert not contains_answer(answer, [expected])


def test_tokens_keep_numbers_whole() -> None:
    assert answer_tokens("It is 1,200.5 EUR, the 15th [2].") == ["it", "is", "1200.5", "eur", "15", "th"]


def test_squad_exact_match_and_f1() -> None:
    assert exact_match("The 16 weeks. [1]", ["16 weeks"]) == 1.0
    assert exact_match("16 weeks of leave", ["16 weeks"]) == 0.0
    assert token_f1("It is 16 weeks [1].", "16 weeks") == pytest.approx(2 / 3)
    assert token_f1("nothing alike", "16 weeks") == 0.0
    assert best_f1("16 weeks", ["twenty weeks", "16 weeks"]) == 1.0
