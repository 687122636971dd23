"""Markov removal effect and simplified Shapley values on examples computed on paper (sinks/datadriven.py).

The paper example, five journeys over channels A, B, C (revenue with the converting ones):

    J1  A, B      -> conversion  (100)
    J2  A, C      -> null
    J3  B         -> conversion  (50)
    J4  C, B, B   -> conversion  (70)   the repeat collapses: C, B
    J5  A         -> null

Order 1, transition counts (out of each state):
    start: A 3, B 1, C 1        (of 5)
    A:     B 1, C 1, null 1     (of 3)
    B:     conversion 3         (of 3)
    C:     B 1, null 1          (of 2)
P(conversion) from B = 1; from C = 1/2; from A = 1/3 + 1/3 * 1/2 = 1/2;
from start = 3/5 * 1/2 + 1/5 * 1 + 1/5 * 1/2 = 3/5.
Without A (start -> A goes to null): 1/5 + 1/10 = 3/10, removal effect 1 - (3/10)/(3/5) = 1/2.
Without B: nothing reaches conversion: 0, removal effect 1.
Without C: A = 1/3, start = 3/5 * 1/3 + 1/5 = 2/5, removal effect 1 - (2/5)/(3/5) = 1/3.
Sum 11/6: shares A 3/11, B 6/11, C 2/11; of 3 conversions: 9/11, 18/11, 6/11; of 220.00: 60, 120, 40.

Order 2 (states are the last two channels): start -> (A) 3, (B) 1, (C) 1; (A) -> (A,B) 1, (A,C) 1, null 1;
(A,B) -> conversion; (A,C) -> null; (B) -> conversion; (C) -> (C,B); (C,B) -> conversion.
P = 3/5 * 1/3 + 1/5 + 1/5 = 3/5. Without A (drops (A), (A,B), (A,C)): 2/5, effect 1/3. Without B (drops (A,B),
(B), (C,B)): 0, effect 1. Without C (drops (A,C), (C), (C,B)): 1/5 + 1/5 = 2/5, effect 1/3.
Sum 5/3: shares A 1/5, B 3/5, C 1/5.

Shapley: the converting channel sets are {A,B} (1 conversion, 100), {B} (1, 50), {B,C} (1, 70).
A = 1/2, B = 1/2 + 1 + 1/2 = 2, C = 1/2 conversions; revenue A 50, B 50 + 50 + 35 = 135, C 35.
"""

from __future__ import annotations

from itertools import combinations
from math import factorial

import pytest

from sinks.datadriven import Attribution, Journey, attribute, collapse

PAPER = [
    Journey(("A", "B"), True, 100.0),
    Journey(("A", "C"), False),
    Journey(("B",), True, 50.0),
    Journey(("C", "B", "B"), True, 70.0),
    Journey(("A",), False),
]


def by_channel(result: Attribution) -> dict[str, tuple[float, float, float, float]]:
    return {c.channel: (c.removal_effect, c.share, c.conversions, c.revenue) for c in result.credits}


def assert_close(actual: dict[str, tuple[float, ...]], expected: dict[str, tuple[float, ...]]) -> None:
    assert actual.keys() == expected.keys()
    for channel, values in expected.items():
        assert actual[channel] == pytest.approx(values, abs=1e-12), channel


def test_collapse_consecutive_repeats_only() -> None:
    assert collapse(["A", "A", "B", "A", "A"]) == ("A", "B", "A")
    assert collapse([]) == ()


def test_markov_order_1_paper_example() -> None:
    result = attribute(PAPER, "markov", order=1)
    assert (result.journeys, result.conversions, result.revenue) == (5, 3, 220.0)
    assert result.conversion_probability == pytest.approx(3 / 5, abs=1e-12)
    assert_close(
        by_channel(result),
        {
            "A": (1 / 2, 3 / 11, 9 / 11, 60.0),
            "B": (1.0, 6 / 11, 18 / 11, 120.0),
            "C": (1 / 3, 2 / 11, 6 / 11, 40.0),
        },
    )


def test_markov_order_2_paper_example() -> None:
    result = attribute(PAPER, "markov", order=2)
    assert result.conversion_probability == pytest.approx(3 / 5, abs=1e-12)
    assert_close(
        by_channel(result),
        {
            "A": (1 / 3, 1 / 5, 3 / 5, 44.0),
            "B": (1.0, 3 / 5, 9 / 5, 132.0),
            "C": (1 / 3, 1 / 5, 3 / 5, 44.0),
        },
    )


def test_markov_order_1_chain_with_a_loop() -> None:
    """A loop makes P(conversion) differ from the observed rate: A, B, A -> conversion; B -> null.

    start: A 1, B 1; A: B 1, conversion 1 (of 2); B: A 1, null 1 (of 2).
    x_A = 1/2 + 1/2 x_B, x_B = 1/2 x_A -> x_A = 2/3, x_B = 1/3; P = 1/2 (2/3 + 1/3) = 1/2.
    Without A: 0 (effect 1). Without B: x_A = 1/2, P = 1/4 (effect 1/2). Shares 2/3, 1/3.
    """
    result = attribute([Journey(("A", "B", "A"), True, 30.0), Journey(("B",), False)], "markov")
    assert result.conversion_probability == pytest.approx(1 / 2, abs=1e-12)
    assert_close(by_channel(result), {"A": (1.0, 2 / 3, 2 / 3, 20.0), "B": (1 / 2, 1 / 3, 1 / 3, 10.0)})


