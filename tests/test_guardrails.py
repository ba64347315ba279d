from ragcli.answer.guardrails import check_answer, looks_like_refusal, split_sentences, support
from ragcli.models import Hit


def hit(n: int, text: str) -> Hit:
    return Hit(f"d{n}.md#0", f"d{n}.md", f"/c/d{n}.md", f"Doc {n}", "", text, "h", ("public",), 1.0)


PASSAGES = [hit(1, "Non-birthing parents receive 16 weeks of fully paid leave."),
            hit(2, "Passwords must be at least 14 characters long.")]


def test_valid_markers_are_kept_invalid_removed_and_recorded() -> None:
    checked = check_answer("Passwords need 14 characters [2] [7]. Leave is 16 weeks [1].", PASSAGES)
    assert "[7]" not in checked.text
    assert checked.invalid_markers == (7,)
    assert [c.n for c in checked.citations] == [1, 2]
    assert all(c.how == "marker" for c in checked.citations)


def test_uncited_sentences_are_attributed_by_support() -> None:
    checked = check_answer("Non-birthing parents get 16 weeks of paid leave. The moon is cheese.",
                           PASSAGES)
    assert [(c.n, c.how) for c in checked.citations] == [(1, "support")]
    assert checked.text == "Non-birthing parents get 16 weeks of paid leave. [1]"
    assert checked.unsupported == ("The moon is cheese.",)
    assert checked.supported_sentences == 1


def test_marker_on_an_unsupported_sentence_is_not_shown() -> None:
    checked = check_answer("The answer is purple elephants [1].\nPasswords need 14 characters [1].",
                           PASSAGES)
    assert checked.text == "Passwords need 14 characters. [2]"
    assert [(c.n, c.how) for c in checked.citations] == [(2, "support")]
    assert checked.unsupported == ("The answer is purple elephants.",)


def test_marker_to_no_passage_at_all() -> None:
    checked = check_answer("Something [1].", [])
    assert checked.citations == ()
    assert checked.invalid_markers == (1,)


def test_support_score() -> None:
    assert support("16 weeks of leave", PASSAGES[0].text) == 1.0
    assert support("the of and", PASSAGES[0].text) == 0.0


def test_split_keeps_markers_with_sentence() -> None:
    assert split_sentences("A is b. [1] C is d. [2]") == ["A is b. [1]", "C is d. [2]"]


def test_refusal_detection() -> None:
    assert looks_like_refusal("I don't know.")
    assert looks_like_refusal("")
    assert not looks_like_refusal("It is 16 weeks.")
