"""OCR reward: the pure Flow-GRPO formula on tables and properties, then the real RapidOCR engine on rendered text."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from scorers.ocr import OCR, NoQuotedTextError, levenshtein, normalise, ocr_reward, target_text
from tests.support.textimages import render_text

BadImageError = ValueError  # bad images raise ValueError naming their index

# ------------------------------------------------------------------------------------------ target extraction


@pytest.mark.parametrize(
    ("prompt", "target"),
    [
        ('a neon sign that says "OPEN 24 HOURS" at night', "OPEN 24 HOURS"),
        ('first "cat" then "dog"', "cat"),  # only the first pair counts
        ('"edge"', "edge"),
        ('a "  spaced  " word', "  spaced  "),  # kept verbatim; spaces go at scoring time
    ],
)
def test_target_is_first_quoted_span(prompt: str, target: str) -> None:
    assert target_text(prompt) == target


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a sign with no quotes", "no double-quoted text"),
        ('a sign that says "OPEN', "unclosed double quote"),
        ('an empty "" sign', "empty"),
        ('a blank "   " sign', "empty"),
        ("curly \u201cquotes\u201d are not quotes", "no double-quoted text"),
    ],
)
def test_prompts_without_a_usable_quote_are_refused(prompt: str, message: str) -> None:
    with pytest.raises(NoQuotedTextError, match=message):
        target_text(prompt)


# ------------------------------------------------------------------------------------------ the reward formula


@pytest.mark.parametrize(
    ("recognised", "target", "reward"),
    [
        ("Hello World", "hello world", 1.0),  # case and spaces are ignored
        ("HELLOWORLD", "Hello World", 1.0),
        ("hell o", "Hello", 1.0),
        ("xx HELLO yy", "hello", 1.0),  # substring shortcut: extra text costs nothing
        ("helo", "hello", 1 - 1 / 5),  # one deletion
        ("kitten", "sitting", 1 - 3 / 7),  # classic distance 3
        ("ab", "abc", 1 - 1 / 3),
        ("", "hello", 0.0),  # nothing read: d = 5 = |T|
        ("completely unrelated words", "cat", 0.0),  # d > |T| is capped at |T|
        ("hel\tlo", "hello", 1 - 1 / 5),  # only ' ' is deleted, as in Flow-GRPO
        ("HELLOX", "hello!", 1 - 1 / 6),  # substitution of the last character
    ],
)
def test_reward_table(recognised: str, target: str, reward: float) -> None:
    assert ocr_reward(recognised, target) == pytest.approx(reward, abs=1e-12)


def test_cap_makes_long_garbage_equal_to_nothing() -> None:
    # without the cap, 40 wrong characters would give 1 - 40/4 = -9
    assert ocr_reward("z" * 40, "abcd") == 0.0 == ocr_reward("", "abcd")


@functools.cache
def _lev_recursive(a: str, b: str) -> int:
    """Independent textbook recursion for the edit distance (small strings only)."""
    if not a or not b:
        return len(a) + len(b)
    return min(
        _lev_recursive(a[1:], b) + 1,
        _lev_recursive(a, b[1:]) + 1,
        _lev_recursive(a[1:], b[1:]) + (a[0] != b[0]),
    )


small = st.text(alphabet="abcAB x", max_size=7)


@given(small, small)
def test_levenshtein_matches_recursion_and_is_symmetric(a: str, b: str) -> None:
    assert levenshtein(a, b) == _lev_recursive(a, b) == levenshtein(b, a)


@given(small, small, small)
def test_levenshtein_triangle_inequality(a: str, b: str, c: str) -> None:
    assert levenshtein(a, c) <= levenshtein(a, b) + levenshtein(b, c)


@given(
    st.text(alphabet="abcAB xyz", max_size=12), st.text(alphabet="abcAB", min_size=1, max_size=8)
)
def test_reward_is_in_unit_interval_and_one_iff_substring(recognised: str, target: str) -> None:
    r = ocr_reward(recognised, target)
    assert 0.0 <= r <= 1.0
    assert (r == 1.0) == (normalise(target) in normalise(recognised))


# ------------------------------------------------------------------------------------------ the real engine


@pytest.fixture(scope="module")
def ocr() -> OCR:
    return OCR()


def test_rapidocr_reads_rendered_text(ocr: OCR) -> None:
    images = [
        render_text("Hello World"),
        render_text("FLOW GRPO"),
        render_text("CAT"),
        Image.new("RGB", (256, 256)),
    ]
    prompts = [
        'a sign that says "hello world"',
        'a poster with the word "grpo"',  # substring of what is written
        'a mug printed with "DOG"',  # wrong word: distance 3 = |T|
        'a blank wall with "text"',  # nothing to read
    ]
    scores = ocr(images, prompts)
    assert scores.rewards == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert scores.values == scores.rewards
    assert scores.details is not None
    assert normalise(scores.details[0]["text"]) == "helloworld"
    assert scores.details[3]["text"] == ""
    assert ocr.version == "1-rapidocr" and scores.details[0]["engine"] == "rapidocr"


def test_partial_reading_gives_partial_credit(ocr: OCR) -> None:
    # the image says FLOW, the prompt asks for FLOWS: one insertion away -> 1 - 1/5
    scores = ocr([render_text("FLOW")], ['a sign saying "FLOWS"'])
    assert scores.rewards[0] == pytest.approx(0.8)


def test_odd_but_valid_inputs_are_read(ocr: OCR) -> None:
    gray = render_text("GRAY", mode="L")
    # RGBA: the alpha channel is dropped as the reference scorers' Image.convert("RGB") drops it
    rgba = render_text("ALPHA", mode="RGBA", background=(255, 255, 255, 0), ink=(0, 0, 0, 255))
    # 16-bit: the text survives only if values are scaled by 1/257 (clipping at 255 makes everything white)
    eight = np.asarray(
        render_text("SIXTEEN", mode="L", background=(230,), ink=(20,)), dtype=np.uint16
    )
    sixteen = Image.fromarray(eight * 257)
    assert sixteen.mode.startswith("I;16")
    tiny = Image.new("RGB", (3, 3), (255, 255, 255))
    scores = ocr(
        [gray, rgba, sixteen, tiny],
        ['"gray"', '"alpha"', '"sixteen"', '"tiny"'],
    )
    assert scores.rewards == pytest.approx([1.0, 1.0, 1.0, 0.0])


def test_bad_inputs_fail_with_clear_errors(ocr: OCR) -> None:
    good = render_text("A")
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        ocr([good, good], ['"a"'])
    with pytest.raises(NoQuotedTextError, match="prompt has no double-quoted text"):
        ocr([good], ["no quotes here"])
    buffer = io.BytesIO()
    good.save(buffer, format="PNG")
    truncated = Image.open(io.BytesIO(buffer.getvalue()[:300]))
    with pytest.raises(BadImageError, match="image 1: cannot be decoded"):
        ocr([good, truncated], ['"a"', '"b"'])
    with pytest.raises(BadImageError, match="image 0: has zero size"):
        ocr([Image.new("RGB", (0, 5))], ['"a"'])


def test_engine_failure_scores_zero_and_says_why(
    ocr: OCR, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        name = "broken"

        def read(self, image: np.ndarray) -> list[tuple[str, float]]:
            raise RuntimeError("engine exploded")

    scorer = OCR.__new__(OCR)
    scorer.engine, scorer.version = Broken(), "1-broken"
    scores = scorer([render_text("X")], ['"x"'])
    assert scores.rewards == [0.0]
    assert scores.details is not None and "engine exploded" in scores.details[0]["error"]
    assert "engine exploded" in caplog.text


def test_engine_choice_errors() -> None:
    with pytest.raises(
        ValueError, match="unknown OCR engine 'tesseract'; choose one of rapidocr, paddleocr"
    ):
        OCR(engine="tesseract")
    try:
        import paddleocr  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'flow-opd\[paddleocr\]'"):
            OCR(engine="paddleocr")