def test_a_channel_never_followed_by_conversion_gets_nothing() -> None:
    result = attribute([Journey(("A",), True, 10.0), Journey(("D",), False), Journey(("D", "D"), False)], "markov")
    assert_close(by_channel(result), {"A": (1.0, 1.0, 1.0, 10.0), "D": (0.0, 0.0, 0.0, 0.0)})


def test_no_conversion_credits_nothing() -> None:
    result = attribute([Journey(("A", "B"), False)], "markov", bootstrap=5)
    assert result.conversion_probability == 0.0
    assert_close(by_channel(result), {"A": (0.0, 0.0, 0.0, 0.0), "B": (0.0, 0.0, 0.0, 0.0)})


@pytest.mark.parametrize("model", ["markov", "shapley"])
def test_empty_input_and_touchless_journeys(model: str) -> None:
    for journeys in ([], [Journey((), True, 5.0)]):
        result = attribute(journeys, model, bootstrap=10)
        assert (result.journeys, result.conversions, result.credits) == (0, 0, ())


def test_shapley_paper_example() -> None:
    result = attribute(PAPER, "shapley")
    assert result.conversion_probability == pytest.approx(3 / 5)
    assert_close(
        by_channel(result),
        {"A": (0.0, 1 / 6, 1 / 2, 50.0), "B": (0.0, 2 / 3, 2.0, 135.0), "C": (0.0, 1 / 6, 1 / 2, 35.0)},
    )


def test_shapley_simplified_equals_the_full_formula() -> None:
    """The simplified sum is the exact Shapley value of v(S) = conversions of journeys whose set is within S."""
    journeys = [
        Journey(("A", "B", "C"), True),
        Journey(("A", "B"), True),
        Journey(("A", "B"), True),
        Journey(("B",), True),
        Journey(("C", "D"), True),
        Journey(("D",), False),
    ]
    players = ["A", "B", "C", "D"]
    sets = [frozenset(j.channels) for j in journeys if j.converted]

    def v(coalition: frozenset[str]) -> float:
        return float(sum(1 for s in sets if s <= coalition))

    n = len(players)
    full = {}
    for player in players:
        others = [p for p in players if p != player]
        total = 0.0
        for size in range(n):
            for subset in combinations(others, size):
                s = frozenset(subset)
                total += factorial(size) * factorial(n - size - 1) / factorial(n) * (v(s | {player}) - v(s))
        full[player] = total
    result = {c.channel: c.conversions for c in attribute(journeys, "shapley").credits}
    assert result == pytest.approx(full)
    assert result == pytest.approx({"A": 1 / 3 + 1, "B": 1 / 3 + 1 + 1, "C": 1 / 3 + 1 / 2, "D": 1 / 2})


@pytest.mark.parametrize("model", ["markov", "shapley"])
def test_bootstrap_is_reproducible_and_brackets_the_estimate(model: str) -> None:
    journeys = PAPER * 40
    first = attribute(journeys, model, bootstrap=200, seed=7)
    again = attribute(journeys, model, bootstrap=200, seed=7)
    other = attribute(journeys, model, bootstrap=200, seed=8)
    assert first == again
    assert first != other
    for credit in first.credits:
        assert credit.ci_low <= credit.conversions <= credit.ci_high
        assert credit.ci_low < credit.ci_high  # the resamples do vary
    point = attribute(journeys, model)
    assert [c.conversions for c in point.credits] == [c.conversions for c in first.credits]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="choose markov or shapley"):
        attribute(PAPER, "linear")
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        attribute(PAPER, "markov", order=4)


# -- the schedule (sinks/attribution_schedule.py): which runs are due ---------------------------------------------


def test_the_schedule_runs_what_is_missing_or_older_than_the_interval() -> None:
    from datetime import date, datetime, timedelta, timezone

    from sinks.attribution_schedule import ScheduledRun, due_runs, parse_models, trailing_period

    now = datetime(2024, 4, 1, 3, 0, tzinfo=timezone.utc)
    assert trailing_period(now, 31) == (date(2024, 3, 1), date(2024, 3, 31))  # whole days, ending yesterday
    period = (date(2024, 3, 1), date(2024, 3, 31))
    every = timedelta(hours=24)
    newest = {
        ("markov_1", "customer", *period): now - timedelta(hours=23),  # fresh
        ("shapley", "customer", *period): now - timedelta(hours=24),  # exactly one interval old: due
        ("markov_1", "lead", date(2024, 2, 29), date(2024, 3, 30)): now - timedelta(hours=1),  # yesterday's period
    }
    due = due_runs(now, every, 31, ("markov_1", "shapley"), ("customer", "lead"), newest)
    assert due == [
        ScheduledRun("markov_1", "lead", *period),
        ScheduledRun("shapley", "customer", *period),
        ScheduledRun("shapley", "lead", *period),
    ]
    assert [r.job_model for r in due] == [("markov", 1), ("shapley", 1), ("shapley", 1)]
    assert parse_models(" markov_2 , shapley,") == ("markov_2", "shapley")
    with pytest.raises(ValueError, match="unknown data-driven model\\(s\\) markov_4; choose from markov_1, markov_2"):
        parse_models("markov_4")


def test_the_schedule_settings_refuse_unknown_names() -> None:
    from pydantic import ValidationError

    from sinks.settings import SinkSettings

    assert SinkSettings(attribute_models="shapley, markov_3", attribute_stages="lead ,customer").attribute_stages == (
        "lead,customer"
    )
    with pytest.raises(ValidationError, match="unknown stage\\(s\\) won; choose from lead, mql"):
        SinkSettings(attribute_stages="won")
    with pytest.raises(ValidationError, match="unknown model\\(s\\) markov"):
        SinkSettings(attribute_models="markov")
