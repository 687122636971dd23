"""Attribution: how much of one conversion each touch of the lead's journey earned, under every model.

Read this module top to bottom: the rules, then the window, the models, the rounding, and ``attribute()``.

**The journey and the window.** A journey is the lead's touches (from all its visitors). For one conversion
only the touches with ``converted_at - lookback <= occurred_at <= converted_at`` count (``lookback`` defaults to
:data:`DEFAULT_LOOKBACK`, 90 days, per conversion). They are ordered by time, then by ``touch_id`` (so equal
times have a stable order); a touch id listed twice counts once. ``touch_index`` is the position in this
windowed journey, from 0.

**No touch**: the conversion gets one credit per model, to the pseudo touch ``(none)`` (channel, source and
medium ``(none)``), share 1 and all the revenue. **One touch** takes 100% in every model (the rules below give
that by themselves).

**Models** (``schemas.outputs.AttributionModel``):

- ``first_touch``: 100% to the first touch in the window.
- ``last_touch``: 100% to the last *non-direct* touch in the window; to the last direct touch only when every
  touch is direct. A direct visit in the middle of a journey does not steal credit from a known channel.
- ``linear``: equal shares.
- ``time_decay``: weight ``2 ** (-age / 7 days)`` with ``age = converted_at - occurred_at`` (a touch a week
  older earns half), normalised to sum to 1.
- ``u_shaped``: 40% first touch, 40% lead-creation touch, 20% shared by the rest.
- ``w_shaped``: 30% first, 30% lead creation, 30% opportunity creation, 10% shared by the rest.
- ``full_path``: 22.5% each to first, lead creation, opportunity creation and customer; 10% shared by the rest.

**Positions** of the positional models: *first* is the first touch in the window; *lead creation* is the last
touch at or before ``Milestones.lead_at``; *opportunity creation* the last at or before ``opportunity_at``;
*customer* the last at or before ``customer_at``. A milestone later than the conversion (not reached when this
conversion happened) and a milestone before every touch in the window have no position. Positions that fall
on the same touch add up (first touch = lead touch gets 40% + 40% in U-shaped). "The rest" are the touches
holding no position; their share is split equally among them. When there is no such touch, or a position is
missing, the weights present are normalised to sum to 1 (W-shaped without an opportunity: 30/70 first, 30/70
lead, 10/70 shared by the rest).

**Rounding.** Shares are computed exactly (fractions; time decay from 40-digit decimal powers of 2), then
rounded half-even to 9 decimals. The residue that rounding leaves (``1 - sum``, a few units of 1e-9) is added
to the largest share (ties: the latest touch), so the shares of a conversion and model sum to exactly 1.
Revenue is split in cents by the largest-remainder method on the exact shares: every touch gets the whole
cents of its share, and the cents left over go one each to the largest remainders (ties: the larger share, then
the latest touch), so the revenue credits sum exactly to the deal value. A conversion without revenue gives
``0.00`` everywhere.

**Speed, same results.** ``attribute()`` runs for every emitted conversion, so it does this arithmetic on integers:
each model's weights are scaled to integers over one common denominator (the time-decay powers of 2 are exact
40-digit decimals, so a power of ten makes them integers), and rounding and the revenue split compare integer
numerators over that denominator, which is exactly what the fraction arithmetic of :func:`exact_shares`,
:func:`round_shares` and :func:`split_revenue` does (``tests/test_attribution.py`` checks both agree). The decimal
powers of 2 are cached by age, since a re-emitted conversion sees the same ages again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache
from typing import TypeVar

from pydantic import BaseModel

from schemas.outputs import AttributionModel, Conversion, Credit, CreditedTouch, Touch, TouchCredit

DEFAULT_LOOKBACK = timedelta(days=90)
TIME_DECAY_HALF_LIFE = timedelta(days=7)
SHARE_PLACES = 9
NO_TOUCH = "(none)"

_M = TypeVar("_M", bound=BaseModel)

_FIRST, _LEAD, _OPPORTUNITY, _CUSTOMER = "first", "lead", "opportunity", "customer"

# Positional models: the weight of each position, and of "the rest".
POSITION_WEIGHTS: dict[AttributionModel, tuple[dict[str, Fraction], Fraction]] = {
    AttributionModel.U_SHAPED: ({_FIRST: Fraction("0.4"), _LEAD: Fraction("0.4")}, Fraction("0.2")),
    AttributionModel.W_SHAPED: (
        {_FIRST: Fraction("0.3"), _LEAD: Fraction("0.3"), _OPPORTUNITY: Fraction("0.3")},
        Fraction("0.1"),
    ),
    AttributionModel.FULL_PATH: (
        {
            _FIRST: Fraction("0.225"),
            _LEAD: Fraction("0.225"),
            _OPPORTUNITY: Fraction("0.225"),
            _CUSTOMER: Fraction("0.225"),
        },
        Fraction("0.1"),
    ),
}


# The same weights in thousandths, for the integer path of attribute().
_POSITION_UNITS: dict[AttributionModel, tuple[dict[str, int], int]] = {
    model: ({name: int(weight * 1000) for name, weight in weights.items()}, int(rest * 1000))
    for model, (weights, rest) in POSITION_WEIGHTS.items()
}
assert all(
    Fraction(units, 1000) == weight
    for model, (weights, _rest) in POSITION_WEIGHTS.items()
    for units, weight in zip(_POSITION_UNITS[model][0].values(), weights.values(), strict=False)
)


@dataclass(frozen=True)
class Milestones:
    """When the lead reached the milestones the positional models look for (each optional)."""

    lead_at: datetime | None = None
    opportunity_at: datetime | None = None
    customer_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("lead_at", "opportunity_at", "customer_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:  # naive times are UTC, like everywhere in the contract
                object.__setattr__(self, name, value.replace(tzinfo=timezone.utc))


# --- the window -------------------------------------------------------------------------------------------------


def window(journey: Sequence[Touch], converted_at: datetime, lookback: timedelta = DEFAULT_LOOKBACK) -> list[Touch]:
    """The touches that count for a conversion: inside the lookback window, by time then touch id, no duplicates."""
    start = converted_at - lookback
    unique = {touch.touch_id: touch for touch in reversed(journey)}  # reversed: the first copy of an id wins
    inside = [touch for touch in unique.values() if start <= touch.occurred_at <= converted_at]
    return sorted(inside, key=lambda touch: (touch.occurred_at, touch.touch_id))


# --- the models -------------------------------------------------------------------------------------------------


def exact_shares(
    model: AttributionModel, touches: Sequence[Touch], converted_at: datetime, milestones: Milestones
) -> list[Fraction]:
    """The unrounded shares of ``model`` for a windowed journey (see :func:`window`); they sum to exactly 1.

    An empty journey gives an empty list (``attribute`` credits ``(none)`` then).
    """
    _check_windowed(touches, converted_at)
    weights = _integer_weights(model, touches, converted_at, milestones)
    total = sum(weights)
    return [Fraction(weight, total) for weight in weights]


def _integer_weights(
    model: AttributionModel, touches: Sequence[Touch], converted_at: datetime, milestones: Milestones
) -> list[int]:
    """The model's weights scaled to integers (any common factor: only their ratios matter); [] for no touch."""
    count = len(touches)
    if count == 0:
        return []
    if model == AttributionModel.FIRST_TOUCH:
        return [1] + [0] * (count - 1)
    if model == AttributionModel.LAST_TOUCH:
        chosen = _last_non_direct(touches)
        return [int(index == chosen) for index in range(count)]
    if model == AttributionModel.LINEAR:
        return [1] * count
    if model == AttributionModel.TIME_DECAY:
        powers = [_decay_digits((converted_at - touch.occurred_at) // _MICROSECOND) for touch in touches]
        lowest = min(exponent for _, exponent in powers)
        return [mantissa * 10 ** (exponent - lowest) for mantissa, exponent in powers]
    if model in POSITION_WEIGHTS:
        return _positional(model, touches, converted_at, milestones)
    raise ValueError(f"attribution model {model!r} is not computed here (data-driven models need all journeys)")


def _check_windowed(touches: Sequence[Touch], converted_at: datetime) -> None:
    for before, after in zip(touches, touches[1:], strict=False):
        if (before.occurred_at, before.touch_id) > (after.occurred_at, after.touch_id):
            raise ValueError("touches must be ordered by time, then touch_id: pass window(journey, converted_at)")
    if touches and touches[-1].occurred_at > converted_at:
        raise ValueError(f"touch {touches[-1].touch_id} is after the conversion: pass window(journey, converted_at)")


def _last_non_direct(touches: Sequence[Touch]) -> int:
    for index in range(len(touches) - 1, -1, -1):
        if not touches[index].is_direct:
            return index
    return len(touches) - 1


_MICROSECOND = timedelta(microseconds=1)
_HALF_LIFE_US = TIME_DECAY_HALF_LIFE // _MICROSECOND


def _decay(age: timedelta) -> Fraction:
    """``2 ** (-age / half-life)``, exact for whole half-lives, else correct to 40 significant digits."""
    mantissa, exponent = _decay_digits(age // _MICROSECOND)
    return Fraction(mantissa) * Fraction(10) ** exponent


@lru_cache(maxsize=65_536)
def _decay_digits(age_us: int) -> tuple[int, int]:
    """``2 ** (-age / half-life)`` as the 40-digit decimal ``mantissa * 10 ** exponent`` (cached by age)."""
    with localcontext() as context:
        context.prec = 40
        power = Decimal(2) ** -(Decimal(age_us) / Decimal(_HALF_LIFE_US))
    sign, digits, exponent = power.as_tuple()
    assert isinstance(exponent, int)  # a finite power of two, never NaN or infinite
    mantissa = int("".join(map(str, digits)))
    return (-mantissa if sign else mantissa), exponent


def _position(touches: Sequence[Touch], at: datetime | None, converted_at: datetime) -> int | None:
    """The last touch at or before ``at``; None when ``at`` is unknown, after the conversion or before every touch."""
    if at is None or at > converted_at:
        return None
    found = None
    for index, touch in enumerate(touches):
        if touch.occurred_at <= at:
            found = index
    return found


def _positional(
    model: AttributionModel, touches: Sequence[Touch], converted_at: datetime, milestones: Milestones
) -> list[int]:
    """Integer weights: thousandths of a position's weight times the size of the rest, so the rest's equal
    split stays whole."""
    position_units, rest_units = _POSITION_UNITS[model]
    positions = {
        _FIRST: 0,
        _LEAD: _position(touches, milestones.lead_at, converted_at),
        _OPPORTUNITY: _position(touches, milestones.opportunity_at, converted_at),
        _CUSTOMER: _position(touches, milestones.customer_at, converted_at),
    }
    holders: dict[int, int] = {}
    for name, units in position_units.items():
        index = positions[name]
        if index is not None:  # a missing position drops its weight; the total is normalised afterwards
            holders[index] = holders.get(index, 0) + units
    rest_size = len(touches) - len(holders)
    scale = max(rest_size, 1)
    return [holders[index] * scale if index in holders else rest_units for index in range(len(touches))]


# --- rounding ---------------------------------------------------------------------------------------------------


def round_shares(exact: Sequence[Fraction]) -> list[Decimal]:
    """Round half-even to 9 decimals; the residue goes to the largest share (ties: the latest) so the sum is 1."""
    if not exact:
        return []
    scale = 10**SHARE_PLACES
    units = [round(share * scale) for share in exact]  # round() of a Fraction is half-even
    largest = max(range(len(exact)), key=lambda index: (exact[index], index))
    units[largest] += scale - sum(units)
    return [Decimal(unit).scaleb(-SHARE_PLACES) for unit in units]


def split_revenue(amount: Decimal | None, exact: Sequence[Fraction]) -> list[Decimal]:
    """Split ``amount`` in cents by the largest-remainder method on ``exact`` shares; the parts sum to ``amount``."""
    if amount is None:
        return [Decimal("0.00")] * len(exact)
    cents = int(amount.quantize(Decimal("0.01")).scaleb(2))
    sign, cents = (-1 if cents < 0 else 1), abs(cents)
    parts = [cents * share for share in exact]
    whole = [math.floor(part) for part in parts]
    left_over = cents - sum(whole)
    by_remainder = sorted(range(len(exact)), key=lambda i: (parts[i] - whole[i], exact[i], i), reverse=True)
    for index in by_remainder[:left_over]:
        whole[index] += 1
    return [Decimal(sign * value).scaleb(-2) for value in whole]


def _round_units(weights: Sequence[int], total: int) -> list[Decimal]:
    """:func:`round_shares` of ``weights[i] / total`` on integers (the same half-even rounding and residue rule)."""
    scale = 10**SHARE_PLACES
    units = []
    for weight in weights:
        whole, remainder = divmod(weight * scale, total)
        if 2 * remainder > total or (2 * remainder == total and whole & 1):
            whole += 1
        units.append(whole)
    largest = max(range(len(weights)), key=lambda index: (weights[index], index))
    units[largest] += scale - sum(units)
    return [Decimal(unit).scaleb(-SHARE_PLACES) for unit in units]


def _split_cents(amount: Decimal | None, weights: Sequence[int], total: int) -> list[Decimal]:
    """:func:`split_revenue` of ``amount`` on ``weights[i] / total`` (remainders compared as integer numerators)."""
    if amount is None:
        return [_ZERO_MONEY] * len(weights)
    cents = int(amount.quantize(_CENT).scaleb(2))
    sign, cents = (-1 if cents < 0 else 1), abs(cents)
    whole, remainders = [], []
    for weight in weights:
        part, remainder = divmod(cents * weight, total)
        whole.append(part)
        remainders.append(remainder)
    left_over = cents - sum(whole)
    by_remainder = sorted(range(len(weights)), key=lambda i: (remainders[i], weights[i], i), reverse=True)
    for index in by_remainder[:left_over]:
        whole[index] += 1
    return [Decimal(sign * value).scaleb(-2) for value in whole]


_CENT = Decimal("0.01")
_ZERO_MONEY = Decimal("0.00")

_set_attribute = object.__setattr__


def _trusted(record_type: type[_M], /, **values: object) -> _M:
    """A model from values that are valid already, every field given: what ``model_construct`` does, without its
    per-field loop over defaults and aliases."""
    record = record_type.__new__(record_type)
    _set_attribute(record, "__dict__", values)
    _set_attribute(record, "__pydantic_fields_set__", set(values))
    _set_attribute(record, "__pydantic_extra__", None)
    _set_attribute(record, "__pydantic_private__", None)
    return record


def shares(
    model: AttributionModel, touches: Sequence[Touch], converted_at: datetime, milestones: Milestones
) -> list[Decimal]:
    """The credit shares of ``model`` for a windowed journey, rounded to 9 decimals and summing to exactly 1."""
    return round_shares(exact_shares(model, touches, converted_at, milestones))


# --- credits ----------------------------------------------------------------------------------------------------


def attributed(
    journey: Sequence[Touch],
    conversion: Conversion,
    milestones: Milestones,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> Conversion:
    """``conversion`` with its credits under every model: ``touches`` (the window, or the pseudo touch ``(none)``)
    and one credit per model and touch, zero shares too, in model order then touch order.

    Zero-share credits are kept so that a newer ``version`` of the conversion (a late touch changed the journey)
    overwrites every row of the older one downstream. With no touch in the window, each model gives its whole
    credit to ``(none)``.
    """
    converted_at = conversion.occurred_at
    touches = window(journey, converted_at, lookback)
    # Every value below is already valid (touches and conversion are validated models; shares and revenue come
    # out of the rules above), so the records are built without re-validating each field: attribution runs for
    # every emitted conversion and validation was a third of its time.
    build = _trusted
    credits: list[TouchCredit] = []
    credited: tuple[CreditedTouch, ...]
    if not touches:
        credited = (
            build(
                CreditedTouch,
                touch_id=NO_TOUCH,
                occurred_at=None,
                channel=NO_TOUCH,
                source=NO_TOUCH,
                medium=NO_TOUCH,
                campaign="",
            ),
        )
        revenue = split_revenue(conversion.revenue, [Fraction(1)])[0]
        share = round_shares([Fraction(1)])[0]
        for model in AttributionModel:
            credits.append(build(TouchCredit, model=model, touch_index=0, credit=share, revenue=revenue))
    else:
        _check_windowed(touches, converted_at)
        credited = tuple(
            build(
                CreditedTouch,
                touch_id=touch.touch_id,
                occurred_at=touch.occurred_at,
                channel=touch.channel,
                source=touch.source,
                medium=touch.medium,
                campaign=touch.campaign,
            )
            for touch in touches
        )
        for model in AttributionModel:
            weights = _integer_weights(model, touches, converted_at, milestones)
            total = sum(weights)
            for index, (share, revenue) in enumerate(
                zip(_round_units(weights, total), _split_cents(conversion.revenue, weights, total), strict=True)
            ):
                credits.append(build(TouchCredit, model=model, touch_index=index, credit=share, revenue=revenue))
    return build(Conversion, **{**conversion.__dict__, "touches": credited, "credits": tuple(credits)})


def attribute(
    journey: Sequence[Touch],
    conversion: Conversion,
    milestones: Milestones,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> list[Credit]:
    """The credits of one conversion under every model as :class:`Credit` records: one per model and windowed
    touch (zero shares too), or one per model to ``(none)`` (see :func:`attributed`)."""
    return attributed(journey, conversion, milestones, lookback).credit_records()
