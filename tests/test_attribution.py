"""Attribution models: exact credits on hand-computed journeys, edge cases, and the sum invariants.

Expected values are worked out by hand in the comments; D() keeps them exact.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.outputs import AttributionModel as M
from schemas.outputs import Conversion, Touch
from stream_jobs.rules.attribution import (
    DEFAULT_LOOKBACK,
    Milestones,
    attribute,
    exact_shares,
    round_shares,
    shares,
    split_revenue,
    window,
)

C = datetime(2026, 3, 29, 12, 0, tzinfo=timezone.utc)  # the conversion
DAY = timedelta(days=1)


def touch(name: str, before: timedelta, channel: str = "Organic Search", campaign: str = "") -> Touch:
    return Touch(
        touch_id=name,
        visitor_id="v1",
        site_id="s",
        occurred_at=C - before,
        channel=channel,
        source=f"src-{name}",
        medium=f"med-{name}",
        campaign=campaign,
        event_id=f"e-{name}",
    )


def conversion(revenue: str | None = None, stage: str = "customer", version: int = 1) -> Conversion:
    return Conversion(
        conversion_id="conv-1",
        lead_id="lead-1",
        stage=stage,
        occurred_at=C,
        revenue=None if revenue is None else D(revenue),
        currency="EUR" if revenue else None,
        touch_count=0,
        event_id="crm-1",
        version=version,
    )


def by_model(credits, field: str = "credit") -> dict[M, list]:
    result: dict[M, list] = {}
    for credit in credits:
        result.setdefault(credit.model, []).append(getattr(credit, field))
    return result


# Journey A: five touches a week apart, a direct touch in the middle; lead created just after t2,
# opportunity after t4, customer at t5 (which is at the conversion time itself). 12,000.00 EUR.
JOURNEY_A = [
    touch("t1", 28 * DAY, "Organic Search"),
    touch("t2", 21 * DAY, "Paid Social", "spring"),
    touch("t3", 14 * DAY, "Direct"),
    touch("t4", 7 * DAY, "Email"),
    touch("t5", 0 * DAY, "Referral"),
]
MILESTONES_A = Milestones(lead_at=C - 21 * DAY + timedelta(minutes=5), opportunity_at=C - 6 * DAY, customer_at=C)

EXPECTED_A = {
    M.FIRST_TOUCH: (["1", "0", "0", "0", "0"], ["12000.00", "0.00", "0.00", "0.00", "0.00"]),
    # t5 is not direct, so it takes it all.
    M.LAST_TOUCH: (["0", "0", "0", "0", "1"], ["0.00", "0.00", "0.00", "0.00", "12000.00"]),
    M.LINEAR: (["0.2"] * 5, ["2400.00"] * 5),
    # Ages 28, 21, 14, 7, 0 days: weights 1/16, 1/8, 1/4, 1/2, 1 (sum 31/16) -> 1/31, 2/31, 4/31, 8/31, 16/31.
    # Rounded: 0.032258065 + 0.064516129 + 0.129032258 + 0.258064516 + 0.516129032 = 1 (no residue).
    # Cents: 1,200,000 * k/31 = 38709.68, 77419.35, 154838.71, 309677.42, 619354.84 -> floors sum 1,199,997;
    # the 3 cents left go to the largest remainders .84 (t5), .71 (t3), .68 (t1).
    M.TIME_DECAY: (
        ["0.032258065", "0.064516129", "0.129032258", "0.258064516", "0.516129032"],
        ["387.10", "774.19", "1548.39", "3096.77", "6193.55"],
    ),
    # 40% t1 (first), 40% t2 (lead), 20% / 3 to t3, t4, t5 = 0.0666... -> 0.066666667 each; sum 1.000000001,
    # residue -1e-9 to the largest share: t1 and t2 tie at 0.4, the latest (t2) takes it.
    M.U_SHAPED: (
        ["0.4", "0.399999999", "0.066666667", "0.066666667", "0.066666667"],
        ["4800.00", "4800.00", "800.00", "800.00", "800.00"],
    ),
    # 30% t1, t2 (lead), t4 (opportunity); 10% / 2 to t3 and t5.
    M.W_SHAPED: (["0.3", "0.3", "0.05", "0.3", "0.05"], ["3600.00", "3600.00", "600.00", "3600.00", "600.00"]),
    # 22.5% t1, t2, t4, t5 (customer); 10% to t3, the only other touch.
    M.FULL_PATH: (["0.225", "0.225", "0.1", "0.225", "0.225"], ["2700.00", "2700.00", "1200.00", "2700.00", "2700.00"]),
}


@pytest.mark.parametrize("model", list(M))
def test_journey_a_every_model(model):
    credits = by_model(attribute(JOURNEY_A, conversion("12000.00"), MILESTONES_A))
    revenues = by_model(attribute(JOURNEY_A, conversion("12000.00"), MILESTONES_A), "revenue")
    expected_shares, expected_revenue = EXPECTED_A[model]
    assert credits[model] == [D(s) for s in expected_shares]
    assert revenues[model] == [D(r) for r in expected_revenue]
    assert sum(credits[model]) == 1
    assert sum(revenues[model]) == D("12000.00")


def test_credit_records_carry_the_touch_and_the_conversion():
    credits = attribute(JOURNEY_A, conversion("12000.00", version=3), MILESTONES_A)
    assert len(credits) == 7 * 5
    u_t2 = next(c for c in credits if c.model == M.U_SHAPED and c.touch_id == "t2")
    assert u_t2.model_dump() == {
        "conversion_id": "conv-1",
        "lead_id": "lead-1",
        "stage": "customer",
        "model": M.U_SHAPED,
        "touch_id": "t2",
        "touch_index": 1,
        "touch_at": C - 21 * DAY,
        "converted_at": C,
        "channel": "Paid Social",
        "source": "src-t2",
        "medium": "med-t2",
        "campaign": "spring",
        "credit": D("0.399999999"),
        "revenue": D("4800.00"),
        "currency": "EUR",
        "version": 3,
    }
    assert [m.value for m in dict.fromkeys(c.model for c in credits)] == [m.value for m in M]


# Journey B: a touch outside the 90-day window, then three touches; the last one direct. Lead and opportunity on
# the same touch (t2), customer on the direct touch t3 at the conversion time. 100.00 EUR.
JOURNEY_B = [
    touch("t0", 100 * DAY, "Paid Search"),
    touch("t1", 14 * DAY, "Organic Social"),
    touch("t2", 7 * DAY, "Email"),
    touch("t3", 0 * DAY, "Direct"),
]
MILESTONES_B = Milestones(lead_at=C - 2 * DAY, opportunity_at=C - 2 * DAY, customer_at=C)

EXPECTED_B = {
    M.FIRST_TOUCH: (["1", "0", "0"], ["100.00", "0.00", "0.00"]),  # t0 is outside the window
    M.LAST_TOUCH: (["0", "1", "0"], ["0.00", "100.00", "0.00"]),  # the direct t3 does not steal it from t2
    # 1/3 each -> 0.333333333 x 3 = 0.999999999; +1e-9 to the largest (all tie: the latest, t3).
    # 10,000 cents / 3 = 3333.33 each, one cent left, equal remainders and shares: the latest (t3).
    M.LINEAR: (["0.333333333", "0.333333333", "0.333333334"], ["33.33", "33.33", "33.34"]),
    # Ages 14, 7, 0 days: 1/4, 1/2, 1 -> 1/7, 2/7, 4/7 = 0.142857143 + 0.285714286 + 0.571428571 = 1.
    # Cents 1428.57, 2857.14, 5714.29 -> floors 9999, the cent goes to the largest remainder (.57, t1).
    M.TIME_DECAY: (["0.142857143", "0.285714286", "0.571428571"], ["14.29", "28.57", "57.14"]),
    M.U_SHAPED: (["0.4", "0.4", "0.2"], ["40.00", "40.00", "20.00"]),
    # Lead and opportunity both on t2: 30% + 30%.
    M.W_SHAPED: (["0.3", "0.6", "0.1"], ["30.00", "60.00", "10.00"]),
    # 22.5% t1, 45% t2, 22.5% t3, no other touch for the 10%: 0.9 normalised to 1 -> 0.25, 0.5, 0.25.
    M.FULL_PATH: (["0.25", "0.5", "0.25"], ["25.00", "50.00", "25.00"]),
}


@pytest.mark.parametrize("model", list(M))
def test_journey_b_window_direct_last_and_coinciding_milestones(model):
    credits = attribute(JOURNEY_B, conversion("100.00"), MILESTONES_B)
    expected_shares, expected_revenue = EXPECTED_B[model]
    assert by_model(credits)[model] == [D(s) for s in expected_shares]
    assert by_model(credits, "revenue")[model] == [D(r) for r in expected_revenue]
    assert by_model(credits, "touch_id")[model] == ["t1", "t2", "t3"]
    assert by_model(credits, "touch_index")[model] == [0, 1, 2]


# Journey C: a lead conversion (no revenue) with four touches a day apart; the lead touch is the last one,
# no opportunity or customer yet (the opportunity_at given is after the conversion: not reached, dropped).
JOURNEY_C = [touch("t1", 3 * DAY), touch("t2", 2 * DAY, "Direct"), touch("t3", DAY, "Email"), touch("t4", 0 * DAY)]
MILESTONES_C = Milestones(lead_at=C, opportunity_at=C + DAY)


def test_journey_c_missing_positions_are_normalised():
    credits = by_model(attribute(JOURNEY_C, conversion(stage="lead"), MILESTONES_C))
    # W: 30% t1, 30% t4, 10% / 2 for t2, t3; total 0.7 -> 3/7, 1/14, 1/14, 3/7.
    assert credits[M.W_SHAPED] == [D("0.428571429"), D("0.071428571"), D("0.071428571"), D("0.428571429")]
    # Full path: 22.5% t1, 22.5% t4, 5% t2, 5% t3; total 0.55 -> 9/22, 1/11, 1/11, 9/22.
    assert credits[M.FULL_PATH] == [D("0.409090909"), D("0.090909091"), D("0.090909091"), D("0.409090909")]
    # U: 40% t1, 40% t4, 10% t2, 10% t3: complete, nothing to normalise.
    assert credits[M.U_SHAPED] == [D("0.4"), D("0.1"), D("0.1"), D("0.4")]
    without_opportunity = by_model(attribute(JOURNEY_C, conversion(stage="lead"), Milestones(lead_at=C)))
    assert without_opportunity == credits


def test_no_revenue_gives_zero_revenue_and_no_currency():
    credits = attribute(JOURNEY_C, conversion(stage="lead"), MILESTONES_C)
    assert {c.revenue for c in credits} == {D("0.00")}
    assert {c.currency for c in credits} == {None}


def test_lead_milestone_before_every_touch_has_no_position():
    # The lead was created before the first touch in the window: U-shaped keeps first 40% and the rest 20%.
    credits = by_model(attribute(JOURNEY_C, conversion(stage="customer"), Milestones(lead_at=C - 10 * DAY)))
    # 0.4 for t1, 0.2 / 3 for the others; total 0.6 -> 2/3, 1/9, 1/9, 1/9 -> 0.666666667 + 3 x 0.111111111 = 1.
    assert credits[M.U_SHAPED] == [D("0.666666667"), D("0.111111111"), D("0.111111111"), D("0.111111111")]


def test_first_touch_that_is_also_the_lead_touch_adds_up():
    journey = [touch("t1", 5 * DAY), touch("t2", 3 * DAY), touch("t3", DAY)]
    credits = by_model(attribute(journey, conversion("90.00"), Milestones(lead_at=C - 4 * DAY)))
    assert credits[M.U_SHAPED] == [D("0.8"), D("0.1"), D("0.1")]
    assert by_model(attribute(journey, conversion("90.00"), Milestones(lead_at=C - 4 * DAY)), "revenue")[
        M.U_SHAPED
    ] == [D("72.00"), D("9.00"), D("9.00")]


def test_all_direct_journey_credits_the_last_direct_touch():
    journey = [touch("t1", 2 * DAY, "Direct"), touch("t2", DAY, "Direct")]
    assert shares(M.LAST_TOUCH, journey, C, Milestones()) == [D(0), D(1)]


def test_no_touch_credits_none():
    journey = [touch("old", 91 * DAY), touch("later", -DAY)]  # one before the window, one after the conversion
    credits = attribute(journey, conversion("500.00"), Milestones(lead_at=C))
    assert len(credits) == len(M)
    for credit in credits:
        assert (
            credit.touch_id,
            credit.touch_index,
            credit.touch_at,
            credit.channel,
            credit.source,
            credit.medium,
            credit.campaign,
        ) == ("(none)", 0, None, "(none)", "(none)", "(none)", "")
        assert (credit.credit, credit.revenue, credit.currency) == (D(1), D("500.00"), "EUR")
    assert [c.model for c in attribute([], conversion(), Milestones())] == list(M)


def test_one_touch_takes_everything_in_every_model():
    credits = attribute([touch("only", 30 * DAY, "Direct")], conversion("12.34"), Milestones(lead_at=C - 40 * DAY))
    assert [(c.model, c.credit, c.revenue) for c in credits] == [(m, D(1), D("12.34")) for m in M]


def test_window_bounds_are_inclusive_and_configurable():
    journey = [touch("edge", 90 * DAY), touch("now", 0 * DAY), touch("out", 90 * DAY + timedelta(seconds=1))]
    assert [t.touch_id for t in window(journey, C)] == ["edge", "now"]
    assert DEFAULT_LOOKBACK == timedelta(days=90)
    short = attribute(journey, conversion(), Milestones(), lookback=timedelta(days=30))
    assert {c.touch_id for c in short} == {"now"}


def test_window_orders_by_time_then_touch_id_and_drops_duplicates():
    same_time = [touch("b", DAY), touch("a", DAY), touch("c", 2 * DAY), touch("a", DAY)]
    assert [t.touch_id for t in window(same_time, C)] == ["c", "a", "b"]


def test_shares_refuses_an_unwindowed_journey():
    with pytest.raises(ValueError, match="ordered by time"):
        shares(M.LINEAR, [touch("t2", DAY), touch("t1", 2 * DAY)], C, Milestones())
    with pytest.raises(ValueError, match="after the conversion"):
        shares(M.LINEAR, [touch("t1", -DAY)], C, Milestones())


def test_time_decay_halves_every_seven_days():
    journey = [touch("t1", 7 * DAY), touch("t2", 0 * DAY)]
    assert shares(M.TIME_DECAY, journey, C, Milestones()) == [D("0.333333333"), D("0.666666667")]
    # 3.5 days: 2 ** -0.5 = 0.70710678...; shares 0.7071/1.7071 = 0.414213562..., 1/1.7071 = 0.585786437...
    half = [touch("t1", timedelta(days=3.5)), touch("t2", 0 * DAY)]
    assert shares(M.TIME_DECAY, half, C, Milestones()) == [D("0.414213562"), D("0.585786438")]


def test_rounding_residue_goes_to_the_largest_share():
    from fractions import Fraction as F

    assert round_shares([F(1, 3), F(2, 3)]) == [D("0.333333333"), D("0.666666667")]
    assert round_shares([F(1, 6)] * 6) == [D("0.166666667")] * 5 + [D("0.166666665")]  # ties: the latest
    assert split_revenue(D("0.01"), [F(1, 3)] * 3) == [D("0.00"), D("0.00"), D("0.01")]
    assert split_revenue(D("-10.00"), [F(1, 3)] * 3) == [D("-3.33"), D("-3.33"), D("-3.34")]  # a refund
    assert split_revenue(None, [F(1)]) == [D("0.00")]


CHANNELS = ["Direct", "Organic Search", "Paid Search", "Email", "Referral"]


@st.composite
def journeys(draw):
    count = draw(st.integers(0, 12))
    ages = draw(st.lists(st.integers(0, 120 * 24 * 3600), min_size=count, max_size=count))
    channels = draw(st.lists(st.sampled_from(CHANNELS), min_size=count, max_size=count))
    touches = [
        touch(f"t{i}", timedelta(seconds=age), channel)
        for i, (age, channel) in enumerate(zip(ages, channels, strict=False))
    ]
    milestone = st.none() | st.integers(-5 * 24 * 3600, 120 * 24 * 3600).map(lambda s: C - timedelta(seconds=s))
    milestones = Milestones(draw(milestone), draw(milestone), draw(milestone))
    cents = draw(st.none() | st.integers(0, 10**12))
    return touches, milestones, None if cents is None else D(cents).scaleb(-2)


@settings(max_examples=300, deadline=None)
@given(journeys())
def test_shares_sum_to_one_and_revenue_to_the_deal_value(case):
    touches, milestones, revenue = case
    conv = conversion() if revenue is None else conversion(str(revenue))
    credits = attribute(touches, conv, milestones)
    in_window = window(touches, C)
    assert len(credits) == len(M) * max(1, len(in_window))
    for model, model_shares in by_model(credits).items():
        assert sum(model_shares) == 1, model
        assert all(D(0) <= share <= D(1) for share in model_shares)
        assert model_shares == (shares(model, in_window, C, milestones) or [D(1)])
    for model, revenues in by_model(credits, "revenue").items():
        assert sum(revenues) == (revenue if revenue is not None else D(0)), model
        assert all(part >= 0 for part in revenues)


@settings(max_examples=200, deadline=None)
@given(journeys())
def test_exact_shares_are_exact(case):
    touches, milestones, _ = case
    in_window = window(touches, C)
    for model in M:
        exact = exact_shares(model, in_window, C, milestones)
        assert (sum(exact) == 1) if in_window else (exact == [])


def _reference_credits(touches, conv, milestones):
    """attribute() spelled out with the public fraction functions and validated Credit models."""
    from fractions import Fraction as F

    from schemas.outputs import Credit

    in_window = window(touches, conv.occurred_at)
    common = dict(
        conversion_id=conv.conversion_id,
        lead_id=conv.lead_id,
        stage=conv.stage,
        converted_at=conv.occurred_at,
        currency=conv.currency,
        version=conv.version,
    )
    credits = []
    for model in M:
        if not in_window:
            credits.append(
                Credit(
                    **common,
                    model=model,
                    touch_id="(none)",
                    touch_index=0,
                    touch_at=None,
                    channel="(none)",
                    source="(none)",
                    medium="(none)",
                    campaign="",
                    credit=round_shares([F(1)])[0],
                    revenue=split_revenue(conv.revenue, [F(1)])[0],
                )
            )
            continue
        exact = exact_shares(model, in_window, conv.occurred_at, milestones)
        for index, (t, share, revenue) in enumerate(
            zip(in_window, round_shares(exact), split_revenue(conv.revenue, exact), strict=False)
        ):
            credits.append(
                Credit(
                    **common,
                    model=model,
                    touch_id=t.touch_id,
                    touch_index=index,
                    touch_at=t.occurred_at,
                    channel=t.channel,
                    source=t.source,
                    medium=t.medium,
                    campaign=t.campaign,
                    credit=share,
                    revenue=revenue,
                )
            )
    return credits


@settings(max_examples=300, deadline=None)
@given(journeys())
def test_attribute_integer_path_equals_the_fraction_rules(case):
    from schemas import serde

    touches, milestones, revenue = case
    conv = conversion() if revenue is None else conversion(str(revenue))
    got, want = attribute(touches, conv, milestones), _reference_credits(touches, conv, milestones)
    assert got == want
    assert [serde.dumps(c) for c in got] == [serde.dumps(c) for c in want]
    assert [type(c).__pydantic_serializer__.to_json(c) for c in got] == [serde.dumps(c) for c in want]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400 * 24 * 3600 * 10**6))
def test_cached_decay_equals_the_decimal_power(age_us):
    from decimal import localcontext
    from fractions import Fraction as F

    from stream_jobs.rules.attribution import TIME_DECAY_HALF_LIFE, _decay

    age = timedelta(microseconds=age_us)
    with localcontext() as context:
        context.prec = 40
        exponent = D(age_us) / D(TIME_DECAY_HALF_LIFE // timedelta(microseconds=1))
        assert _decay(age) == F(D(2) ** -exponent)


def test_integer_revenue_split_handles_refunds_like_the_fraction_rule():
    from fractions import Fraction as F

    from stream_jobs.rules.attribution import _split_cents

    for amount in (D("-10.00"), D("-0.01"), D("0.05"), D("1234.57")):
        for weights in ([1, 1, 1], [400, 100, 400, 100], [0, 3, 7], [5]):
            total = sum(weights)
            assert _split_cents(amount, weights, total) == split_revenue(amount, [F(w, total) for w in weights])
